"""Work split between reviewers: each console claims a small batch of photos with a lease.

A lease is two attributes of the catalogue item, ``lease_holder`` (reviewer and console session)
and ``lease_expires`` (epoch seconds), set by one conditional ``UpdateItem`` that succeeds only
while the photo is still ``NEEDS_REVIEW`` in the version the queue showed and nobody else holds an
unexpired lease on it. So N consoles reading the same oldest photos still end up with disjoint
batches: of two claims on one photo exactly one condition holds (DynamoDB evaluates a condition
and applies the write atomically per item: "Condition expressions", DynamoDB Developer Guide,
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.ConditionExpressions.html).
A photo whose lease expired (its reviewer walked away, the console stopped) is claimable again;
nothing has to clean it up. The claim's ``ReturnValues=ALL_NEW`` hands back the item as written,
so the console holds a consistent copy and a decision needs no further read.

Why on the item and not a second table: the lease must fail together with the photo's version and
status (a new upload, a delete, a decision), which one conditional write on one item gives for
free; a lease table would need a transaction across two tables for every claim and decision.
"""

from __future__ import annotations

from typing import Any, Final

from botocore.exceptions import ClientError

from contracts.catalogue import (
    OBJECT_ID,
    REVIEW_QUEUE,
    REVIEW_QUEUE_INDEX,
    REVIEW_QUEUE_VALUE,
    CatalogueItem,
    Status,
    object_id,
)
from contracts.catalogue_table import deserialize, is_condition_failure

# A batch is what the page keeps ahead of the photo on screen (it preloads four): small, so a
# team of reviewers never waits behind photos someone else holds.
BATCH: Final[int] = 6
# Long enough for a person to decide a batch with pauses; short enough that photos a reviewer
# left come back within minutes.
LEASE_SECONDS: Final[int] = 300
# Query page size when looking for free photos; leased photos ahead of them are skipped, so a page
# reads at most about (team size × BATCH) held photos plus the ones claimed.
_PAGE: Final[int] = 25
_MAX_PAGES: Final[int] = 8


def claim(
    dynamodb: Any,
    table: str,
    holder: str,
    *,
    want: int,
    now: int,
    seconds: int = LEASE_SECONDS,
    skip: frozenset[str] = frozenset(),
    reviewer: str | None = None,
) -> list[CatalogueItem]:
    """Claim up to ``want`` free photos, oldest upload first; the items as claimed.

    ``skip``: ``object_id``s not to claim (the console's own, already held or decided);
    ``reviewer``: never a photo waiting for a second opinion on this reviewer's first one."""
    claimed: list[CatalogueItem] = []
    after: dict[str, Any] | None = None
    for _ in range(_MAX_PAGES):
        request: dict[str, Any] = {
            "TableName": table,
            "IndexName": REVIEW_QUEUE_INDEX,
            "KeyConditionExpression": "#queue = :queue",
            # Held photos are read but not returned (a filter runs after the read, so a page
            # costs the same; it keeps the answer small).
            "FilterExpression": "attribute_not_exists(#expires) OR #expires < :now",
            "ExpressionAttributeNames": {"#queue": REVIEW_QUEUE, "#expires": "lease_expires"},
            "ExpressionAttributeValues": {
                ":queue": {"S": REVIEW_QUEUE_VALUE},
                ":now": {"N": str(now)},
            },
            "ScanIndexForward": True,
            "Limit": _PAGE,
        }
        if after:
            request["ExclusiveStartKey"] = after
        response = dynamodb.query(**request)
        for raw in response["Items"]:
            if len(claimed) >= want:
                return claimed
            seen = CatalogueItem.from_attributes(deserialize(raw))
            if seen.object_id in skip or (reviewer and seen.first_opinion_by == reviewer):
                continue
            item = claim_one(dynamodb, table, seen, holder, now=now, until=now + seconds)
            if item is not None:
                claimed.append(item)
        after = response.get("LastEvaluatedKey")
        if not after or len(claimed) >= want:
            break
    return claimed


def claim_one(
    dynamodb: Any, table: str, seen: CatalogueItem, holder: str, *, now: int, until: int
) -> CatalogueItem | None:
    """Claim the photo ``seen`` (as the queue showed it) until ``until``; the item as claimed, or
    ``None`` when someone else holds it or it changed."""
    names = {
        "#status": "status",
        "#event_order": "event_order",
        "#holder": "lease_holder",
        "#expires": "lease_expires",
    }
    values: dict[str, Any] = {
        ":needs_review": {"S": Status.NEEDS_REVIEW.value},
        ":event_order": {"S": seen.event_order},
        ":holder": {"S": holder},
        ":until": {"N": str(until)},
        ":now": {"N": str(now)},
    }
    condition = (
        "#status = :needs_review AND #event_order = :event_order"
        " AND (attribute_not_exists(#expires) OR #expires < :now OR #holder = :holder)"
    )
    try:
        response = dynamodb.update_item(
            TableName=table,
            Key={OBJECT_ID: {"S": object_id(seen.bucket, seen.key)}},
            UpdateExpression="SET #holder = :holder, #expires = :until",
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
    except ClientError as error:
        if is_condition_failure(error):
            return None  # another console claimed it first, or it changed: not ours
        raise
    return CatalogueItem.from_attributes(deserialize(response["Attributes"]))


def release(dynamodb: Any, table: str, item: CatalogueItem, holder: str) -> bool:
    """Give a held photo back to the queue now (a console that stops); ``False`` when it is no
    longer held by ``holder``."""
    try:
        dynamodb.update_item(
            TableName=table,
            Key={OBJECT_ID: {"S": item.object_id}},
            UpdateExpression="REMOVE #holder, #expires",
            ConditionExpression="#holder = :holder",
            ExpressionAttributeNames={"#holder": "lease_holder", "#expires": "lease_expires"},
            ExpressionAttributeValues={":holder": {"S": holder}},
        )
    except ClientError as error:
        if is_condition_failure(error):
            return False
        raise
    return True

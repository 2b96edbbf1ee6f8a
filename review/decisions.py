"""A person's decision on a ``NEEDS_REVIEW`` photo, as one conditional write of its catalogue item.

The console shows an item as it was when read; the reviewer decides on *that* object version.
:func:`decide` writes only if the item still has the ETag and event order that were shown and is
still ``NEEDS_REVIEW``; :func:`undo` puts it back in the queue only if it still holds this
reviewer's decision (same ``reviewed_by`` and ``reviewed_at``) on the same object version. When
the condition fails (a new upload, a delete, another reviewer) the call returns ``None`` / ``False``
and changes nothing: the page says the photo changed and moves on.

Only the decision's own attributes change; the model's view (``model_version``, ``confidence``,
``top3``) stays as the reviewer saw it, so the model-vs-reviewer agreement can be read back later.
The sparse index attributes are derived by :meth:`CatalogueItem.to_attributes`, as everywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final

from contracts.catalogue import (
    DECISION_ATTRIBUTES,
    REVIEW_QUEUE,
    REVIEW_QUEUE_INDEX,
    REVIEW_QUEUE_VALUE,
    CatalogueItem,
    CategorySource,
    ReviewOutcome,
    Status,
    utc_now,
)
from contracts.catalogue_table import (
    conditional_update,
    deserialize,
    read_item,
    update_expression,
)

# The two outcomes that are not a category, as the console names them.
NOT_A_PRODUCT: Final[str] = ReviewOutcome.NOT_A_PRODUCT.value
UNUSABLE: Final[str] = ReviewOutcome.UNUSABLE.value


@dataclass(frozen=True)
class Shown:
    """The object version a reviewer saw: the item's identity plus its ETag and event order."""

    bucket: str
    key: str
    etag: str | None
    event_order: str

    @classmethod
    def of(cls, item: CatalogueItem) -> Shown:
        return cls(bucket=item.bucket, key=item.key, etag=item.etag, event_order=item.event_order)


def model_choice(item: CatalogueItem) -> str | None:
    """The model's first choice (what Enter confirms)."""
    return item.top3[0].label if item.top3 else item.category


def decided_item(
    item: CatalogueItem, choice: str, *, reviewer: str, reviewed_at: str
) -> CatalogueItem:
    """``item`` after the reviewer chose ``choice``: a category, or one of the two rejections.

    The model's first choice is *confirmed*; any other category is *corrected*. Both make the
    item ``CATALOGUED`` (visible to buyers); the rejections make it ``REJECTED`` with the
    outcome as its reason.
    """
    if choice in (NOT_A_PRODUCT, UNUSABLE):
        outcome = ReviewOutcome(choice)
        status, category, reason = Status.REJECTED, None, choice
    else:
        outcome = (
            ReviewOutcome.CONFIRMED if choice == model_choice(item) else ReviewOutcome.CORRECTED
        )
        status, category, reason = Status.CATALOGUED, choice, None
    return dataclasses.replace(
        item,
        status=status,
        category=category,
        reason=reason,
        category_source=CategorySource.HUMAN,
        reviewed_by=reviewer,
        reviewed_at=reviewed_at,
        review_outcome=outcome,
    )


def decide(
    dynamodb: Any,
    table: str,
    shown: Shown,
    choice: str,
    *,
    reviewer: str,
    labels: frozenset[str] | set[str],
    reviewed_at: str | None = None,
) -> CatalogueItem | None:
    """Record the reviewer's ``choice`` for the version ``shown``; the written item, or ``None``
    when the photo changed since it was shown (or was decided already).

    ``choice`` is one of ``labels`` (the model's categories) or of the item's own top 3, or one of
    :data:`NOT_A_PRODUCT` / :data:`UNUSABLE`; anything else is a ``ValueError``."""
    if not reviewer:
        raise ValueError("a decision names its reviewer")
    current = read_item(dynamodb, table, shown.bucket, shown.key)
    known = set(labels) | {score.label for score in current.top3} if current else set(labels)
    if choice not in known and choice not in (NOT_A_PRODUCT, UNUSABLE):
        raise ValueError(f"unknown choice {choice!r}")
    if current is None or current.status is not Status.NEEDS_REVIEW or Shown.of(current) != shown:
        return None
    after = decided_item(current, choice, reviewer=reviewer, reviewed_at=reviewed_at or utc_now())
    condition, names, values = _same_version(shown)
    names["#status"] = "status"
    values[":needs_review"] = {"S": Status.NEEDS_REVIEW.value}
    condition += " AND #status = :needs_review"
    return after if _write(dynamodb, table, after, condition, names, values) else None


def undo(
    dynamodb: Any, table: str, shown: Shown, *, reviewer: str, reviewed_at: str
) -> CatalogueItem | None:
    """Put the photo back in the queue, if it still holds this reviewer's decision (the one made
    at ``reviewed_at``) on the version ``shown``. The restored item, or ``None``."""
    current = read_item(dynamodb, table, shown.bucket, shown.key)
    if (
        current is None
        or current.category_source is not CategorySource.HUMAN
        or current.reviewed_by != reviewer
        or current.reviewed_at != reviewed_at
        or Shown.of(current) != shown
    ):
        return None
    restored = dataclasses.replace(
        current,
        status=Status.NEEDS_REVIEW,
        category=model_choice(current),
        reason=None,
        category_source=CategorySource.MODEL,
        reviewed_by=None,
        reviewed_at=None,
        review_outcome=None,
    )
    condition, names, values = _same_version(shown)
    names.update({"#source": "category_source", "#by": "reviewed_by", "#at": "reviewed_at"})
    values.update(
        {
            ":human": {"S": CategorySource.HUMAN.value},
            ":by": {"S": reviewer},
            ":at": {"S": reviewed_at},
        }
    )
    condition += " AND #source = :human AND #by = :by AND #at = :at"
    return restored if _write(dynamodb, table, restored, condition, names, values) else None


def review_queue(
    dynamodb: Any, table: str, *, limit: int = 20, after: dict[str, Any] | None = None
) -> tuple[list[CatalogueItem], dict[str, Any] | None]:
    """Up to ``limit`` items of the review queue, oldest upload first, and the key to continue
    from (``None`` at the end). Reads the sparse ``review_queue`` index (eventually consistent:
    a just-decided item can still show up once; its decision's condition then refuses it)."""
    request: dict[str, Any] = {
        "TableName": table,
        "IndexName": REVIEW_QUEUE_INDEX,
        "KeyConditionExpression": "#queue = :queue",
        "ExpressionAttributeNames": {"#queue": REVIEW_QUEUE},
        "ExpressionAttributeValues": {":queue": {"S": REVIEW_QUEUE_VALUE}},
        "ScanIndexForward": True,
        "Limit": limit,
    }
    if after:
        request["ExclusiveStartKey"] = after
    response = dynamodb.query(**request)
    items = [CatalogueItem.from_attributes(deserialize(raw)) for raw in response["Items"]]
    return items, response.get("LastEvaluatedKey")


def queue_length(dynamodb: Any, table: str) -> int:
    """How many photos wait for a person (a COUNT query over the sparse index)."""
    paginator = dynamodb.get_paginator("query")
    total = 0
    for page in paginator.paginate(
        TableName=table,
        IndexName=REVIEW_QUEUE_INDEX,
        KeyConditionExpression="#queue = :queue",
        ExpressionAttributeNames={"#queue": REVIEW_QUEUE},
        ExpressionAttributeValues={":queue": {"S": REVIEW_QUEUE_VALUE}},
        Select="COUNT",
    ):
        total += page["Count"]
    return total


def _same_version(shown: Shown) -> tuple[str, dict[str, str], dict[str, Any]]:
    names = {"#event_order": "event_order", "#etag": "etag"}
    values: dict[str, Any] = {":event_order": {"S": shown.event_order}}
    if shown.etag is None:
        return "#event_order = :event_order AND attribute_not_exists(#etag)", names, values
    values[":etag"] = {"S": shown.etag}
    return "#event_order = :event_order AND #etag = :etag", names, values


def _write(
    dynamodb: Any,
    table: str,
    item: CatalogueItem,
    condition: str,
    names: dict[str, str],
    values: dict[str, Any],
) -> bool:
    # Only the decision's own attributes (see contracts.catalogue.Role.DECISION) change; the
    # model's view of the item stays as the reviewer saw it.
    expression, update_names, update_values = update_expression(
        item, attributes=DECISION_ATTRIBUTES
    )
    names.update(update_names)
    values.update(update_values)
    return conditional_update(dynamodb, table, item, expression, condition, names, values)

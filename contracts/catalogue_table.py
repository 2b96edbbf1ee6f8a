"""Conditional catalogue writes: an older or repeated S3 event never overwrites a newer result.

Every item stores ``event_order`` (see :func:`contracts.catalogue.event_order`). The rules, per
``(bucket, key)``:

* **Create** (``ObjectCreated:*``) writes when there is no item, or the stored order is older, or
  the order is the same (the very same event, delivered again) but the stored item was made by a
  different model version or from different bytes. So a duplicate delivery is a no-op, an older
  event arriving late is a no-op, and re-cataloguing the same event with another model version
  (a rollout or a rollback: the deployed model is the truth) updates the item.
* **Backfill** (``ObjectCreated:Backfill``, from ``operations.backfill``) has no S3 sequencer. It
  writes when there is no item, or the stored item describes the same bytes (same ETag) from
  another model version; it keeps the stored ``event_order`` and ``sequencer``, so later real
  events still compare against the real sequencer.
* **Delete** (``ObjectRemoved:*``) leaves a *tombstone* unless the stored order is newer (an
  upload that happened after the delete): the item becomes ``status = DELETED`` with the delete's
  ``event_order``, every listing attribute removed (so neither buyers' ``by_category`` index nor
  the ``review_queue`` index holds it) and ``expires_at`` = now + :data:`TOMBSTONE_TTL_SECONDS`
  for DynamoDB's TTL. The worker writes it only after ``HeadObject`` has shown that the object is
  really gone. Because a create needs an order *newer* than what is stored, a create that read
  the object before the delete but writes after the tombstone is stale: the photo cannot come
  back. (Without the tombstone it could: the create's ``IfMatch`` read happened while the object
  still existed; tests/functional/test_handler_worker.py reproduces that race.)
* A tombstone is never replaced by the same event again (a rollout re-processing an old create of
  the same order stays stale); a genuinely newer upload of the key replaces it like any item, and
  its write removes ``expires_at``.
* Readers: buyers and reviewers query the sparse indexes, which never contain tombstones;
  :func:`scan_items` leaves them out unless asked; :func:`read_item` returns them (status
  ``DELETED``) because the worker's own checks and the tests need to see them.

A write whose condition fails is reported as *stale* (``False``), never as an error.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from typing import Any, Final

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from contracts.catalogue import (
    ATTRIBUTES,
    KEPT_BY_BACKFILL,
    OBJECT_ID,
    OPTIONAL_ATTRIBUTES,
    CatalogueItem,
    CategorySource,
    Status,
    is_catalogue_item,
    object_id,
    utc_now,
)

# How long a tombstone stays. It must outlive every event about the object that can still be in
# flight: an SQS message lives at most 14 days (the DLQ's MessageRetentionPeriod, the SQS maximum;
# a message moved to the DLQ keeps its original enqueue time), so 14 days plus 2 days of margin
# for S3's own delivery delays. DynamoDB's TTL deletes expired items lazily (within days), which
# only keeps tombstones longer. A redrive after that (a message moved back from the DLQ on day 13
# and failing again) is still safe in the common case: its create finds the object gone (404).
TOMBSTONE_TTL_SECONDS: Final[int] = 16 * 24 * 60 * 60

_HUMAN: Final[str] = CategorySource.HUMAN.value
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def is_condition_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def write_item(dynamodb: Any, table: str, item: CatalogueItem, *, backfill: bool = False) -> bool:
    """Write ``item`` if the event that produced it is not stale. Returns whether it was written."""
    if item.status is Status.DELETED:
        raise ValueError("a tombstone is written with write_tombstone")
    expression, names, values = update_expression(item, kept=KEPT_BY_BACKFILL if backfill else ())
    names.update(
        {
            "#event_order": "event_order",
            "#model_version": "model_version",
            "#category_source": "category_source",
            "#status": "status",
            "#id": OBJECT_ID,
        }
    )
    values[":human"] = {"S": _HUMAN}
    if backfill:
        if item.etag is None:
            raise ValueError("a backfill write needs the object's ETag")
        names["#etag"] = "etag"
        condition = (
            "attribute_not_exists(#id) OR (#etag = :etag AND #model_version <> :model_version"
            " AND NOT #category_source = :human)"
        )
    else:
        same_event_changed = "#model_version <> :model_version"
        if item.etag is not None:
            names["#etag"] = "etag"
            same_event_changed += " OR #etag <> :etag"
        # A person's decision stands for the object version it was made on: the same event
        # (a duplicate delivery, or a rollout re-processing it) never replaces it; only a newer
        # event (a new upload of the key) starts over. Nor does the same event replace a
        # tombstone of the same order (possible only with event-time orders, which can tie).
        values[":deleted"] = {"S": Status.DELETED.value}
        condition = (
            "attribute_not_exists(#id) OR #event_order < :event_order"
            f" OR (#event_order = :event_order AND ({same_event_changed})"
            " AND NOT #category_source = :human AND NOT #status = :deleted)"
        )
    return conditional_update(dynamodb, table, item, expression, condition, names, values)


def tombstone(
    bucket: str, key: str, *, order: str, sequencer: str | None, model_version: str
) -> CatalogueItem:
    """The item a delete leaves behind (see the module docstring)."""
    return CatalogueItem(
        bucket=bucket,
        key=key,
        status=Status.DELETED,
        model_version=model_version,
        event_order=order,
        processed_at=utc_now(),
        sequencer=sequencer,
        expires_at=int(time.time()) + TOMBSTONE_TTL_SECONDS,
    )


def write_tombstone(dynamodb: Any, table: str, item: CatalogueItem) -> bool:
    """Replace the item by the tombstone ``item`` unless a newer event wrote it. Returns ``False``
    when a newer item stays (``True`` when the tombstone was written, over an item or none)."""
    if item.status is not Status.DELETED:
        raise ValueError("write_tombstone writes DELETED items only")
    expression, names, values = update_expression(item)
    names.update({"#event_order": "event_order", "#id": OBJECT_ID})
    # "<=": with sequencers two different events never tie; with event times (moto) a tie is
    # settled for the delete, because the worker saw that the object is gone. A person's decision
    # does not protect the item: the photo itself is gone.
    condition = "attribute_not_exists(#id) OR #event_order <= :event_order"
    return conditional_update(dynamodb, table, item, expression, condition, names, values)


def update_expression(
    item: CatalogueItem,
    *,
    attributes: Iterable[str] | None = None,
    kept: Collection[str] = (),
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The one ``SET … REMOVE …`` update expression that writes ``item``, with its names and values.

    Of ``attributes`` (every attribute but the key by default), each one the item has is SET and
    each optional one it lacks is REMOVEd, so no value of an earlier write outlives it. Those in
    ``kept`` are set only where the stored item has none (``if_not_exists``) and never removed.
    Placeholders are ``#name`` and ``:name``, so a condition may name the same attributes.
    """
    written = item.to_attributes()
    scope = [name for name in ATTRIBUTES if name != OBJECT_ID] if attributes is None else attributes
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    assignments: list[str] = []
    removals: list[str] = []
    for name in scope:
        if name not in ATTRIBUTES or name == OBJECT_ID:
            raise ValueError(f"{name!r} is not an attribute a write can change")
        if name in written:
            names[f"#{name}"] = name
            values[f":{name}"] = _serializer.serialize(written[name])
            if name in kept:
                assignments.append(f"#{name} = if_not_exists(#{name}, :{name})")
            else:
                assignments.append(f"#{name} = :{name}")
        elif name in OPTIONAL_ATTRIBUTES and name not in kept:
            names[f"#{name}"] = name
            removals.append(f"#{name}")
    expression = "SET " + ", ".join(assignments)
    if removals:
        expression += " REMOVE " + ", ".join(removals)
    return expression, names, values


def conditional_update(
    dynamodb: Any,
    table: str,
    item: CatalogueItem,
    expression: str,
    condition: str,
    names: dict[str, str],
    values: dict[str, Any],
) -> bool:
    """Apply ``expression`` to ``item``'s object if ``condition`` holds. Returns whether it was
    written; a failed condition is an answer (stale, or changed since shown), not an error."""
    try:
        dynamodb.update_item(
            TableName=table,
            Key=_key(item.bucket, item.key),
            UpdateExpression=expression,
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
    except ClientError as error:
        if is_condition_failure(error):
            return False
        raise
    return True


def read_item(dynamodb: Any, table: str, bucket: str, key: str) -> CatalogueItem | None:
    response = dynamodb.get_item(TableName=table, Key=_key(bucket, key), ConsistentRead=True)
    if "Item" not in response:
        return None
    return CatalogueItem.from_attributes(deserialize(response["Item"]))


def scan_items(dynamodb: Any, table: str, *, include_deleted: bool = False) -> list[CatalogueItem]:
    """Every catalogue item of the table (for the local stack and tests; the app queries the GSIs),
    without tombstones unless ``include_deleted``, without the review console's records and the
    worker's decode-attempt records."""
    items: list[CatalogueItem] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items.extend(
            CatalogueItem.from_attributes(deserialize(raw))
            for raw in page["Items"]
            if is_catalogue_item(raw)
        )
    if not include_deleted:
        items = [item for item in items if item.status is not Status.DELETED]
    return sorted(items, key=lambda item: (item.bucket, item.key))


def deserialize(raw: dict[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in raw.items()}


def _key(bucket: str, key: str) -> dict[str, Any]:
    return {OBJECT_ID: {"S": object_id(bucket, key)}}

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
* **Delete** (``ObjectRemoved:*``) removes the item unless the stored order is newer (an upload
  that happened after the delete); the worker calls it only after ``HeadObject`` has shown that
  the object is really gone. No tombstone is kept, so a deleted object has no item at all. A
  create event older than the delete that arrives after it cannot resurrect the item: the worker
  fetches the object with ``IfMatch`` on the event's ETag first and skips it when the object is
  gone (404) or has been replaced (412) — see :mod:`handler.worker`.

A write whose condition fails is reported as *stale* (``False``), never as an error.
"""

from __future__ import annotations

from typing import Any, Final

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from contracts.catalogue import (
    LISTING_CATEGORY,
    OBJECT_ID,
    REVIEW_QUEUE,
    CatalogueItem,
    CategorySource,
    object_id,
)

_OPTIONAL: Final[tuple[str, ...]] = (
    "category",
    "confidence",
    "top3",
    "reason",
    "etag",
    "size",
    "width",
    "height",
    "sequencer",
    "reviewed_by",
    "reviewed_at",
    "review_outcome",
    "expires_at",
    LISTING_CATEGORY,
    REVIEW_QUEUE,
)
_IDENTITY: Final[tuple[str, ...]] = (OBJECT_ID,)
# Kept from the stored item by a backfill, which has no S3 sequencer of its own and is no upload:
# the object keeps the upload time buyers' listings sort on.
_KEPT_BY_BACKFILL: Final[tuple[str, ...]] = ("event_order", "sequencer", "uploaded_at")
_HUMAN: Final[str] = CategorySource.HUMAN.value
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def is_condition_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def write_item(dynamodb: Any, table: str, item: CatalogueItem, *, backfill: bool = False) -> bool:
    """Write ``item`` if the event that produced it is not stale. Returns whether it was written."""
    attributes = item.to_attributes()
    names: dict[str, str] = {"#id": OBJECT_ID}
    values: dict[str, Any] = {}
    assignments: list[str] = []
    for name, value in attributes.items():
        if name in _IDENTITY:
            continue
        names[f"#{name}"] = name
        values[f":{name}"] = _serializer.serialize(value)
        if backfill and name in _KEPT_BY_BACKFILL:
            assignments.append(f"#{name} = if_not_exists(#{name}, :{name})")
        else:
            assignments.append(f"#{name} = :{name}")
    removed = [
        name
        for name in _OPTIONAL
        if name not in attributes and not (backfill and name in _KEPT_BY_BACKFILL)
    ]
    for name in removed:
        names[f"#{name}"] = name
    expression = "SET " + ", ".join(assignments)
    if removed:
        expression += " REMOVE " + ", ".join(f"#{name}" for name in removed)
    names.update(
        {
            "#event_order": "event_order",
            "#model_version": "model_version",
            "#category_source": "category_source",
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
        # event (a new upload of the key) starts over.
        condition = (
            "attribute_not_exists(#id) OR #event_order < :event_order"
            f" OR (#event_order = :event_order AND ({same_event_changed})"
            " AND NOT #category_source = :human)"
        )
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


def remove_item(dynamodb: Any, table: str, bucket: str, key: str, order: str) -> bool:
    """Delete the item unless a newer event wrote it. Returns ``False`` when a newer item stays
    (``True`` when the item was deleted or there was none)."""
    try:
        dynamodb.delete_item(
            TableName=table,
            Key=_key(bucket, key),
            # "<=": with sequencers two different events never tie; with event times (moto) a
            # tie is settled for the delete, because the worker saw that the object is gone.
            ConditionExpression="attribute_not_exists(#id) OR #event_order <= :event_order",
            ExpressionAttributeNames={"#id": OBJECT_ID, "#event_order": "event_order"},
            ExpressionAttributeValues={":event_order": {"S": order}},
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


def scan_items(dynamodb: Any, table: str) -> list[CatalogueItem]:
    """Every item of the table (for the local stack and tests; the app queries the GSI)."""
    items: list[CatalogueItem] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items.extend(CatalogueItem.from_attributes(deserialize(raw)) for raw in page["Items"])
    return sorted(items, key=lambda item: (item.bucket, item.key))


def deserialize(raw: dict[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in raw.items()}


def _key(bucket: str, key: str) -> dict[str, Any]:
    return {OBJECT_ID: {"S": object_id(bucket, key)}}

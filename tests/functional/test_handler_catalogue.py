"""Conditional catalogue writes on moto's DynamoDB, table built from template.yaml."""

from __future__ import annotations

import time
from typing import Any

import pytest

from contracts.catalogue import CatalogueItem, LabelScore, Status, event_order, utc_now
from contracts.catalogue_table import (
    TOMBSTONE_TTL_SECONDS,
    read_item,
    scan_items,
    tombstone,
    write_item,
    write_tombstone,
)

pytestmark = pytest.mark.functional
BUCKET = "momee-uploads-local"
KEY = "uploads/a b+c/été.jpg"


def item(order_from: str, *, model: str = "v1", etag: str = "e1", **changes: Any) -> CatalogueItem:
    fields: dict[str, Any] = {
        "bucket": BUCKET,
        "key": KEY,
        "status": Status.CATALOGUED,
        "category": "stroller",
        "confidence": 0.91,
        "top3": (LabelScore("stroller", 0.91), LabelScore("walkers", 0.05)),
        "model_version": model,
        "event_order": event_order(order_from, None),
        "processed_at": utc_now(),
        "etag": etag,
        "size": 1234,
        "width": 4000,
        "height": 3000,
        "sequencer": order_from,
    }
    fields.update(changes)
    return CatalogueItem(**fields)


def test_duplicate_and_older_events_never_overwrite(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    assert write_item(dynamodb, name, item("0B"))
    assert not write_item(dynamodb, name, item("0B"))  # the same event again
    assert not write_item(dynamodb, name, item("0A", etag="old", category="bathtub"))  # older
    stored = read_item(dynamodb, name, BUCKET, KEY)
    assert stored is not None
    assert (stored.sequencer, stored.category, stored.etag) == ("0B", "stroller", "e1")
    assert stored.top3[0] == LabelScore("stroller", 0.91)


def test_newer_event_overwrites_and_sequencers_compare_right_padded(
    table: tuple[Any, str],
) -> None:
    dynamodb, name = table
    earlier, later = "0055AED6DCD90281E5A1", "0055AED6DCE5B0C2A7"  # the later one is shorter
    assert write_item(dynamodb, name, item(earlier))
    assert write_item(dynamodb, name, item(later, etag="e2", category="bathtub"))
    assert not write_item(dynamodb, name, item(earlier, etag="e3", category="walkers"))
    stored = read_item(dynamodb, name, BUCKET, KEY)
    assert stored is not None
    assert (stored.category, stored.etag) == ("bathtub", "e2")


def test_same_event_with_another_model_version_updates(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    assert write_item(dynamodb, name, item("0B", model="v1"))
    assert write_item(dynamodb, name, item("0B", model="v2", category="bouncer"))
    assert not write_item(dynamodb, name, item("0B", model="v2", category="bouncer"))
    stored = read_item(dynamodb, name, BUCKET, KEY)
    assert stored is not None
    assert (stored.model_version, stored.category) == ("v2", "bouncer")


def test_rejected_replacement_drops_category_and_scores(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    assert write_item(dynamodb, name, item("0B"))
    rejected = item(
        "0C",
        status=Status.REJECTED,
        category=None,
        confidence=None,
        top3=(),
        reason="corrupt",
        width=None,
        height=None,
    )
    assert write_item(dynamodb, name, rejected)
    raw = dynamodb.get_item(TableName=name, Key={"object_id": {"S": f"{BUCKET}/{KEY}"}})
    assert raw["Item"]["status"] == {"S": "REJECTED"}
    assert raw["Item"]["reason"] == {"S": "corrupt"}
    assert not {"category", "confidence", "top3", "width", "height"} & set(raw["Item"])
    # ... and the item has left the category index.
    listed = dynamodb.scan(TableName=name, IndexName="by_category")["Items"]
    assert listed == []


def _tombstone(sequencer: str) -> Any:
    return tombstone(
        BUCKET, KEY, order=event_order(sequencer, None), sequencer=sequencer, model_version="v1"
    )


def test_deletes_follow_the_same_order_and_leave_a_tombstone(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    assert write_item(dynamodb, name, item("0B"))
    assert not write_tombstone(dynamodb, name, _tombstone("0A"))  # an older delete
    stored = read_item(dynamodb, name, BUCKET, KEY)
    assert stored is not None
    assert stored.status is Status.CATALOGUED
    before = int(time.time())
    assert write_tombstone(dynamodb, name, _tombstone("0C"))
    stored = read_item(dynamodb, name, BUCKET, KEY)
    assert stored is not None
    assert (stored.status, stored.event_order) == (Status.DELETED, event_order("0C", None))
    assert stored.expires_at is not None
    # The TTL outlives every message about the object: SQS keeps one at most 14 days.
    assert TOMBSTONE_TTL_SECONDS > 14 * 24 * 3600
    assert (
        before + TOMBSTONE_TTL_SECONDS <= stored.expires_at <= time.time() + TOMBSTONE_TTL_SECONDS
    )
    raw = dynamodb.get_item(TableName=name, Key={"object_id": {"S": f"{BUCKET}/{KEY}"}})["Item"]
    assert not {"category", "confidence", "top3", "etag", "listing_category", "review_queue"} & set(
        raw
    )
    assert dynamodb.scan(TableName=name, IndexName="by_category")["Items"] == []
    assert scan_items(dynamodb, name) == []
    assert [i.status for i in scan_items(dynamodb, name, include_deleted=True)] == [Status.DELETED]
    assert write_tombstone(dynamodb, name, _tombstone("0C"))  # again: harmless
    # An older create (read before the delete, written after it) is stale: no resurrection ...
    assert not write_item(dynamodb, name, item("0B", model="v2"))
    assert not write_item(dynamodb, name, item("0C", model="v2"))  # not even of the same order
    # ... while a newer upload replaces the tombstone and drops its TTL.
    assert write_item(dynamodb, name, item("0D"))
    stored = read_item(dynamodb, name, BUCKET, KEY)
    assert stored is not None
    assert (stored.status, stored.expires_at) == (Status.CATALOGUED, None)


def test_backfill_never_revives_a_tombstone(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    assert write_item(dynamodb, name, item("0B", model="v1"))
    assert write_tombstone(dynamodb, name, _tombstone("0C"))
    backfill_order = event_order(None, "2026-11-24T00:00:00Z")
    refreshed = item("0B", model="v2", sequencer=None, event_order=backfill_order)
    assert not write_item(dynamodb, name, refreshed, backfill=True)


def test_backfill_updates_same_bytes_keeps_event_order(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    assert write_item(dynamodb, name, item("0B", model="v1"))
    backfill_order = event_order(None, "2026-11-24T00:00:00Z")
    refreshed = item(
        "0B", model="v2", category="carrier", sequencer=None, event_order=backfill_order
    )
    assert write_item(dynamodb, name, refreshed, backfill=True)
    stored = read_item(dynamodb, name, BUCKET, KEY)
    assert stored is not None
    assert (stored.model_version, stored.category) == ("v2", "carrier")
    assert (stored.sequencer, stored.event_order) == ("0B", event_order("0B", None))
    # Other bytes than the stored item's, or the same model again: no write.
    assert not write_item(dynamodb, name, item("0B", model="v3", etag="other"), backfill=True)
    assert not write_item(dynamodb, name, refreshed, backfill=True)
    # A real event after the backfill still compares against the real sequencer.
    assert not write_item(dynamodb, name, item("0A", model="v2", etag="old"))


def test_backfill_of_an_uncatalogued_object_writes(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    order = event_order(None, "2026-11-24T00:00:00Z")
    assert write_item(dynamodb, name, item("0B", sequencer=None, event_order=order), backfill=True)
    assert write_item(dynamodb, name, item("0C"))  # any real event is newer than a backfill

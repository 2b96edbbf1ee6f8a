"""Conditional catalogue writes on moto's DynamoDB, table built from template.yaml."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from contracts.catalogue import CatalogueItem, LabelScore, Status, event_order, utc_now
from handler.catalogue import read_item, remove_item, write_item
from local_stack.resources import create_local_resources

pytestmark = pytest.mark.functional
BUCKET = "momee-uploads-local"
KEY = "uploads/a b+c/été.jpg"


@pytest.fixture
def table() -> Iterator[tuple[Any, str]]:
    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        resources = create_local_resources(
            s3_client=boto3.client("s3"), sqs_client=boto3.client("sqs"), dynamodb_client=dynamodb
        )
        yield dynamodb, resources.table_name


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


def test_newer_event_overwrites_and_shorter_sequencer_is_not_newer(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    assert write_item(dynamodb, name, item("0100"))
    assert not write_item(dynamodb, name, item("FF", category="bathtub"))  # FF < 0100 padded
    assert write_item(dynamodb, name, item("0101", etag="e2", category="bathtub"))
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


def test_deletes_follow_the_same_order(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    assert write_item(dynamodb, name, item("0B"))
    assert not remove_item(dynamodb, name, BUCKET, KEY, event_order("0A", None))  # older delete
    assert read_item(dynamodb, name, BUCKET, KEY) is not None
    assert remove_item(dynamodb, name, BUCKET, KEY, event_order("0C", None))
    assert read_item(dynamodb, name, BUCKET, KEY) is None
    assert remove_item(dynamodb, name, BUCKET, KEY, event_order("0C", None))  # again: harmless


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

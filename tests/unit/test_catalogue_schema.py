"""Contract 5: the catalogue item's schema, its sparse index attributes and the template agree."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.catalogue import (
    BY_CATEGORY_INDEX,
    EXPIRES_AT,
    LISTING_CATEGORY,
    OBJECT_ID,
    REVIEW_QUEUE,
    REVIEW_QUEUE_INDEX,
    SCHEMA_VERSION,
    UPLOADED_AT,
    CatalogueItem,
    CategorySource,
    LabelScore,
    ReviewOutcome,
    Status,
)
from local_stack.resources import TABLE_ID, read_template, resource_properties


def _item(**changes: Any) -> CatalogueItem:
    fields: dict[str, Any] = {
        "bucket": "uploads-bucket",
        "key": "uploads/a b/stroller.jpg",
        "status": Status.CATALOGUED,
        "model_version": "20260101T000000Z-0123abcd",
        "event_order": "1:" + "0" * 31 + "1",
        "processed_at": "2026-01-02T00:00:00.000000Z",
        "uploaded_at": "2026-01-01T00:00:00.000000Z",
        "category": "stroller",
        "confidence": 0.97,
        "top3": (LabelScore("stroller", 0.97),),
        "etag": "abc",
    }
    fields.update(changes)
    return CatalogueItem(**fields)


def test_template_table_uses_the_contract_names() -> None:
    properties = resource_properties(read_template(), TABLE_ID)
    assert properties["KeySchema"] == [{"AttributeName": OBJECT_ID, "KeyType": "HASH"}]
    indexes = {
        index["IndexName"]: index["KeySchema"] for index in properties["GlobalSecondaryIndexes"]
    }
    assert indexes == {
        BY_CATEGORY_INDEX: [
            {"AttributeName": LISTING_CATEGORY, "KeyType": "HASH"},
            {"AttributeName": UPLOADED_AT, "KeyType": "RANGE"},
        ],
        REVIEW_QUEUE_INDEX: [
            {"AttributeName": REVIEW_QUEUE, "KeyType": "HASH"},
            {"AttributeName": UPLOADED_AT, "KeyType": "RANGE"},
        ],
    }
    assert properties["TimeToLiveSpecification"] == {"AttributeName": EXPIRES_AT, "Enabled": True}


@pytest.mark.parametrize(
    ("status", "listed", "queued"),
    [
        (Status.CATALOGUED, True, False),
        (Status.NEEDS_REVIEW, False, True),
    ],
)
def test_index_attributes_follow_the_status(status: Status, listed: bool, queued: bool) -> None:
    attributes = _item(status=status).to_attributes()
    assert attributes[OBJECT_ID] == "uploads-bucket/uploads/a b/stroller.jpg"
    assert attributes["schema_version"] == SCHEMA_VERSION
    assert (LISTING_CATEGORY in attributes) is listed
    assert (REVIEW_QUEUE in attributes) is queued


def test_rejected_and_deleted_items_are_in_no_index() -> None:
    rejected = _item(status=Status.REJECTED, category=None, confidence=None, reason="corrupt")
    tombstone = _item(status=Status.DELETED, category=None, confidence=None, top3=(), expires_at=9)
    for item in (rejected, tombstone):
        attributes = item.to_attributes()
        assert LISTING_CATEGORY not in attributes
        assert REVIEW_QUEUE not in attributes


def test_a_human_decision_is_listed_and_round_trips() -> None:
    decided = _item(
        category="bouncer",
        category_source=CategorySource.HUMAN,
        reviewed_by="alice",
        reviewed_at="2026-01-03T00:00:00.000000Z",
        review_outcome=ReviewOutcome.CORRECTED,
    )
    attributes = decided.to_attributes()
    assert attributes[LISTING_CATEGORY] == "bouncer"
    assert CatalogueItem.from_attributes(attributes) == decided


def test_a_human_decision_must_say_who_and_when() -> None:
    with pytest.raises(ValueError, match="who, when and what"):
        _item(category_source=CategorySource.HUMAN)


def test_a_version_1_item_is_read_as_the_models_with_processing_time_as_upload_time() -> None:
    version_1 = {
        "bucket": "b",
        "key": "uploads/x.jpg",
        "status": "CATALOGUED",
        "model_version": "v",
        "event_order": "1:" + "0" * 32,
        "processed_at": "2025-01-01T00:00:00.000000Z",
        "category": "walkers",
        "confidence": 0.9,
    }
    item = CatalogueItem.from_attributes(version_1)
    assert item.schema_version == 1
    assert item.category_source is CategorySource.MODEL
    assert item.uploaded_at == "2025-01-01T00:00:00.000000Z"

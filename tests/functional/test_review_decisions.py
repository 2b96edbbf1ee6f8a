"""The review console's conditional writes on moto's DynamoDB (table built from template.yaml)."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.catalogue import (
    CatalogueItem,
    CategorySource,
    LabelScore,
    ReviewOutcome,
    Status,
    event_order,
    utc_now,
)
from contracts.catalogue_table import read_item, write_item
from review.decisions import (
    NOT_A_PRODUCT,
    UNUSABLE,
    Shown,
    decide,
    queue_length,
    review_queue,
    undo,
)

pytestmark = pytest.mark.functional
BUCKET = "momee-uploads-local"
LABELS = frozenset({"stroller", "walkers", "bouncer", "bathtub"})


def unsure(key: str = "uploads/a.jpg", *, sequencer: str = "0B", etag: str = "e1", **changes: Any):
    fields: dict[str, Any] = {
        "bucket": BUCKET,
        "key": key,
        "status": Status.NEEDS_REVIEW,
        "category": "stroller",
        "confidence": 0.41,
        "top3": (
            LabelScore("stroller", 0.41),
            LabelScore("walkers", 0.33),
            LabelScore("bouncer", 0.1),
        ),
        "model_version": "v1",
        "event_order": event_order(sequencer, None),
        "processed_at": utc_now(),
        "uploaded_at": "2026-11-20T10:00:00.000000Z",
        "etag": etag,
        "sequencer": sequencer,
    }
    fields.update(changes)
    return CatalogueItem(**fields)


def raw(dynamodb: Any, table: str, key: str) -> dict[str, Any]:
    return dynamodb.get_item(TableName=table, Key={"object_id": {"S": f"{BUCKET}/{key}"}})["Item"]


def test_confirm_catalogues_for_buyers_and_keeps_the_models_view(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    shown = unsure()
    assert write_item(dynamodb, name, shown)
    decided = decide(dynamodb, name, Shown.of(shown), "stroller", reviewer="ana", labels=LABELS)
    assert decided is not None
    stored = read_item(dynamodb, name, BUCKET, shown.key)
    assert stored == decided
    assert (stored.status, stored.category, stored.review_outcome) == (
        Status.CATALOGUED,
        "stroller",
        ReviewOutcome.CONFIRMED,
    )
    assert (stored.category_source, stored.reviewed_by) == (CategorySource.HUMAN, "ana")
    assert stored.reviewed_at is not None
    # The model's view is what the reviewer saw, kept for the agreement report.
    assert (stored.top3, stored.confidence, stored.model_version) == (shown.top3, 0.41, "v1")
    item = raw(dynamodb, name, shown.key)
    assert item["listing_category"] == {"S": "stroller"}
    assert "review_queue" not in item
    assert dynamodb.scan(TableName=name, IndexName="by_category")["Count"] == 1
    assert queue_length(dynamodb, name) == 0


def test_correct_and_reject_outcomes(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    keys = {"uploads/c.jpg": "walkers", "uploads/n.jpg": NOT_A_PRODUCT, "uploads/u.jpg": UNUSABLE}
    for key, choice in keys.items():
        shown = unsure(key)
        assert write_item(dynamodb, name, shown)
        assert decide(dynamodb, name, Shown.of(shown), choice, reviewer="ana", labels=LABELS)
    corrected = read_item(dynamodb, name, BUCKET, "uploads/c.jpg")
    assert corrected is not None
    assert (corrected.status, corrected.category, corrected.review_outcome) == (
        Status.CATALOGUED,
        "walkers",
        ReviewOutcome.CORRECTED,
    )
    for key, outcome in (("uploads/n.jpg", NOT_A_PRODUCT), ("uploads/u.jpg", UNUSABLE)):
        rejected = read_item(dynamodb, name, BUCKET, key)
        assert rejected is not None
        assert (rejected.status, rejected.reason, rejected.category) == (
            Status.REJECTED,
            outcome,
            None,
        )
        assert rejected.review_outcome is ReviewOutcome(outcome)
        assert not {"listing_category", "review_queue", "category"} & set(raw(dynamodb, name, key))


def test_unknown_choice_and_missing_reviewer_are_refused(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    shown = unsure()
    assert write_item(dynamodb, name, shown)
    with pytest.raises(ValueError, match="unknown choice"):
        decide(dynamodb, name, Shown.of(shown), "<script>", reviewer="ana", labels=LABELS)
    with pytest.raises(ValueError, match="reviewer"):
        decide(dynamodb, name, Shown.of(shown), "stroller", reviewer="", labels=LABELS)
    assert read_item(dynamodb, name, BUCKET, shown.key) == shown


def test_decision_on_a_photo_that_changed_is_refused(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    shown = unsure()
    assert write_item(dynamodb, name, shown)
    # A new upload of the key lands after the page showed the old version.
    newer = unsure(sequencer="0C", etag="e2", category="bathtub")
    assert write_item(dynamodb, name, newer)
    assert decide(dynamodb, name, Shown.of(shown), "walkers", reviewer="ana", labels=LABELS) is None
    assert read_item(dynamodb, name, BUCKET, shown.key) == newer
    # The same ETag with another event order is another version too (re-upload of same bytes).
    same_bytes = Shown(BUCKET, shown.key, "e2", shown.event_order)
    assert decide(dynamodb, name, same_bytes, "walkers", reviewer="ana", labels=LABELS) is None
    # Deleted meanwhile: nothing to decide.
    assert (
        decide(
            dynamodb,
            name,
            Shown.of(unsure("uploads/gone.jpg")),
            "walkers",
            reviewer="ana",
            labels=LABELS,
        )
        is None
    )


def test_second_decision_is_refused_and_the_first_stands(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    shown = unsure()
    assert write_item(dynamodb, name, shown)
    first = decide(dynamodb, name, Shown.of(shown), "walkers", reviewer="ana", labels=LABELS)
    assert first is not None
    assert decide(dynamodb, name, Shown.of(shown), "bouncer", reviewer="bo", labels=LABELS) is None
    assert read_item(dynamodb, name, BUCKET, shown.key) == first


def test_undo_restores_the_queue_only_for_the_same_decision(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    shown = unsure()
    assert write_item(dynamodb, name, shown)
    decided = decide(dynamodb, name, Shown.of(shown), NOT_A_PRODUCT, reviewer="ana", labels=LABELS)
    assert decided is not None
    at = decided.reviewed_at
    assert at is not None
    assert undo(dynamodb, name, Shown.of(shown), reviewer="bo", reviewed_at=at) is None
    assert undo(dynamodb, name, Shown.of(shown), reviewer="ana", reviewed_at="2000") is None
    restored = undo(dynamodb, name, Shown.of(shown), reviewer="ana", reviewed_at=at)
    assert restored is not None
    assert read_item(dynamodb, name, BUCKET, shown.key) == restored
    assert (restored.status, restored.category, restored.category_source) == (
        Status.NEEDS_REVIEW,
        "stroller",
        CategorySource.MODEL,
    )
    assert (restored.reviewed_by, restored.review_outcome, restored.reason) == (None, None, None)
    assert raw(dynamodb, name, shown.key)["review_queue"] == {"S": "NEEDS_REVIEW"}
    assert queue_length(dynamodb, name) == 1
    # Undo twice: nothing left to undo.
    assert undo(dynamodb, name, Shown.of(shown), reviewer="ana", reviewed_at=at) is None


def test_undo_after_a_new_upload_is_refused(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    shown = unsure()
    assert write_item(dynamodb, name, shown)
    decided = decide(dynamodb, name, Shown.of(shown), "walkers", reviewer="ana", labels=LABELS)
    assert decided is not None
    newer = unsure(sequencer="0C", etag="e2")
    assert write_item(dynamodb, name, newer)  # a new upload starts over
    assert (
        undo(dynamodb, name, Shown.of(shown), reviewer="ana", reviewed_at=decided.reviewed_at or "")
        is None
    )
    assert read_item(dynamodb, name, BUCKET, shown.key) == newer


def test_queue_is_oldest_upload_first_and_counted(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    times = [
        "2026-11-21T00:00:00.000000Z",
        "2026-11-19T00:00:00.000000Z",
        "2026-11-20T00:00:00.000000Z",
    ]
    for index, uploaded in enumerate(times):
        assert write_item(dynamodb, name, unsure(f"uploads/{index}.jpg", uploaded_at=uploaded))
    confident = unsure("uploads/sure.jpg", status=Status.CATALOGUED, confidence=0.99)
    assert write_item(dynamodb, name, confident)
    items, more = review_queue(dynamodb, name, limit=2)
    assert [item.key for item in items] == ["uploads/1.jpg", "uploads/2.jpg"]
    assert more is not None
    rest, _end = review_queue(dynamodb, name, limit=2, after=more)
    assert [item.key for item in rest] == ["uploads/0.jpg"]
    assert queue_length(dynamodb, name) == 3

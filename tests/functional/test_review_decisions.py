"""The review console's conditional writes on moto's DynamoDB (table built from template.yaml)."""

from __future__ import annotations

import dataclasses
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
    ChoiceRefused,
    decide,
    queue_length,
    review_queue,
    undo,
)
from review.leases import claim_one

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


def hold(dynamodb: Any, table: str, item: CatalogueItem, holder: str = "ana#1") -> CatalogueItem:
    """``item`` as a console claims it (under a lease held by ``holder``)."""
    held = claim_one(dynamodb, table, item, holder, now=1_000, until=2_000_000_000)
    assert held is not None
    return held


def raw(dynamodb: Any, table: str, key: str) -> dict[str, Any]:
    return dynamodb.get_item(TableName=table, Key={"object_id": {"S": f"{BUCKET}/{key}"}})["Item"]


def test_confirm_catalogues_for_buyers_and_keeps_the_models_view(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    shown = unsure()
    assert write_item(dynamodb, name, shown)
    held = hold(dynamodb, name, shown)
    decided = decide(
        dynamodb, name, held, "stroller", reviewer="ana", holder="ana#1", labels=LABELS
    )
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
    assert (stored.lease_holder, stored.lease_expires) == (None, None)  # the lease goes with it
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
        held = hold(dynamodb, name, shown)
        assert decide(dynamodb, name, held, choice, reviewer="ana", holder="ana#1", labels=LABELS)
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


def test_labels_outside_the_model_set_are_refused_even_from_the_top3(
    table: tuple[Any, str],
) -> None:
    """GIVEN a photo whose top 3 names "playpen", a label the model's set does not have
    WHEN a reviewer chooses it, or a made-up or path-like label
    THEN the decision is refused and the item is untouched."""
    dynamodb, name = table
    shown = unsure(top3=(LabelScore("playpen", 0.5), LabelScore("stroller", 0.3)))
    assert write_item(dynamodb, name, shown)
    held = hold(dynamodb, name, shown)
    for choice in ("playpen", "<script>", "../..", "stroller/../x"):
        with pytest.raises(ChoiceRefused, match="not one of the model's labels"):
            decide(dynamodb, name, held, choice, reviewer="ana", holder="ana#1", labels=LABELS)
    with pytest.raises(ValueError, match="reviewer"):
        decide(dynamodb, name, held, "stroller", reviewer="", holder="ana#1", labels=LABELS)
    assert read_item(dynamodb, name, BUCKET, shown.key) == held


def test_unfamiliar_photo_needs_a_deliberate_confirmation(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    shown = unsure(reason="unfamiliar", confidence=0.97)
    assert write_item(dynamodb, name, shown)
    held = hold(dynamodb, name, shown)
    with pytest.raises(ChoiceRefused, match="unlike anything"):
        decide(dynamodb, name, held, "stroller", reviewer="ana", holder="ana#1", labels=LABELS)
    # Another category, or a rejection, is one key as always; the first choice, deliberately.
    decided = decide(
        dynamodb, name, held, "stroller", reviewer="ana", holder="ana#1", labels=LABELS,
        deliberate=True,
    )  # fmt: skip
    assert decided is not None
    assert decided.review_outcome is ReviewOutcome.CONFIRMED


def test_decision_on_a_photo_that_changed_is_refused(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    shown = unsure()
    assert write_item(dynamodb, name, shown)
    held = hold(dynamodb, name, shown)
    # A new upload of the key lands after the page showed the old version.
    newer = unsure(sequencer="0C", etag="e2", category="bathtub")
    assert write_item(dynamodb, name, newer)
    assert (
        decide(dynamodb, name, held, "walkers", reviewer="ana", holder="ana#1", labels=LABELS)
        is None
    )
    assert read_item(dynamodb, name, BUCKET, shown.key) == newer


def test_a_photo_held_by_another_console_cannot_be_decided(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    shown = unsure()
    assert write_item(dynamodb, name, shown)
    held = hold(dynamodb, name, shown, holder="ana#1")
    assert claim_one(dynamodb, name, shown, "bo#2", now=1_500, until=9_999) is None
    # Bo's console never held it: whatever it sends is refused.
    assert (
        decide(dynamodb, name, held, "walkers", reviewer="bo", holder="bo#2", labels=LABELS) is None
    )
    first = decide(dynamodb, name, held, "walkers", reviewer="ana", holder="ana#1", labels=LABELS)
    assert first is not None
    assert (
        decide(dynamodb, name, held, "bouncer", reviewer="ana", holder="ana#1", labels=LABELS)
        is None
    )
    assert read_item(dynamodb, name, BUCKET, shown.key) == first


def test_undo_restores_exactly_the_item_as_it_was(table: tuple[Any, str]) -> None:
    """GIVEN an unfamiliar photo (reason "unfamiliar", category the model's) decided as not a
    product WHEN the reviewer undoes it THEN the item is exactly as claimed, reason included."""
    dynamodb, name = table
    shown = unsure(reason="unfamiliar", category="walkers", confidence=0.97)
    assert write_item(dynamodb, name, shown)
    held = hold(dynamodb, name, shown)
    decided = decide(
        dynamodb, name, held, NOT_A_PRODUCT, reviewer="ana", holder="ana#1", labels=LABELS
    )
    assert decided is not None
    other = decide(dynamodb, name, held, NOT_A_PRODUCT, reviewer="bo", holder="bo", labels=LABELS)
    assert other is None
    stranger = dataclasses.replace(decided, reviewed_by="bo")
    assert undo(dynamodb, name, held, stranger) is None
    restored = undo(dynamodb, name, held, decided)
    assert restored == held
    assert read_item(dynamodb, name, BUCKET, shown.key) == held
    assert (held.reason, held.category, held.category_source) == (
        "unfamiliar",
        "walkers",
        CategorySource.MODEL,
    )
    assert raw(dynamodb, name, shown.key)["review_queue"] == {"S": "NEEDS_REVIEW"}
    assert queue_length(dynamodb, name) == 1
    # Undo twice: nothing left to undo.
    assert undo(dynamodb, name, held, decided) is None


def test_undo_after_a_new_upload_is_refused(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    shown = unsure()
    assert write_item(dynamodb, name, shown)
    held = hold(dynamodb, name, shown)
    decided = decide(dynamodb, name, held, "walkers", reviewer="ana", holder="ana#1", labels=LABELS)
    assert decided is not None
    newer = unsure(sequencer="0C", etag="e2")
    assert write_item(dynamodb, name, newer)  # a new upload starts over
    assert undo(dynamodb, name, held, decided) is None
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
    assert queue_length(dynamodb, name, cap=2) == 2  # a capped count reads two entries

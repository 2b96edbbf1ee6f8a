"""Contract 5: every field of the catalogue item is written, read back and removed when absent.

The attribute lists (optional, decision, kept by a backfill) are derived from the dataclass. These
tests fill *every* field from its annotation, so a field added later is covered without editing
them: if a write leaves one of its values behind when a later item lacks it, they fail.
"""

from __future__ import annotations

import dataclasses
import enum
import types
from typing import Any, get_args, get_origin, get_type_hints

import pytest

from contracts.catalogue import (
    LISTING_CATEGORY,
    OBJECT_ID,
    REVIEW_QUEUE,
    SCHEMA_VERSION,
    CatalogueItem,
    CategorySource,
    LabelScore,
    ReviewOutcome,
    Status,
    event_order,
    object_id,
)
from contracts.catalogue_table import tombstone, write_item, write_tombstone
from review.decisions import decide, undo
from review.leases import claim_one

pytestmark = pytest.mark.functional
BUCKET = "momee-uploads-local"
KEY = "uploads/every-field.jpg"


def _sample(name: str, kind: Any) -> Any:
    """A value of the annotated type ``kind`` for the field ``name``."""
    if get_origin(kind) is tuple:
        return (LabelScore("stroller", 0.5), LabelScore("walkers", 0.25))
    members = [member for member in get_args(kind) if member is not types.NoneType]
    kind = members[0] if members else kind
    if kind is str:
        return f"{name}-value"
    if kind is int:
        return 7
    if kind is float:
        return 0.5
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return next(iter(kind))
    raise TypeError(f"teach _sample to fill the catalogue field {name!r} of type {kind!r}")


def full_item(status: Status, *, sequencer: str = "0A") -> CatalogueItem:
    """An item with a value in every field (a person's decision, so ``reviewed_*`` are set)."""
    hints = get_type_hints(CatalogueItem)
    values = {
        item_field.name: _sample(item_field.name, hints[item_field.name])
        for item_field in dataclasses.fields(CatalogueItem)
    }
    values.update(
        bucket=BUCKET,
        key=KEY,
        status=status,
        event_order=event_order(sequencer, None),
        sequencer=sequencer,
        category_source=CategorySource.HUMAN,
        review_outcome=ReviewOutcome.CORRECTED,
        schema_version=SCHEMA_VERSION,
    )
    return CatalogueItem(**values)


def minimal_item(sequencer: str) -> CatalogueItem:
    """An item with only what every item must have (a rejection needs its reason)."""
    return CatalogueItem(
        bucket=BUCKET,
        key=KEY,
        status=Status.REJECTED,
        reason="corrupt",
        model_version="v2",
        event_order=event_order(sequencer, None),
        processed_at="2026-01-02T00:00:00.000000Z",
    )


def stored_names(dynamodb: Any, table: str) -> set[str]:
    response = dynamodb.get_item(
        TableName=table, Key={OBJECT_ID: {"S": object_id(BUCKET, KEY)}}, ConsistentRead=True
    )
    return set(response["Item"])


def test_the_full_items_cover_every_field_and_index_attribute() -> None:
    # GIVEN items filled from the dataclass itself  THEN every field is stored (none is None or
    # empty) and each sparse index attribute appears on one of them.
    written = set()
    for status in (Status.CATALOGUED, Status.NEEDS_REVIEW):
        item = full_item(status)
        assert all(getattr(item, f.name) not in (None, ()) for f in dataclasses.fields(item))
        written |= set(item.to_attributes())
    field_names = {item_field.name for item_field in dataclasses.fields(CatalogueItem)}
    assert written == field_names | {OBJECT_ID, LISTING_CATEGORY, REVIEW_QUEUE}


@pytest.mark.parametrize("status", [Status.CATALOGUED, Status.NEEDS_REVIEW])
def test_every_field_round_trips(status: Status) -> None:
    item = full_item(status)
    assert CatalogueItem.from_attributes(item.to_attributes()) == item


@pytest.mark.parametrize("status", [Status.CATALOGUED, Status.NEEDS_REVIEW])
def test_a_newer_write_removes_every_attribute_the_item_lacks(
    table: tuple[Any, str], status: Status
) -> None:
    # GIVEN an item with every field written
    dynamodb, name = table
    assert write_item(dynamodb, name, full_item(status, sequencer="0A"))
    # WHEN a newer event writes an item with only the required fields
    newer = minimal_item("0B")
    assert write_item(dynamodb, name, newer)
    # THEN the table holds exactly the newer item's attributes: nothing stale is left behind
    assert stored_names(dynamodb, name) == set(newer.to_attributes())


def test_a_tombstone_removes_every_attribute_it_lacks(table: tuple[Any, str]) -> None:
    dynamodb, name = table
    assert write_item(dynamodb, name, full_item(Status.CATALOGUED, sequencer="0A"))
    gone = tombstone(BUCKET, KEY, order=event_order("0B", None), sequencer="0B", model_version="v")
    assert write_tombstone(dynamodb, name, gone)
    assert stored_names(dynamodb, name) == set(gone.to_attributes())


def test_a_decision_and_its_undo_leave_no_decision_attribute_behind(
    table: tuple[Any, str],
) -> None:
    # GIVEN a photo waiting for review, written by the worker
    dynamodb, name = table
    waiting = dataclasses.replace(
        full_item(Status.NEEDS_REVIEW),
        category_source=CategorySource.MODEL,
        reason=None,
        reviewed_by=None,
        reviewed_at=None,
        review_outcome=None,
        lease_holder=None,
        lease_expires=None,
        first_opinion_by=None,
        first_opinion_choice=None,
    )
    assert write_item(dynamodb, name, waiting)
    # ... and claimed by a reviewer's console (review.leases)
    held = claim_one(dynamodb, name, waiting, "alice#1", now=0, until=2_000_000_000)
    assert held is not None
    before = stored_names(dynamodb, name)
    # WHEN a reviewer rejects it and then takes the decision back
    decided = decide(
        dynamodb, name, held, "not_a_baby_product", reviewer="alice", holder="alice#1",
        labels=set(),
    )  # fmt: skip
    assert decided is not None
    assert stored_names(dynamodb, name) == set(decided.to_attributes())
    assert decided.reviewed_at is not None
    restored = undo(dynamodb, name, held, decided)
    # THEN the item has again exactly the attributes it had before the decision
    assert restored is not None
    assert stored_names(dynamodb, name) == before

"""Contract 5: the catalogue item, one per S3 object, as the worker writes it and the app reads it.

The item's identity is ``(bucket, key)``; the table's partition key is ``object_id`` =
``bucket/key`` (see ``template.yaml``), so writes spread over as many partitions as there are
objects. Two sparse global secondary indexes serve the two readers: ``by_category`` (buyers: what
is CATALOGUED, newest upload first) and ``review_queue`` (the review console: what is
NEEDS_REVIEW, oldest upload first). The index attributes are derived from the status in
:meth:`CatalogueItem.to_attributes` and nowhere else.

``event_order`` is not part of the product's view of an item; it is how the worker refuses to let
an older or repeated S3 event overwrite what a newer one wrote (see :func:`event_order`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

# S3 sequencers are hexadecimal strings of varying length. The Amazon S3 User Guide ("Event message
# structure", https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html)
# says: "The sequencers can be of different lengths. So, to compare these values, first right pad
# the shorter value with zeros, and then do a lexicographical comparison." (It said "left pad"
# until mid-2021; the two rules disagree, see tests/unit/test_handler_events.py.) Right-padding
# every sequencer to one fixed width gives strings that compare exactly that way. 32 digits is
# well above the 16-20 S3 emits today.
#
# Migration note: orders stored before this change were left-padded. Schema version 2 (keyed by
# object_id) is written into a new table, so a v2 table never holds them; a table copied from an
# older deployment must have every ``event_order`` recomputed from its stored ``sequencer`` with
# this function, or the first event of each key after the upgrade wins regardless of its age.
SEQUENCER_WIDTH: Final[int] = 32
# Event orders from a sequencer sort after every order from an event time (moto omits the
# sequencer; real S3 always sends one, so the two kinds never meet for one key in one account).
_TIME_ORDER_PREFIX: Final[str] = "0:"
_SEQUENCER_ORDER_PREFIX: Final[str] = "1:"
_SCORE_PLACES: Final[Decimal] = Decimal("0.000001")

# The table's layout, named once: template.yaml declares the same names (a test compares them).
# Version 2 keys items by ``object_id`` (``bucket/key``) and adds the sparse index attributes.
SCHEMA_VERSION: Final[int] = 2
OBJECT_ID: Final[str] = "object_id"
# Sparse GSI ``by_category``: ``listing_category`` (HASH) + ``uploaded_at`` (RANGE), present only
# on items buyers may see, so the app queries a category newest first and sees nothing else.
BY_CATEGORY_INDEX: Final[str] = "by_category"
LISTING_CATEGORY: Final[str] = "listing_category"
# Sparse GSI ``review_queue``: ``review_queue`` (HASH, one constant value) + ``uploaded_at``
# (RANGE), present only on NEEDS_REVIEW items: the review console reads it oldest first.
REVIEW_QUEUE_INDEX: Final[str] = "review_queue"
REVIEW_QUEUE: Final[str] = "review_queue"
REVIEW_QUEUE_VALUE: Final[str] = "NEEDS_REVIEW"
UPLOADED_AT: Final[str] = "uploaded_at"
# DynamoDB TTL attribute (epoch seconds) of tombstones.
EXPIRES_AT: Final[str] = "expires_at"
# Known photos the deployment's pre-traffic hook (deploy_hook/pre_traffic.py) asks a new worker
# version to classify, at s3://<uploads bucket>/deploy-probe/<label>/<name>. No bucket
# notification covers this prefix, and their items are never listed: neither index attribute is
# ever written for them, so buyers and reviewers cannot see a deployment's check.
PROBE_PREFIX: Final[str] = "deploy-probe/"


class Status(enum.StrEnum):
    CATALOGUED = "CATALOGUED"
    NEEDS_REVIEW = "NEEDS_REVIEW"
    REJECTED = "REJECTED"
    # A tombstone: the object was deleted. Never listed to buyers or reviewers.
    DELETED = "DELETED"


class CategorySource(enum.StrEnum):
    """Who chose the category. The worker never overwrites a person's decision on the same
    object version (see :mod:`handler.catalogue`)."""

    MODEL = "model"
    HUMAN = "human"


class ReviewOutcome(enum.StrEnum):
    """What a person decided in the review console."""

    CONFIRMED = "confirmed"  # the model's first choice was right -> CATALOGUED
    CORRECTED = "corrected"  # another category -> CATALOGUED in that category
    NOT_A_PRODUCT = "not_a_baby_product"  # -> REJECTED, reason not_a_baby_product
    UNUSABLE = "unusable_photo"  # -> REJECTED, reason unusable_photo


def event_order(sequencer: str | None, event_time: str | None) -> str:
    """One string that sorts S3 events for the same key in the order they happened.

    ``"1:" + sequencer`` (upper-case, right-padded with zeros to :data:`SEQUENCER_WIDTH`) when the
    event has a sequencer, else ``"0:" + event time`` in UTC with microseconds, fixed width.
    """
    if sequencer:
        digits = sequencer.strip().upper()
        if not digits or any(c not in "0123456789ABCDEF" for c in digits):
            raise ValueError(f"an S3 sequencer is hexadecimal, not {sequencer!r}")
        if len(digits) > SEQUENCER_WIDTH:
            raise ValueError(f"sequencer {sequencer!r} is longer than {SEQUENCER_WIDTH} digits")
        return _SEQUENCER_ORDER_PREFIX + digits.ljust(SEQUENCER_WIDTH, "0")
    if not event_time:
        raise ValueError("an S3 event needs a sequencer or an event time to be ordered")
    return _TIME_ORDER_PREFIX + normalise_time(event_time)


def normalise_time(value: str) -> str:
    """An ISO 8601 time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC (fixed width, so it sorts)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float


@dataclass(frozen=True)
class CatalogueItem:
    """One S3 object in the catalogue. ``confidence`` and ``top3`` scores are calibrated.

    ``category_source`` says who chose ``category``: the model, or a person in the review console
    (then ``reviewed_by``, ``reviewed_at`` and ``review_outcome`` say who, when and what). A
    ``DELETED`` item is a tombstone: it keeps the delete's event order so that an older create
    that arrives late cannot bring the photo back; ``expires_at`` lets DynamoDB's TTL remove it
    once no such event can still be in flight.
    """

    bucket: str
    key: str
    status: Status
    model_version: str
    event_order: str
    processed_at: str
    category: str | None = None
    confidence: float | None = None
    top3: tuple[LabelScore, ...] = field(default_factory=tuple)
    reason: str | None = None
    etag: str | None = None
    size: int | None = None
    width: int | None = None
    height: int | None = None
    sequencer: str | None = None
    uploaded_at: str | None = None
    category_source: CategorySource = CategorySource.MODEL
    reviewed_by: str | None = None
    reviewed_at: str | None = None
    review_outcome: ReviewOutcome | None = None
    expires_at: int | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status is Status.REJECTED:
            if not self.reason or self.category is not None:
                raise ValueError("a REJECTED item has a reason and no category")
        elif self.status is Status.DELETED:
            if self.category is not None:
                raise ValueError("a DELETED item (a tombstone) has no category")
        elif not self.category or (
            self.confidence is None and self.category_source is CategorySource.MODEL
        ):
            raise ValueError(f"a {self.status} item has a category and a confidence")
        if self.category_source is CategorySource.HUMAN and (
            not self.reviewed_by or not self.reviewed_at or self.review_outcome is None
        ):
            raise ValueError("a decision by a person records who, when and what")

    @property
    def object_id(self) -> str:
        return object_id(self.bucket, self.key)

    @property
    def is_probe(self) -> bool:
        """A deployment check's known photo (:data:`PROBE_PREFIX`), never a seller's."""
        return self.key.startswith(PROBE_PREFIX)

    @property
    def visible_to_buyers(self) -> bool:
        """Buyers see photos the model was sure of and photos a person placed in a category."""
        return self.status is Status.CATALOGUED and self.category is not None and not self.is_probe

    @property
    def waits_for_review(self) -> bool:
        return self.status is Status.NEEDS_REVIEW and not self.is_probe

    def to_attributes(self) -> dict[str, Any]:
        """The item as DynamoDB attributes (Python values; numbers as Decimal, None left out).

        The index attributes are derived here and nowhere else, so the sparse indexes can never
        disagree with the status: ``listing_category`` exists only on what buyers may see,
        ``review_queue`` only on what waits for a person.
        """
        listed_at = self.uploaded_at or self.processed_at
        attributes: dict[str, Any] = {
            OBJECT_ID: self.object_id,
            "schema_version": self.schema_version,
            "bucket": self.bucket,
            "key": self.key,
            "status": self.status.value,
            "model_version": self.model_version,
            "event_order": self.event_order,
            "processed_at": self.processed_at,
            "uploaded_at": listed_at,
            "category": self.category,
            "confidence": _decimal(self.confidence),
            "top3": [{"label": s.label, "score": _decimal(s.score)} for s in self.top3] or None,
            "reason": self.reason,
            "etag": self.etag,
            "size": self.size,
            "width": self.width,
            "height": self.height,
            "sequencer": self.sequencer,
            "category_source": self.category_source.value,
            "reviewed_by": self.reviewed_by,
            "reviewed_at": self.reviewed_at,
            "review_outcome": None if self.review_outcome is None else self.review_outcome.value,
            "expires_at": self.expires_at,
            LISTING_CATEGORY: self.category if self.visible_to_buyers else None,
            REVIEW_QUEUE: REVIEW_QUEUE_VALUE if self.waits_for_review else None,
        }
        return {name: value for name, value in attributes.items() if value is not None}

    @classmethod
    def from_attributes(cls, attributes: dict[str, Any]) -> CatalogueItem:
        """Read an item of any schema version.

        Version 1 items (written before ``schema_version`` existed, keyed by ``bucket`` + ``key``)
        have no ``uploaded_at`` (their ``processed_at`` stands in), no ``category_source`` (they
        were all the model's) and no tombstones; they are read as such and rewritten as the
        current version by the next event or backfill of their object.
        """

        def number(name: str, kind: type) -> Any:
            value = attributes.get(name)
            return None if value is None else kind(value)

        outcome = attributes.get("review_outcome")
        return cls(
            bucket=attributes["bucket"],
            key=attributes["key"],
            status=Status(attributes["status"]),
            model_version=attributes["model_version"],
            event_order=attributes["event_order"],
            processed_at=attributes["processed_at"],
            category=attributes.get("category"),
            confidence=number("confidence", float),
            top3=tuple(
                LabelScore(label=entry["label"], score=float(entry["score"]))
                for entry in attributes.get("top3", [])
            ),
            reason=attributes.get("reason"),
            etag=attributes.get("etag"),
            size=number("size", int),
            width=number("width", int),
            height=number("height", int),
            sequencer=attributes.get("sequencer"),
            uploaded_at=attributes.get("uploaded_at", attributes["processed_at"]),
            category_source=CategorySource(attributes.get("category_source", "model")),
            reviewed_by=attributes.get("reviewed_by"),
            reviewed_at=attributes.get("reviewed_at"),
            review_outcome=None if outcome is None else ReviewOutcome(outcome),
            expires_at=number("expires_at", int),
            schema_version=number("schema_version", int) or 1,
        )

    def to_json(self) -> dict[str, Any]:
        """A plain JSON-ready view (floats, not Decimals), as the local stack prints it."""
        return {
            "bucket": self.bucket,
            "key": self.key,
            "status": self.status.value,
            "category": self.category,
            "confidence": self.confidence,
            "top3": [{"label": s.label, "score": s.score} for s in self.top3],
            "reason": self.reason,
            "model_version": self.model_version,
            "etag": self.etag,
            "size": self.size,
            "width": self.width,
            "height": self.height,
            "sequencer": self.sequencer,
            "uploaded_at": self.uploaded_at,
            "processed_at": self.processed_at,
            "category_source": self.category_source.value,
            "reviewed_by": self.reviewed_by,
            "reviewed_at": self.reviewed_at,
            "review_outcome": None if self.review_outcome is None else self.review_outcome.value,
        }


def object_id(bucket: str, key: str) -> str:
    """The table's partition key: one value per S3 object, so writes spread over partitions."""
    return f"{bucket}/{key}"


def _decimal(value: float | None) -> Decimal | None:
    # DynamoDB numbers are decimals; six places are plenty for a probability.
    return None if value is None else Decimal(str(value)).quantize(_SCORE_PLACES)

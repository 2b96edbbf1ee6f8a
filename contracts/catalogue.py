"""Contract 5: the catalogue item, one per S3 object, as the worker writes it and the app reads it.

The item's identity is ``(bucket, key)``, the table's key schema in ``template.yaml``. Items of
status REJECTED carry a ``reason`` and no ``category``, so they stay out of the sparse
``by_category`` index that buyers browse.

``event_order`` is not part of the product's view of an item; it is how the worker refuses to let
an older or repeated S3 event overwrite what a newer one wrote (see :func:`event_order`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

# S3 sequencers are hexadecimal strings of varying length; AWS says to compare them for one key
# after left-padding the shorter with zeros. 32 digits is well above the 16-20 S3 emits today.
SEQUENCER_WIDTH: Final[int] = 32
# Event orders from a sequencer sort after every order from an event time (moto omits the
# sequencer; real S3 always sends one, so the two kinds never meet for one key in one account).
_TIME_ORDER_PREFIX: Final[str] = "0:"
_SEQUENCER_ORDER_PREFIX: Final[str] = "1:"
_SCORE_PLACES: Final[Decimal] = Decimal("0.000001")


class Status(enum.StrEnum):
    CATALOGUED = "CATALOGUED"
    NEEDS_REVIEW = "NEEDS_REVIEW"
    REJECTED = "REJECTED"


def event_order(sequencer: str | None, event_time: str | None) -> str:
    """One string that sorts S3 events for the same key in the order they happened.

    ``"1:" + sequencer`` (upper-case, left-padded with zeros to :data:`SEQUENCER_WIDTH`) when the
    event has a sequencer, else ``"0:" + event time`` in UTC with microseconds, fixed width.
    """
    if sequencer:
        digits = sequencer.strip().upper()
        if not digits or any(c not in "0123456789ABCDEF" for c in digits):
            raise ValueError(f"an S3 sequencer is hexadecimal, not {sequencer!r}")
        if len(digits) > SEQUENCER_WIDTH:
            raise ValueError(f"sequencer {sequencer!r} is longer than {SEQUENCER_WIDTH} digits")
        return _SEQUENCER_ORDER_PREFIX + digits.rjust(SEQUENCER_WIDTH, "0")
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
    """One S3 object in the catalogue. ``confidence`` and ``top3`` scores are calibrated."""

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

    def __post_init__(self) -> None:
        if self.status is Status.REJECTED:
            if not self.reason or self.category is not None:
                raise ValueError("a REJECTED item has a reason and no category")
        elif not self.category or self.confidence is None:
            raise ValueError(f"a {self.status} item has a category and a confidence")

    def to_attributes(self) -> dict[str, Any]:
        """The item as DynamoDB attributes (Python values; numbers as Decimal, None left out)."""
        attributes: dict[str, Any] = {
            "bucket": self.bucket,
            "key": self.key,
            "status": self.status.value,
            "model_version": self.model_version,
            "event_order": self.event_order,
            "processed_at": self.processed_at,
            "category": self.category,
            "confidence": _decimal(self.confidence),
            "top3": [{"label": s.label, "score": _decimal(s.score)} for s in self.top3] or None,
            "reason": self.reason,
            "etag": self.etag,
            "size": self.size,
            "width": self.width,
            "height": self.height,
            "sequencer": self.sequencer,
        }
        return {name: value for name, value in attributes.items() if value is not None}

    @classmethod
    def from_attributes(cls, attributes: dict[str, Any]) -> CatalogueItem:
        def number(name: str, kind: type) -> Any:
            value = attributes.get(name)
            return None if value is None else kind(value)

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
            "processed_at": self.processed_at,
        }


def _decimal(value: float | None) -> Decimal | None:
    # DynamoDB numbers are decimals; six places are plenty for a probability.
    return None if value is None else Decimal(str(value)).quantize(_SCORE_PLACES)

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
from dataclasses import MISSING, Field, dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, get_args, get_origin, get_type_hints

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
# The review console's records live in the same table under this ``object_id`` prefix: the audit
# trail (one item per decision, refusal or undo) and the per-reviewer counters. A catalogue item's
# ``object_id`` is ``bucket/key`` and S3 bucket names never contain "#", so the two never meet;
# the records carry no index attribute, so neither sparse index (buyers' ``by_category``, the
# ``review_queue``) ever holds one. Readers of whole-table scans skip them (``is_catalogue_item``).
REVIEW_RECORD_PREFIX: Final[str] = "review#"
# Known photos the deployment's pre-traffic hook (deploy_hook/pre_traffic.py) asks a new worker
# version to classify, at s3://<uploads bucket>/deploy-probe/<label>/<name>. No bucket
# notification covers this prefix, and their items are never listed: neither index attribute is
# ever written for them, so buyers and reviewers cannot see a deployment's check.
PROBE_PREFIX: Final[str] = "deploy-probe/"
# The worker's record of decode attempts that ended in a kill (handler.decode_attempts) lives in
# the same table, under object ids with this prefix (no bucket name can contain "#"); it is no
# catalogue item: readers that scan the table skip it, the sparse indexes never hold it.
DECODE_ATTEMPTS_PREFIX: Final[str] = "decode-attempts#"


class Status(enum.StrEnum):
    CATALOGUED = "CATALOGUED"
    NEEDS_REVIEW = "NEEDS_REVIEW"
    REJECTED = "REJECTED"
    # A tombstone: the object was deleted. Never listed to buyers or reviewers.
    DELETED = "DELETED"


class CategorySource(enum.StrEnum):
    """Who chose the category. The worker never overwrites a person's decision on the same
    object version (see :mod:`contracts.catalogue_table`)."""

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


class Role(enum.Enum):
    """What a field of :class:`CatalogueItem` takes part in besides being stored. Each field names
    its roles where it is declared; every list of attribute names below is derived from them."""

    # A review decision (or its undo) writes it; see review.decisions.
    DECISION = "decision"
    # A backfill keeps the stored value (it has no S3 sequencer of its own and is no upload).
    KEPT_BY_BACKFILL = "kept_by_backfill"
    # Bookkeeping of the table, not part of the product's view (:meth:`CatalogueItem.to_json`).
    INTERNAL = "internal"


def _roles(*roles: Role) -> dict[str, frozenset[Role]]:
    return {"roles": frozenset(roles)}


@dataclass(frozen=True)
class CatalogueItem:
    """One S3 object in the catalogue. ``confidence`` and ``top3`` scores are calibrated.

    ``category_source`` says who chose ``category``: the model, or a person in the review console
    (then ``reviewed_by``, ``reviewed_at`` and ``review_outcome`` say who, when and what). A
    ``DELETED`` item is a tombstone: it keeps the delete's event order so that an older create
    that arrives late cannot bring the photo back; ``expires_at`` lets DynamoDB's TTL remove it
    once no such event can still be in flight.

    Each field is stored as the DynamoDB attribute of the same name, and a field with a ``None``
    (or empty) default is optional: left out of the item when it has no value, and removed from
    the table when a write lacks it. Adding a field is one line here (with its roles), nothing
    else: :meth:`to_attributes`, :meth:`from_attributes`, :meth:`to_json` and the attribute lists
    below (:data:`OPTIONAL_ATTRIBUTES` and the others) follow from the declaration.
    """

    bucket: str
    key: str
    status: Status = field(metadata=_roles(Role.DECISION))
    model_version: str
    event_order: str = field(metadata=_roles(Role.KEPT_BY_BACKFILL, Role.INTERNAL))
    processed_at: str
    category: str | None = field(default=None, metadata=_roles(Role.DECISION))
    confidence: float | None = None
    top3: tuple[LabelScore, ...] = field(default_factory=tuple)
    reason: str | None = field(default=None, metadata=_roles(Role.DECISION))
    # Set only when the worker ran with a REVIEW_THRESHOLD override: the threshold it used, which
    # no calibration certified — the manifest's precision guarantee does not cover this item.
    uncertified_threshold: float | None = None
    etag: str | None = None
    size: int | None = None
    width: int | None = None
    height: int | None = None
    sequencer: str | None = field(default=None, metadata=_roles(Role.KEPT_BY_BACKFILL))
    uploaded_at: str | None = field(default=None, metadata=_roles(Role.KEPT_BY_BACKFILL))
    category_source: CategorySource = field(
        default=CategorySource.MODEL, metadata=_roles(Role.DECISION)
    )
    reviewed_by: str | None = field(default=None, metadata=_roles(Role.DECISION))
    reviewed_at: str | None = field(default=None, metadata=_roles(Role.DECISION))
    review_outcome: ReviewOutcome | None = field(default=None, metadata=_roles(Role.DECISION))
    # A reviewer's claim on a NEEDS_REVIEW photo (review/leases.py): who holds it (reviewer and
    # console session) and until when (epoch seconds). A decision or its undo writes it; any
    # worker write of the item removes it (a new version is nobody's yet).
    lease_holder: str | None = field(default=None, metadata=_roles(Role.DECISION, Role.INTERNAL))
    lease_expires: int | None = field(default=None, metadata=_roles(Role.DECISION, Role.INTERNAL))
    # A second opinion (review/decisions.py): the first reviewer's choice on a sampled photo,
    # kept while the photo waits for a second reviewer; the second decision settles it.
    first_opinion_by: str | None = field(
        default=None, metadata=_roles(Role.DECISION, Role.INTERNAL)
    )
    first_opinion_choice: str | None = field(
        default=None, metadata=_roles(Role.DECISION, Role.INTERNAL)
    )
    expires_at: int | None = field(default=None, metadata=_roles(Role.INTERNAL))
    schema_version: int = field(default=SCHEMA_VERSION, metadata=_roles(Role.INTERNAL))

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
        attributes: dict[str, Any] = {OBJECT_ID: self.object_id}
        for item_field in fields(self):
            attributes[item_field.name] = _stored(getattr(self, item_field.name))
        # Buyers' listings and the review queue sort on the upload time; an item without one
        # (written before it was recorded) sorts on when it was processed.
        attributes[UPLOADED_AT] = self.uploaded_at or self.processed_at
        attributes[LISTING_CATEGORY] = self.category if self.visible_to_buyers else None
        attributes[REVIEW_QUEUE] = REVIEW_QUEUE_VALUE if self.waits_for_review else None
        return {name: value for name, value in attributes.items() if value is not None}

    @classmethod
    def from_attributes(cls, attributes: dict[str, Any]) -> CatalogueItem:
        """Read an item of any schema version.

        Version 1 items (written before ``schema_version`` existed, keyed by ``bucket`` + ``key``)
        have no ``uploaded_at`` (their ``processed_at`` stands in), no ``category_source`` (they
        were all the model's) and no tombstones; they are read as such and rewritten as the
        current version by the next event or backfill of their object.
        """
        values: dict[str, Any] = {}
        for item_field in fields(cls):
            value = attributes.get(item_field.name)
            if value is not None:
                values[item_field.name] = _read(_FIELD_TYPES[item_field.name], value)
        values.setdefault(UPLOADED_AT, values["processed_at"])
        values.setdefault("schema_version", 1)
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """A plain JSON-ready view (floats, not Decimals), as the local stack prints it: every
        field but the table's bookkeeping (:attr:`Role.INTERNAL`)."""
        return {
            item_field.name: _plain(getattr(self, item_field.name))
            for item_field in fields(self)
            if Role.INTERNAL not in _roles_of(item_field)
        }


def _roles_of(item_field: Field[Any]) -> frozenset[Role]:
    return item_field.metadata.get("roles", frozenset())


def _is_optional(item_field: Field[Any]) -> bool:
    return item_field.default is None or item_field.default_factory is not MISSING


_FIELD_TYPES: Final[dict[str, Any]] = get_type_hints(CatalogueItem)
_FIELDS: Final[tuple[Field[Any], ...]] = fields(CatalogueItem)
# The sparse index attributes, derived in :meth:`CatalogueItem.to_attributes` from ``status`` and
# ``category`` (as the identity ``object_id`` is from ``bucket`` and ``key``).
_INDEX_ATTRIBUTES: Final[tuple[str, ...]] = (LISTING_CATEGORY, REVIEW_QUEUE)
#: Every attribute an item can have in the table.
ATTRIBUTES: Final[tuple[str, ...]] = (
    OBJECT_ID,
    *(item_field.name for item_field in _FIELDS),
    *_INDEX_ATTRIBUTES,
)
#: The attributes an item may lack; a write of an item without one removes it from the table.
OPTIONAL_ATTRIBUTES: Final[frozenset[str]] = frozenset(
    item_field.name for item_field in _FIELDS if _is_optional(item_field)
) | frozenset(_INDEX_ATTRIBUTES)
#: What a review decision (or its undo) writes; the index attributes follow the status.
DECISION_ATTRIBUTES: Final[tuple[str, ...]] = (
    *(item_field.name for item_field in _FIELDS if Role.DECISION in _roles_of(item_field)),
    *_INDEX_ATTRIBUTES,
)
#: What a backfill keeps from the stored item instead of writing its own value.
KEPT_BY_BACKFILL: Final[frozenset[str]] = frozenset(
    item_field.name for item_field in _FIELDS if Role.KEPT_BY_BACKFILL in _roles_of(item_field)
)


def _stored(value: Any) -> Any:
    """A field's value as DynamoDB stores it: enums by value, floats as six-place decimals,
    nested records as maps, an empty sequence left out (``None``)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float):
        # DynamoDB numbers are decimals; six places are plenty for a probability.
        return Decimal(str(value)).quantize(_SCORE_PLACES)
    if isinstance(value, tuple):
        return [_stored_record(entry) for entry in value] or None
    return value


def _stored_record(record: Any) -> dict[str, Any]:
    return {entry.name: _stored(getattr(record, entry.name)) for entry in fields(record)}


def _plain(value: Any) -> Any:
    """A field's value as plain JSON: enums by value, nested records as dicts."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [
            {entry.name: getattr(record, entry.name) for entry in fields(record)}
            for record in value
        ]
    return value


def _read(kind: Any, value: Any) -> Any:
    """A stored value back as the field's type (``kind``, from the field's annotation)."""
    members = [member for member in get_args(kind) if member is not type(None)]
    if get_origin(kind) is tuple:
        record_type = members[0]
        hints = get_type_hints(record_type)
        return tuple(
            record_type(**{name: _read(hints[name], entry[name]) for name in hints})
            for entry in value
        )
    if members:  # ``X | None``: the value is present, so it is an X.
        kind = members[0]
    if kind is float or kind is int:
        return kind(value)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(value)
    return value


def is_catalogue_item(attributes: dict[str, Any]) -> bool:
    """Whether a raw table item is a catalogue item (not a review record, see
    :data:`REVIEW_RECORD_PREFIX`, nor a decode-attempt record, :data:`DECODE_ATTEMPTS_PREFIX`)."""
    identity = attributes.get(OBJECT_ID)
    if isinstance(identity, dict):  # the low-level client's {"S": ...}
        identity = identity.get("S")
    return not str(identity or "").startswith((REVIEW_RECORD_PREFIX, DECODE_ATTEMPTS_PREFIX))


def object_id(bucket: str, key: str) -> str:
    """The table's partition key: one value per S3 object, so writes spread over partitions."""
    return f"{bucket}/{key}"

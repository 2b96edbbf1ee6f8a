"""A person's decision on a ``NEEDS_REVIEW`` photo, as one conditional write of its catalogue item.

The console holds each photo it shows under a lease (:mod:`review.leases`); the item as claimed is
what the page showed. :func:`decide` writes only if the item still has that ETag and event order,
is still ``NEEDS_REVIEW`` and is still held by this console; it needs no read first. :func:`undo`
writes back exactly the decision attributes the item had before (its reason, e.g. ``unfamiliar``,
included), only if the item still holds this reviewer's decision on that version. When the
condition fails (a new upload, a delete, another reviewer, a lease lost) the call returns ``None``
and changes nothing: the page says the photo changed and moves on.

Labels are the model's label set and nothing else: a choice outside it is refused here, whatever a
top 3 or a request says. An ``unfamiliar`` photo's model first choice needs ``deliberate=True``
(the page asks for a second key press). A sampled photo takes two reviewers (a second opinion):
the first decision is kept on the item and the photo stays in the queue for someone else; the
second decides, and the audit trail records whether the two agreed.

Only the decision's own attributes change; the model's view (``model_version``, ``confidence``,
``top3``) stays as the reviewer saw it, so the model-vs-reviewer agreement can be read back later.
The sparse index attributes are derived by :meth:`CatalogueItem.to_attributes`, as everywhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, Final

from contracts.catalogue import (
    DECISION_ATTRIBUTES,
    REVIEW_QUEUE,
    REVIEW_QUEUE_INDEX,
    REVIEW_QUEUE_VALUE,
    CatalogueItem,
    CategorySource,
    ReviewOutcome,
    Status,
    utc_now,
)
from contracts.catalogue_table import conditional_update, deserialize, update_expression
from contracts.unfamiliarity import REASON_UNFAMILIAR

# The two outcomes that are not a category, as the console names them.
NOT_A_PRODUCT: Final[str] = ReviewOutcome.NOT_A_PRODUCT.value
UNUSABLE: Final[str] = ReviewOutcome.UNUSABLE.value
REJECTIONS: Final[frozenset[str]] = frozenset({NOT_A_PRODUCT, UNUSABLE})


class ChoiceRefused(ValueError):
    """A choice the console never accepts (outside the label set, an unfamiliar photo confirmed
    with one key, a photo the page could not show)."""


@dataclass(frozen=True)
class Shown:
    """The object version a reviewer saw: the item's identity plus its ETag and event order."""

    bucket: str
    key: str
    etag: str | None
    event_order: str

    @classmethod
    def of(cls, item: CatalogueItem) -> Shown:
        return cls(bucket=item.bucket, key=item.key, etag=item.etag, event_order=item.event_order)


def model_choice(item: CatalogueItem) -> str | None:
    """The model's first choice (what Enter confirms)."""
    return item.top3[0].label if item.top3 else item.category


def needs_second_opinion(item: CatalogueItem, rate: float) -> bool:
    """Whether ``item``'s object version is in the second-opinion sample (a stable draw from its
    identity and ETag, so every console agrees)."""
    digest = hashlib.sha256(f"{item.object_id}\0{item.etag}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < rate


def check_choice(
    item: CatalogueItem, choice: str, *, labels: frozenset[str], deliberate: bool = False
) -> None:
    """Refuse (``ChoiceRefused``) what no reviewer may write: a label outside the model's set,
    or an ``unfamiliar`` photo's model first choice without ``deliberate``."""
    if choice in REJECTIONS:
        return
    if choice not in labels:
        raise ChoiceRefused(f"{choice!r} is not one of the model's labels")
    if item.reason == REASON_UNFAMILIAR and choice == model_choice(item) and not deliberate:
        raise ChoiceRefused(
            "this photo is unlike anything the model was trained on: confirm its first choice "
            "deliberately (press Enter twice) or choose another category"
        )


def decided_item(
    item: CatalogueItem, choice: str, *, reviewer: str, reviewed_at: str
) -> CatalogueItem:
    """``item`` after the reviewer chose ``choice``: a category, or one of the two rejections.

    The model's first choice is *confirmed*; any other category is *corrected*. Both make the
    item ``CATALOGUED`` (visible to buyers); the rejections make it ``REJECTED`` with the
    outcome as its reason. The lease and any first opinion go.
    """
    if choice in REJECTIONS:
        outcome = ReviewOutcome(choice)
        status, category, reason = Status.REJECTED, None, choice
    else:
        outcome = (
            ReviewOutcome.CONFIRMED if choice == model_choice(item) else ReviewOutcome.CORRECTED
        )
        status, category, reason = Status.CATALOGUED, choice, None
    return dataclasses.replace(
        item,
        status=status,
        category=category,
        reason=reason,
        category_source=CategorySource.HUMAN,
        reviewed_by=reviewer,
        reviewed_at=reviewed_at,
        review_outcome=outcome,
        lease_holder=None,
        lease_expires=None,
        first_opinion_by=None,
        first_opinion_choice=None,
    )


def decide(
    dynamodb: Any,
    table: str,
    held: CatalogueItem,
    choice: str,
    *,
    reviewer: str,
    holder: str,
    labels: frozenset[str] | set[str],
    deliberate: bool = False,
    second_opinion_rate: float = 0.0,
    reviewed_at: str | None = None,
) -> CatalogueItem | None:
    """Record ``choice`` for the photo ``held`` (as this console claimed it); the item as written,
    or ``None`` when it changed since (new upload, delete, decided, lease lost).

    A first opinion on a sampled photo is written as such: the item stays ``NEEDS_REVIEW``, free
    for any other reviewer (``first_opinion_by`` tells which one may not take it)."""
    if not reviewer:
        raise ValueError("a decision names its reviewer")
    check_choice(held, choice, labels=frozenset(labels), deliberate=deliberate)
    if held.status is not Status.NEEDS_REVIEW or held.lease_holder != holder:
        return None
    if held.first_opinion_by is None and needs_second_opinion(held, second_opinion_rate):
        after = dataclasses.replace(
            held,
            lease_holder=None,
            lease_expires=None,
            first_opinion_by=reviewer,
            first_opinion_choice=choice,
        )
    else:
        after = decided_item(held, choice, reviewer=reviewer, reviewed_at=reviewed_at or utc_now())
    condition, names, values = _same_version(Shown.of(held))
    names.update({"#status": "status", "#holder": "lease_holder"})
    values.update({":needs_review": {"S": Status.NEEDS_REVIEW.value}, ":holder": {"S": holder}})
    condition += " AND #status = :needs_review AND #holder = :holder"
    return after if _write(dynamodb, table, after, condition, names, values) else None


def undo(
    dynamodb: Any, table: str, before: CatalogueItem, written: CatalogueItem
) -> CatalogueItem | None:
    """Put back exactly ``before`` (the item as claimed: its status, category, reason, lease and
    any first opinion) if the photo still holds ``written``, this reviewer's decision on the
    same version. The restored item, or ``None``."""
    condition, names, values = _same_version(Shown.of(before))
    if written.category_source is CategorySource.HUMAN:
        names.update({"#source": "category_source", "#by": "reviewed_by", "#at": "reviewed_at"})
        values.update(
            {
                ":human": {"S": CategorySource.HUMAN.value},
                ":by": {"S": written.reviewed_by or ""},
                ":at": {"S": written.reviewed_at or ""},
            }
        )
        condition += " AND #source = :human AND #by = :by AND #at = :at"
    else:  # a first opinion: still waiting, still this reviewer's
        names.update({"#first": "first_opinion_by", "#status": "status", "#holder": "lease_holder"})
        values.update(
            {
                ":first": {"S": written.first_opinion_by or ""},
                ":needs_review": {"S": Status.NEEDS_REVIEW.value},
            }
        )
        # ... and nobody has claimed it for the second opinion meanwhile.
        condition += (
            " AND #first = :first AND #status = :needs_review AND attribute_not_exists(#holder)"
        )
    return before if _write(dynamodb, table, before, condition, names, values) else None


def _queue_query(table: str) -> dict[str, Any]:
    """The query of the sparse ``review_queue`` index that both readers of the queue start from."""
    return {
        "TableName": table,
        "IndexName": REVIEW_QUEUE_INDEX,
        "KeyConditionExpression": "#queue = :queue",
        "ExpressionAttributeNames": {"#queue": REVIEW_QUEUE},
        "ExpressionAttributeValues": {":queue": {"S": REVIEW_QUEUE_VALUE}},
    }


def review_queue(
    dynamodb: Any, table: str, *, limit: int = 20, after: dict[str, Any] | None = None
) -> tuple[list[CatalogueItem], dict[str, Any] | None]:
    """Up to ``limit`` items of the review queue, oldest upload first, and the key to continue
    from (``None`` at the end). Reads the sparse ``review_queue`` index (eventually consistent:
    a just-decided item can still show up once; its decision's condition then refuses it)."""
    request = {**_queue_query(table), "ScanIndexForward": True, "Limit": limit}
    if after:
        request["ExclusiveStartKey"] = after
    response = dynamodb.query(**request)
    items = [CatalogueItem.from_attributes(deserialize(raw)) for raw in response["Items"]]
    return items, response.get("LastEvaluatedKey")


def queue_length(dynamodb: Any, table: str, *, cap: int | None = None) -> int:
    """How many photos wait for a person (a COUNT query over the sparse index); with ``cap``, it
    stops after reading ``cap`` index entries (the cost stays bounded however long the queue
    grows; an answer of ``cap`` means "at least")."""
    request = {**_queue_query(table), "Select": "COUNT"}
    total = 0
    while True:
        if cap is not None:
            request["Limit"] = cap - total  # Limit bounds the entries read, not just returned
        response = dynamodb.query(**request)
        total += response["Count"]
        if "LastEvaluatedKey" not in response or (cap is not None and total >= cap):
            return total
        request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def _same_version(shown: Shown) -> tuple[str, dict[str, str], dict[str, Any]]:
    names = {"#event_order": "event_order", "#etag": "etag"}
    values: dict[str, Any] = {":event_order": {"S": shown.event_order}}
    if shown.etag is None:
        return "#event_order = :event_order AND attribute_not_exists(#etag)", names, values
    values[":etag"] = {"S": shown.etag}
    return "#event_order = :event_order AND #etag = :etag", names, values


def _write(
    dynamodb: Any,
    table: str,
    item: CatalogueItem,
    condition: str,
    names: dict[str, str],
    values: dict[str, Any],
) -> bool:
    # Only the decision's own attributes (see contracts.catalogue.Role.DECISION) change; the
    # model's view of the item stays as the reviewer saw it.
    expression, update_names, update_values = update_expression(
        item, attributes=DECISION_ATTRIBUTES
    )
    names.update(update_names)
    values.update(update_values)
    return conditional_update(dynamodb, table, item, expression, condition, names, values)

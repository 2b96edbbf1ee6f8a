"""The review audit trail and the per-reviewer counters, in the catalogue table itself.

* **Trail**: one item per decision, refusal and undo, never updated (written with
  ``attribute_not_exists``), ``object_id = review#audit#<time>#<random>``: who, when, the photo
  (bucket, key, ETag, event order), what the page showed (the model's version, top 3, first
  choice, the reason the photo was in the queue), what was chosen, and the outcome.
* **Counters**: one item, ``object_id = review#stats``, with one attribute per reviewer and
  figure (``decided|ana``, ``confirmed|ana``, ``first|ana`` …), changed by an atomic ``ADD`` with
  each event, so the console shows every reviewer's counts, pace and agreement with the model by
  reading one item, whatever the size of the trail or the queue. Second opinions add
  ``pair|<first>|<second>`` and ``pair_agreed|<first>|<second>``.

Both sit under :data:`contracts.catalogue.REVIEW_RECORD_PREFIX` and carry no index attribute, so
neither buyers' ``by_category`` index nor the ``review_queue`` index ever holds one (sparse
indexes contain only items that have the index key: "Take advantage of sparse indexes", DynamoDB
Developer Guide, https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-indexes-general-sparse-indexes.html).
A second table would add a resource, IAM lines and a client setting to every tool for records a
person writes a few times a minute.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from datetime import datetime
from typing import Any, Final

from boto3.dynamodb.types import TypeSerializer

from contracts.catalogue import OBJECT_ID, REVIEW_RECORD_PREFIX, CatalogueItem, utc_now
from contracts.catalogue_table import deserialize

AUDIT_PREFIX: Final[str] = REVIEW_RECORD_PREFIX + "audit#"
STATS_ID: Final[str] = REVIEW_RECORD_PREFIX + "stats"
# Counted per reviewer (the decision outcomes, plus undos and refusals).
FIGURES: Final[tuple[str, ...]] = (
    "decided",
    "confirmed",
    "corrected",
    "not_a_baby_product",
    "unusable_photo",
    "undone",
    "refused",
)
_serializer = TypeSerializer()


def shown_record(item: CatalogueItem) -> dict[str, Any]:
    """What the page showed for ``item`` (kept with every event about it)."""
    return {
        "bucket": item.bucket,
        "key": item.key,
        "etag": item.etag,
        "event_order": item.event_order,
        "model_version": item.model_version,
        "model_label": item.top3[0].label if item.top3 else item.category,
        "top3": [{"label": s.label, "score": str(s.score)} for s in item.top3],
        "queue_reason": item.reason,
    }


def record(
    dynamodb: Any,
    table: str,
    *,
    event: str,
    reviewer: str,
    item: CatalogueItem,
    choice: str | None = None,
    outcome: str | None = None,
    detail: str | None = None,
    first_opinion: dict[str, str] | None = None,
    at: str | None = None,
) -> dict[str, Any]:
    """Append one event (``decided``, ``first_opinion``, ``refused``, ``undone``) and update the
    counters."""
    at = at or utc_now()
    entry: dict[str, Any] = {
        OBJECT_ID: f"{AUDIT_PREFIX}{at}#{secrets.token_hex(6)}",
        "event": event,
        "reviewer": reviewer,
        "at": at,
        "shown": shown_record(item),
        "choice": choice,
        "outcome": outcome,
        "detail": detail,
        "first_opinion": first_opinion,
    }
    entry = {name: value for name, value in entry.items() if value is not None}
    dynamodb.put_item(
        TableName=table,
        Item={name: _serializer.serialize(value) for name, value in entry.items()},
        ConditionExpression="attribute_not_exists(#id)",  # append-only: never overwrite
        ExpressionAttributeNames={"#id": OBJECT_ID},
    )
    _count(dynamodb, table, event=event, reviewer=reviewer, outcome=outcome, at=at)
    if first_opinion is not None and event == "decided":
        pair = f"{first_opinion['reviewer']}|{reviewer}"
        agreed = int(first_opinion["choice"] == choice)
        dynamodb.update_item(
            TableName=table,
            Key={OBJECT_ID: {"S": STATS_ID}},
            UpdateExpression="ADD #pair :one, #agreed :agreed",
            ExpressionAttributeNames={"#pair": f"pair|{pair}", "#agreed": f"pair_agreed|{pair}"},
            ExpressionAttributeValues={":one": {"N": "1"}, ":agreed": {"N": str(agreed)}},
        )
    return entry


def _count(
    dynamodb: Any, table: str, *, event: str, reviewer: str, outcome: str | None, at: str
) -> None:
    # A first opinion is a reviewer's decision too (counted), though it does not settle the photo.
    step = {"decided": 1, "first_opinion": 1, "undone": -1}.get(event, 0)
    names = {"#first": f"first|{reviewer}", "#last": f"last|{reviewer}"}
    values: dict[str, Any] = {":at": {"S": at}}
    additions = []
    if event == "refused":
        names["#refused"] = f"refused|{reviewer}"
        values[":one"] = {"N": "1"}
        additions.append("#refused :one")
    else:
        names["#decided"] = f"decided|{reviewer}"
        values[":step"] = {"N": str(step)}
        additions.append("#decided :step")
        if event == "undone":
            names["#undone"] = f"undone|{reviewer}"
            values[":one"] = {"N": "1"}
            additions.append("#undone :one")
        if outcome:
            names["#outcome"] = f"{outcome}|{reviewer}"
            additions.append("#outcome :step")
    dynamodb.update_item(
        TableName=table,
        Key={OBJECT_ID: {"S": STATS_ID}},
        UpdateExpression=(
            "SET #first = if_not_exists(#first, :at), #last = :at ADD " + ", ".join(additions)
        ),
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=values,
    )


def team_stats(dynamodb: Any, table: str) -> dict[str, Any]:
    """Every reviewer's counts, pace and agreement with the model, and reviewer-reviewer
    agreement on second opinions: one ``GetItem``."""
    raw = dynamodb.get_item(TableName=table, Key={OBJECT_ID: {"S": STATS_ID}}).get("Item", {})
    return summarise(deserialize(raw))


def summarise(attributes: dict[str, Any]) -> dict[str, Any]:
    reviewers: dict[str, dict[str, Any]] = defaultdict(lambda: dict.fromkeys(FIGURES, 0))
    pairs: dict[str, dict[str, int]] = defaultdict(lambda: {"photos": 0, "agreed": 0})
    for name, value in attributes.items():
        kind, _, rest = name.partition("|")
        if kind in FIGURES:
            reviewers[rest][kind] = int(value)
        elif kind in ("first", "last"):
            reviewers[rest][kind] = value
        elif kind == "pair":
            pairs[rest]["photos"] = int(value)
        elif kind == "pair_agreed":
            pairs[rest]["agreed"] = int(value)
    rows = []
    for reviewer, figures in sorted(reviewers.items()):
        judged = figures["confirmed"] + figures["corrected"] + figures["not_a_baby_product"]
        rows.append(
            {
                "reviewer": reviewer,
                **figures,
                "agreement_with_model": figures["confirmed"] / judged if judged > 0 else None,
                "per_minute": _pace(figures),
            }
        )
    pair_rows = [
        {
            "first": key.split("|")[0],
            "second": key.split("|")[-1],
            **counts,
            "agreement": counts["agreed"] / counts["photos"] if counts["photos"] else None,
        }
        for key, counts in sorted(pairs.items())
    ]
    photos = sum(p["photos"] for p in pair_rows)
    return {
        "reviewers": rows,
        "pairs": pair_rows,
        "reviewer_agreement": (sum(p["agreed"] for p in pair_rows) / photos if photos else None),
    }


def _pace(figures: dict[str, Any]) -> float | None:
    """Decisions per minute between the reviewer's first and last event (breaks included)."""
    if not figures.get("first") or not figures.get("last") or figures["decided"] < 2:
        return None
    first = datetime.fromisoformat(str(figures["first"]).replace("Z", "+00:00"))
    last = datetime.fromisoformat(str(figures["last"]).replace("Z", "+00:00"))
    seconds = (last - first).total_seconds()
    return round(figures["decided"] * 60.0 / seconds, 1) if seconds > 0 else None


def trail(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    """Every audit event, oldest first (a filtered scan of the table: for exports and reports,
    never on a reviewer's request path)."""
    events: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(
        TableName=table,
        FilterExpression="begins_with(#id, :prefix)",
        ExpressionAttributeNames={"#id": OBJECT_ID},
        ExpressionAttributeValues={":prefix": {"S": AUDIT_PREFIX}},
        ConsistentRead=True,
    ):
        events.extend(deserialize(raw) for raw in page["Items"])
    return sorted(events, key=lambda event: event[OBJECT_ID])

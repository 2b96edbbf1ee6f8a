"""Model vs reviewer, per category: which categories the model gets wrong in production.

Every decision a person made in the review console says what the production model's first
choice was (the item keeps its ``top3``) and what the person decided. Per category:

* **model said** — photos whose model first choice was this category, and how many of them the
  reviewer *confirmed* (the agreement rate: the model's precision on the photos it was unsure of),
  how many were corrected (and to what, most often), called not a baby product, or unusable;
* **reviewer said** — photos the reviewer placed in this category, and the share the model had as
  its first choice (its recall there).

Read from the catalogue (``python -m review.agreement --table T``) or from the
manifests of reviewed-dataset exports; the evaluation report of a run trained on a reviewed export
carries the same table as a section.

Per reviewer: how many photos each decided and how often they confirmed the model's first choice
(reviewer vs model). Reviewer vs reviewer: photos in the console's second-opinion sample were
decided by two people; the entries carry the first one's choice (``first_opinion``), and the share
where both chose the same is their agreement.

These photos are the ones the model was unsure of, not a random sample: the rates describe the
review queue, not the whole catalogue.
"""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

AGREEMENT_JSON: Final[str] = "review_agreement.json"
_OUTCOMES: Final[tuple[str, ...]] = (
    "confirmed",
    "corrected",
    "not_a_baby_product",
    "unusable_photo",
)


def agreement(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per-category agreement from decision entries (``model_label``, ``outcome``, ``label``),
    as written in a reviewed-dataset manifest."""
    entries_seen: list[dict[str, Any]] = []
    said: dict[str, Counter[str]] = defaultdict(Counter)
    corrected_to: dict[str, Counter[str]] = defaultdict(Counter)
    placed: Counter[str] = Counter()
    placed_agreed: Counter[str] = Counter()
    total = 0
    for entry in entries:
        entries_seen.append(entry)
        model, outcome, label = entry.get("model_label"), entry.get("outcome"), entry.get("label")
        if outcome not in _OUTCOMES or model is None:
            continue
        total += 1
        said[model][outcome] += 1
        if outcome == "corrected" and label:
            corrected_to[model][label] += 1
        if label:
            placed[label] += 1
            placed_agreed[label] += int(label == model)
    rows = []
    for category in sorted(set(said) | set(placed)):
        counts = said.get(category, Counter())
        decided = sum(counts.values())
        judged = decided - counts["unusable_photo"]  # an unusable photo says nothing of the model
        top = corrected_to[category].most_common(1)
        rows.append(
            {
                "category": category,
                "model_said": decided,
                **{outcome: counts[outcome] for outcome in _OUTCOMES},
                "agreement": counts["confirmed"] / judged if judged else None,
                "most_often_corrected_to": top[0][0] if top else None,
                "reviewer_said": placed[category],
                "model_first_choice_share": (
                    placed_agreed[category] / placed[category] if placed[category] else None
                ),
            }
        )
    rows.sort(key=lambda row: (row["agreement"] is None, row["agreement"] or 0.0))
    confirmed = sum(counts["confirmed"] for counts in said.values())
    judged_total = total - sum(counts["unusable_photo"] for counts in said.values())
    return {
        "decisions": total,
        "agreement": confirmed / judged_total if judged_total else None,
        "categories": rows,
        **_between_people(list(entries_seen)),
    }


def _between_people(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-reviewer counts and agreement with the model; agreement between two reviewers on
    second opinions."""
    per: dict[str, Counter[str]] = defaultdict(Counter)
    pairs = agreed = 0
    for entry in entries:
        reviewer, outcome = entry.get("reviewed_by"), entry.get("outcome")
        if reviewer and outcome in _OUTCOMES:
            per[reviewer][outcome] += 1
        first = entry.get("first_opinion")
        if first and outcome in _OUTCOMES:
            pairs += 1
            chosen = entry.get("label") or outcome
            agreed += int(first.get("choice") == chosen)
    reviewers = []
    for reviewer, counts in sorted(per.items()):
        judged = sum(counts.values()) - counts["unusable_photo"]
        reviewers.append(
            {
                "reviewer": reviewer,
                "decided": sum(counts.values()),
                "confirmed": counts["confirmed"],
                "agreement_with_model": counts["confirmed"] / judged if judged else None,
            }
        )
    return {
        "reviewers": reviewers,
        "second_opinions": {
            "photos": pairs,
            "agreed": agreed,
            "agreement": agreed / pairs if pairs else None,
        },
    }


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def format_agreement(table: dict[str, Any]) -> str:
    """A plain-text table, worst agreement first."""
    header = (
        f"{'category':22}{'model said':>11}{'agreed':>8}{'corrected':>10}{'not prod.':>10}"
        f"{'unusable':>9}  {'most often corrected to':24}{'reviewer said':>14}{'model 1st':>10}"
    )
    lines = [header]
    for row in table["categories"]:
        lines.append(
            f"{row['category']:22}{row['model_said']:>11}{_percent(row['agreement']):>8}"
            f"{row['corrected']:>10}{row['not_a_baby_product']:>10}{row['unusable_photo']:>9}  "
            f"{row['most_often_corrected_to'] or '-':24}{row['reviewer_said']:>14}"
            f"{_percent(row['model_first_choice_share']):>10}"
        )
    lines.append(
        f"{table['decisions']} decisions; the model's first choice was confirmed on "
        f"{_percent(table['agreement'])} of the usable photos"
    )
    for row in table.get("reviewers", []):
        lines.append(
            f"  {row['reviewer']}: {row['decided']} decided, agrees with the model on "
            f"{_percent(row['agreement_with_model'])}"
        )
    second = table.get("second_opinions") or {}
    if second.get("photos"):
        lines.append(
            f"reviewer vs reviewer: {second['agreed']} of {second['photos']} second opinions "
            f"agreed ({_percent(second['agreement'])})"
        )
    return "\n".join(lines) + "\n"


def agreement_html(table: dict[str, Any], source: str) -> str:
    """The evaluation report's section (every value escaped)."""
    rows = "\n".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(cell))}</td>"
            for cell in (
                row["category"],
                row["model_said"],
                _percent(row["agreement"]),
                row["corrected"],
                row["most_often_corrected_to"] or "–",
                row["not_a_baby_product"],
                row["unusable_photo"],
                row["reviewer_said"],
                _percent(row["model_first_choice_share"]),
            )
        )
        + "</tr>"
        for row in table["categories"]
    )
    return f"""<h2>Model vs reviewer (production)</h2>
<p>{table["decisions"]} review decisions from {html.escape(source)}: the production model's first
choice against the person's, per category, worst agreement first. These are the photos the model
was unsure of (NEEDS_REVIEW), so the rates describe the review queue, not the whole catalogue.
Overall the first choice was confirmed on {_percent(table["agreement"])} of the usable photos.</p>
<table><tr><th>category</th><th>model said</th><th>confirmed</th><th>corrected</th>
<th>most often corrected to</th><th>not a baby product</th><th>unusable</th>
<th>reviewer said</th><th>model's first choice there</th></tr>
{rows}</table>
{_people_html(table)}"""


def _people_html(table: dict[str, Any]) -> str:
    """Per reviewer, and reviewer vs reviewer (every value escaped)."""
    rows = "\n".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(cell))}</td>"
            for cell in (
                row["reviewer"],
                row["decided"],
                row["confirmed"],
                _percent(row["agreement_with_model"]),
            )
        )
        + "</tr>"
        for row in table.get("reviewers", [])
    )
    second = table.get("second_opinions") or {}
    between = (
        f"{second['agreed']} of {second['photos']} photos decided by two reviewers got the same "
        f"decision from both ({_percent(second['agreement'])})."
        if second.get("photos")
        else "No photo was decided by two reviewers (start the consoles with --second-opinion)."
    )
    return f"""<h3>Reviewers</h3>
<table><tr><th>reviewer</th><th>decided</th><th>confirmed the model</th>
<th>agreement with the model</th></tr>
{rows}</table>
<p>Reviewer vs reviewer: {between}</p>
"""


def entries_from_manifests(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Decision entries of reviewed-dataset exports (a manifest, its folder, or its labelled/)."""
    entries: list[dict[str, Any]] = []
    for path in paths:
        path = Path(path)
        for candidate in (path, path / "manifest.json", path.parent / "manifest.json"):
            if candidate.is_file():
                manifest = json.loads(candidate.read_text())
                if manifest.get("kind") == "reviewed_dataset":
                    entries.extend(manifest.get("items", []))
                    break
    return entries

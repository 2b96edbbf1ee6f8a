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
    said: dict[str, Counter[str]] = defaultdict(Counter)
    corrected_to: dict[str, Counter[str]] = defaultdict(Counter)
    placed: Counter[str] = Counter()
    placed_agreed: Counter[str] = Counter()
    total = 0
    for entry in entries:
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

"""Model vs reviewer agreement per category, from decision entries (as the manifest holds them)."""

from __future__ import annotations

import json
from pathlib import Path

from model_build.evaluation.review_agreement import (
    agreement,
    agreement_html,
    entries_from_manifests,
    format_agreement,
)
from review.agreement import main


def entry(model: str, outcome: str, label: str | None = None) -> dict:
    return {"model_label": model, "outcome": outcome, "label": label}


ENTRIES = [
    entry("stroller", "confirmed", "stroller"),
    entry("stroller", "confirmed", "stroller"),
    entry("stroller", "corrected", "walkers"),
    entry("stroller", "unusable_photo"),
    entry("walkers", "corrected", "stroller"),
    entry("walkers", "corrected", "<b>bouncer</b>"),
    entry("walkers", "corrected", "<b>bouncer</b>"),
    entry("walkers", "not_a_baby_product"),
    {"model_label": None, "outcome": "confirmed", "label": "x"},  # no model view: ignored
]


def test_per_category_agreement_worst_first() -> None:
    table = agreement(ENTRIES)
    assert table["decisions"] == 8
    assert table["agreement"] == 2 / 7  # unusable photos say nothing about the model
    rows = {row["category"]: row for row in table["categories"]}
    assert table["categories"][0]["category"] == "walkers"  # 0% agreement first
    stroller, walkers = rows["stroller"], rows["walkers"]
    assert (stroller["model_said"], stroller["confirmed"], stroller["unusable_photo"]) == (4, 2, 1)
    assert stroller["agreement"] == 2 / 3
    assert stroller["most_often_corrected_to"] == "walkers"
    assert (stroller["reviewer_said"], stroller["model_first_choice_share"]) == (3, 2 / 3)
    assert (walkers["agreement"], walkers["not_a_baby_product"]) == (0.0, 1)
    assert walkers["most_often_corrected_to"] == "<b>bouncer</b>"
    bouncer = rows["<b>bouncer</b>"]
    assert (bouncer["model_said"], bouncer["agreement"], bouncer["reviewer_said"]) == (0, None, 2)
    assert bouncer["model_first_choice_share"] == 0.0
    assert "8 decisions" in format_agreement(table)


def test_html_section_escapes_labels() -> None:
    section = agreement_html(agreement(ENTRIES), "the <catalogue>")
    assert "<b>bouncer</b>" not in section
    assert "&lt;b&gt;bouncer&lt;/b&gt;" in section
    assert "the &lt;catalogue&gt;" in section


def test_from_manifests_and_command_line(tmp_path: Path, capsys) -> None:
    export = tmp_path / "reviewed"
    (export / "labelled").mkdir(parents=True)
    (export / "manifest.json").write_text(
        json.dumps({"kind": "reviewed_dataset", "items": ENTRIES})
    )
    (tmp_path / "other.json").write_text(json.dumps({"kind": "something", "items": ENTRIES}))
    assert entries_from_manifests([export / "labelled", tmp_path / "other.json"]) == ENTRIES
    out = tmp_path / "agreement.json"
    assert main(["--manifest", str(export), "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == agreement(ENTRIES)
    assert "walkers" in capsys.readouterr().out


def test_per_reviewer_and_reviewer_vs_reviewer_agreement() -> None:
    """GIVEN decisions by two reviewers, three of them second opinions on Ana's first ones
    THEN each reviewer's agreement with the model, and the two reviewers' agreement, appear in
    the table, the text and the report section."""
    entries = [
        {**entry("stroller", "confirmed", "stroller"), "reviewed_by": "ana"},
        {**entry("stroller", "corrected", "walkers"), "reviewed_by": "ana"},
        {**entry("stroller", "confirmed", "stroller"), "reviewed_by": "bo",
         "first_opinion": {"reviewer": "ana", "choice": "stroller"}},
        {**entry("walkers", "not_a_baby_product"), "reviewed_by": "bo",
         "first_opinion": {"reviewer": "ana", "choice": "not_a_baby_product"}},
        {**entry("walkers", "corrected", "stroller"), "reviewed_by": "bo",
         "first_opinion": {"reviewer": "ana", "choice": "walkers"}},
    ]  # fmt: skip
    table = agreement(entries)
    assert table["reviewers"] == [
        {"reviewer": "ana", "decided": 2, "confirmed": 1, "agreement_with_model": 0.5},
        {"reviewer": "bo", "decided": 3, "confirmed": 1, "agreement_with_model": 1 / 3},
    ]
    assert table["second_opinions"] == {"photos": 3, "agreed": 2, "agreement": 2 / 3}
    assert "2 of 3 second opinions agreed (67%)" in format_agreement(table)
    assert "2 of 3 photos decided by two reviewers" in agreement_html(table, "test")

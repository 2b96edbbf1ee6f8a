"""The evaluation numbers equal scikit-learn's; support is the real image count; the report is
complete and self-contained."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from model_build.evaluate import main
from model_build.evaluation.evaluate import evaluate_predictions
from model_build.evaluation.metrics import (
    classification_report,
    confusion_matrix,
    format_report,
    most_confused_pairs,
    top_k_accuracy,
)
from model_build.run_folder import read_history

LABELS = ["bathtub", "bouncer", "carrier", "stroller", "walkers"]
COUNTS = [30, 7, 12, 0, 21]  # imbalanced, one label with no val images at all


def _predictions(seed: int = 0, counts: list[int] = COUNTS) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = np.repeat(np.arange(len(LABELS)), counts)
    logits = rng.normal(0, 1, (len(y_true), len(LABELS)))
    logits[np.arange(len(y_true)), y_true] += 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probabilities, y_true


def test_report_equals_scikit_learn() -> None:
    probabilities, y_true = _predictions()
    y_pred = probabilities.argmax(1)
    ours = classification_report(y_true, y_pred, LABELS)
    theirs = skm.classification_report(
        y_true,
        y_pred,
        labels=range(len(LABELS)),
        target_names=LABELS,
        output_dict=True,
        zero_division=0,
    )
    for label in LABELS:
        for key in ("precision", "recall", "f1-score", "support"):
            assert ours["labels"][label][key] == pytest.approx(theirs[label][key]), (label, key)
    for key in ("precision", "recall", "f1-score", "support"):
        assert ours["weighted avg"][key] == pytest.approx(theirs["weighted avg"][key]), key
    # Macro averages as scikit-learn defines them by default: over the labels in the truth *or*
    # the predictions (stroller has no images but is predicted: it counts, with precision 0).
    assert 3 in set(y_pred)
    theirs_default = skm.classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    for key in ("precision", "recall", "f1-score"):
        assert ours["macro avg"][key] == pytest.approx(theirs_default["macro avg"][key]), key
    assert ours["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert (
        confusion_matrix(y_true, y_pred, 5) == skm.confusion_matrix(y_true, y_pred, labels=range(5))
    ).all()
    assert top_k_accuracy(probabilities, y_true, 3) == pytest.approx(
        skm.top_k_accuracy_score(y_true, probabilities, k=3, labels=range(5))
    )


def test_support_is_the_number_of_evaluated_images() -> None:
    probabilities, y_true = _predictions()
    report = classification_report(y_true, probabilities.argmax(1), LABELS)
    assert [report["labels"][label]["support"] for label in LABELS] == COUNTS
    assert report["macro avg"]["support"] == sum(COUNTS) == report["weighted avg"]["support"]


def test_macro_average_counts_predictions_of_labels_without_images() -> None:
    """A label with no images that the model still predicts is a source of wrong answers: the
    "labels present" average dropped it (0.820 instead of scikit-learn's 0.798 on the grocery
    photos). A label neither present nor predicted is left out, as scikit-learn does."""
    probabilities, y_true = _predictions()
    y_pred = probabilities.argmax(1)
    report = classification_report(y_true, y_pred, LABELS)
    precision = [report["labels"][label]["precision"] for label in LABELS]
    present = [i for i, count in enumerate(COUNTS) if count]
    assert report["macro avg"]["precision"] == pytest.approx(np.mean(precision))
    assert report["macro avg"]["precision"] < np.mean([precision[i] for i in present])
    assert report["macro avg"]["labels"] == len(LABELS)
    assert report["labels_absent"] == ["stroller"]
    assert report["labels"]["stroller"]["present"] is False
    text = format_report(report)
    assert re.search(r"stroller\s+no images evaluated", text)
    assert "1 without images: stroller" in text

    never = y_pred.copy()
    never[never == 3] = 0  # stroller neither present nor predicted: out of the average
    report = classification_report(y_true, never, LABELS)
    theirs = skm.classification_report(y_true, never, output_dict=True, zero_division=0)
    assert report["macro avg"]["labels"] == len(present)
    assert report["macro avg"]["f1-score"] == pytest.approx(theirs["macro avg"]["f1-score"])


def test_text_layout_matches_scikit_learn() -> None:
    # Every label present: scikit-learn's layout has no "absent" rows.
    probabilities, y_true = _predictions(counts=[30, 7, 12, 4, 21])
    y_pred = probabilities.argmax(1)
    ours = format_report(classification_report(y_true, y_pred, LABELS))
    theirs = skm.classification_report(
        y_true, y_pred, labels=range(5), target_names=LABELS, zero_division=0
    )
    squash = lambda text: [line.split() for line in text.strip().splitlines() if line.strip()]  # noqa: E731
    assert squash(ours) == squash(theirs)


def test_most_confused_pairs() -> None:
    matrix = np.array([[5, 3, 0], [1, 4, 0], [0, 7, 2]])
    pairs = most_confused_pairs(matrix, ["a", "b", "c"])
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("c", "b", 7),
        ("a", "b", 3),
        ("b", "a", 1),
    ]
    assert pairs[0]["share_of_true"] == pytest.approx(7 / 9)


def test_full_report_is_written(tmp_path: Path) -> None:
    probabilities, y_true = _predictions()
    images = np.random.default_rng(0).integers(0, 256, (len(y_true), 32, 32, 3), dtype=np.uint8)
    history_csv = tmp_path / "history.csv"
    history_csv.write_text(
        "epoch,accuracy,loss,val_accuracy,val_loss\n"
        "0,0.5,1.2,0.55,1.1\n1,0.7,0.8,0.72,0.9\n2,0.8,0.6,0.70,0.95\n"
    )
    metrics = evaluate_predictions(
        probabilities,
        y_true,
        LABELS,
        tmp_path,
        images=images,
        history=read_history(history_csv),
        target_precision=0.9,
    )
    assert metrics["best_epochs"] == {"val_accuracy": 2, "val_loss": 2}
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["accuracy"] == pytest.approx(metrics["accuracy"])
    assert saved["per_label"]["bouncer"]["support"] == 7
    assert saved["calibration"]["target_precision"] == 0.9
    assert 0 <= saved["calibration"]["coverage"] <= 1
    assert saved["calibration"]["temperature"] > 0
    report = tmp_path / "report"
    for name in (
        "training_curves.png",
        "confusion_matrix.png",
        "confusion_matrix_normalised.png",
        "predictions_grid.png",
        "most_confused.png",
        "reliability.png",
        "classification_report.txt",
    ):
        assert (report / name).stat().st_size > 0, name
    page = (report / "index.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 6
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert "href=" not in page  # nothing outside the file
    assert f"{metrics['accuracy']:.4f}" in page
    assert "review threshold" in page
    assert "the guarantee" in page  # target, confidence, calibration size, intervals, assumption
    assert "same photo source and label mix" in page


def test_shape_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        evaluate_predictions(np.ones((3, 2)) / 2, np.zeros(3, int), LABELS, tmp_path)


def test_cli_on_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path)]) == 2
    assert "no labels.json" in capsys.readouterr().err

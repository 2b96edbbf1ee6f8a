"""The evaluation numbers, on plain arrays (no model, no files): tested against scikit-learn.

Per-label precision / recall / F1 / support with macro and weighted averages (the reference's
Table 2), the confusion matrix, top-k accuracy (top-k as the worker ranks labels:
:func:`contracts.scoring.top_k`), the most-confused pairs and the best epochs of a history.
Support is the number of images actually evaluated per label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from contracts.scoring import top_k

MOST_CONFUSED: Final[int] = 10


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, label_count: int) -> np.ndarray:
    """Rows = true label, columns = predicted label, counts."""
    matrix = np.zeros((label_count, label_count), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Per-label precision, recall, F1 and support with accuracy, macro and weighted averages.

    Same definitions as ``sklearn.metrics.classification_report(y_true, y_pred,
    zero_division=0)`` with scikit-learn's default label set: the macro average is over every
    label that occurs in the truth *or* the predictions (``sklearn.utils.multiclass.unique_labels``)
    — a label with no photos that the model still predicts counts, with precision 0 — and labels
    in neither are left out (they have nothing to measure).
    """
    matrix = confusion_matrix(y_true, y_pred, len(labels))
    true_positive = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = np.divide(
        true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0
    )
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0
    )
    total = int(support.sum())
    present = support > 0
    # scikit-learn's labels=None: the labels of y_true and y_pred together (unique_labels), see
    # https://scikit-learn.org/stable/modules/generated/sklearn.metrics.classification_report.html
    averaged = present | (predicted > 0)
    per_label = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1-score": float(f1[i]),
            "support": int(support[i]),
            "present": bool(present[i]),
        }
        for i, label in enumerate(labels)
    }
    weights = support / total if total else np.zeros_like(precision)

    def present_mean(values: np.ndarray) -> float:
        # Averaging over labels present in the truth only dropped the wrong predictions of absent
        # labels (0.820 instead of scikit-learn's 0.798 on the grocery photos).
        return float(values[averaged].mean()) if averaged.any() else 0.0

    return {
        "labels": per_label,
        "labels_absent": [label for i, label in enumerate(labels) if not present[i]],
        "accuracy": float(true_positive.sum() / total) if total else 0.0,
        "macro avg": {
            "precision": present_mean(precision),
            "recall": present_mean(recall),
            "f1-score": present_mean(f1),
            "support": total,
            "labels": int(averaged.sum()),
            "definition": "scikit-learn macro average over labels in the truth or predictions",
        },
        "weighted avg": {
            "precision": float((precision * weights).sum()),
            "recall": float((recall * weights).sum()),
            "f1-score": float((f1 * weights).sum()),
            "support": total,
        },
    }


def format_report(report: dict[str, Any], digits: int = 2) -> str:
    """The text layout of the reference's Table 2 (scikit-learn's classification report)."""
    names = list(report["labels"])
    width = max([len(name) for name in names] + [len("weighted avg")])
    header = f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"
    lines = [header, ""]

    def row(name: str, values: dict[str, Any]) -> str:
        return (
            f"{name:>{width}} {values['precision']:>9.{digits}f} {values['recall']:>9.{digits}f} "
            f"{values['f1-score']:>9.{digits}f} {values['support']:>9}"
        )

    for name in names:
        values = report["labels"][name]
        if values.get("present", True):
            lines.append(row(name, values))
        else:
            lines.append(f"{name:>{width}} {'no images evaluated (not in the averages)':>39}")
    lines.append("")
    total = report["macro avg"]["support"]
    lines.append(
        f"{'accuracy':>{width}} {'':>9} {'':>9} {report['accuracy']:>9.{digits}f} {total:>9}"
    )
    lines.append(row("macro avg", report["macro avg"]))
    lines.append(row("weighted avg", report["weighted avg"]))
    absent = report.get("labels_absent") or []
    if absent:
        lines.append(
            f"\nmacro avg is over the {report['macro avg']['labels']} labels with images or "
            f"predictions (scikit-learn); {len(absent)} without images: {', '.join(absent)}"
        )
    return "\n".join(lines) + "\n"


def top_k_accuracy(probabilities: np.ndarray, y_true: np.ndarray, k: int = 3) -> float:
    if len(y_true) == 0:
        return 0.0
    top = top_k(probabilities, k)
    return float(np.mean((top == np.asarray(y_true)[:, None]).any(axis=1)))


def most_confused_pairs(
    matrix: np.ndarray, labels: Sequence[str], count: int = MOST_CONFUSED
) -> list[dict[str, Any]]:
    """Off-diagonal cells with the most images: true, predicted, count, share of the true label."""
    off_diagonal = matrix.copy()
    np.fill_diagonal(off_diagonal, 0)
    pairs = []
    for flat in np.argsort(-off_diagonal, axis=None, kind="stable")[:count]:
        true_index, predicted_index = np.unravel_index(flat, matrix.shape)
        images = int(off_diagonal[true_index, predicted_index])
        if images == 0:
            break
        row_total = int(matrix[true_index].sum())
        pairs.append(
            {
                "true": labels[true_index],
                "predicted": labels[predicted_index],
                "count": images,
                "share_of_true": images / row_total if row_total else 0.0,
            }
        )
    return pairs


def best_epochs(history: dict[str, list[float]]) -> dict[str, int]:
    """1-based epoch numbers of the best val accuracy and the lowest val loss."""
    best: dict[str, int] = {}
    if history.get("val_accuracy"):
        best["val_accuracy"] = int(np.argmax(history["val_accuracy"])) + 1
    if history.get("val_loss"):
        best["val_loss"] = int(np.argmin(history["val_loss"])) + 1
    return best

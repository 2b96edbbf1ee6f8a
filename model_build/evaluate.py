"""Evaluate a training run on its val set: report, figures, calibration, review threshold.

``python -m model_build.evaluate RUN_DIR [--data DIR] [--target-precision 0.98]`` (and
:func:`evaluate_run`, which training calls at the end of a run) writes:

* ``RUN_DIR/metrics.json``: accuracy, per-label precision / recall / F1 / support, macro and
  weighted averages, top-3 accuracy, the most-confused pairs, the confusion matrix and a
  ``calibration`` block (temperature, review threshold, target precision, coverage, ECE before and
  after) that ``publish`` copies into the artifact's manifest;
* ``RUN_DIR/report/``: ``classification_report.txt`` (the reference's Table 2 layout),
  ``training_curves.png``, ``confusion_matrix.png``, ``confusion_matrix_normalised.png``,
  ``predictions_grid.png``, ``most_confused.png``, ``reliability.png`` and a self-contained
  ``index.html`` (figures inlined as base64) that opens from disk.

Support is the number of val images actually evaluated per label (the reference printed 900 for
labels with 300 val images). The numbers are computed here with numpy and tested against
scikit-learn. The pieces below work on plain arrays (``evaluate_predictions``) so they can be
tested without a model; only :func:`evaluate_run` loads Keras and the data.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from model_build.calibration import apply_temperature, calibrate

REPORT_DIR: Final[str] = "report"
METRICS_FILE: Final[str] = "metrics.json"
REPORT_TEXT_FILE: Final[str] = "classification_report.txt"
GRID_IMAGES: Final[int] = 50
MOST_CONFUSED: Final[int] = 10
DEFAULT_TARGET_PRECISION: Final[float] = 0.98


# --- numbers -----------------------------------------------------------------------------------


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, label_count: int) -> np.ndarray:
    """Rows = true label, columns = predicted label, counts."""
    matrix = np.zeros((label_count, label_count), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Per-label precision, recall, F1 and support with accuracy, macro and weighted averages.

    Same definitions as ``sklearn.metrics.classification_report(..., zero_division=0)``.
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
        # A label with no evaluated images has no recall or F1 to speak of: averaging it in as 0
        # understated macro F1 (0.628 instead of 0.730 with 6 such labels of 43).
        return float(values[present].mean()) if present.any() else 0.0

    return {
        "labels": per_label,
        "labels_absent": [label for i, label in enumerate(labels) if not present[i]],
        "accuracy": float(true_positive.sum() / total) if total else 0.0,
        "macro avg": {
            "precision": present_mean(precision),
            "recall": present_mean(recall),
            "f1-score": present_mean(f1),
            "support": total,
            "labels": int(present.sum()),
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
            f"\nmacro avg is over the {len(names) - len(absent)} labels with images; "
            f"{len(absent)} absent: {', '.join(absent)}"
        )
    return "\n".join(lines) + "\n"


def top_k_accuracy(probabilities: np.ndarray, y_true: np.ndarray, k: int = 3) -> float:
    if len(y_true) == 0:
        return 0.0
    k = min(k, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
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


def read_history(path: Path) -> dict[str, list[float]]:
    """``history.csv`` (Keras CSVLogger) as columns; empty when the file is absent."""
    if not path.is_file():
        return {}
    with path.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                continue
    return columns


def best_epochs(history: dict[str, list[float]]) -> dict[str, int]:
    """1-based epoch numbers of the best val accuracy and the lowest val loss."""
    best: dict[str, int] = {}
    if history.get("val_accuracy"):
        best["val_accuracy"] = int(np.argmax(history["val_accuracy"])) + 1
    if history.get("val_loss"):
        best["val_loss"] = int(np.argmin(history["val_loss"])) + 1
    return best


# --- figures -----------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(history: dict[str, list[float]], path: Path) -> bool:
    if not history.get("accuracy") and not history.get("loss"):
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    best = best_epochs(history)
    for axis, metric in zip(axes, ("accuracy", "loss"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + metric)
            if values:
                epochs = np.arange(1, len(values) + 1)
                axis.plot(epochs, values, style, label=("val " if prefix else "train ") + metric)
        key = "val_accuracy" if metric == "accuracy" else "val_loss"
        if key in best:
            epoch = best[key]
            value = history[key][epoch - 1]
            axis.axvline(epoch, color="grey", linestyle=":", linewidth=1)
            axis.plot([epoch], [value], "o", color="black")
            axis.annotate(
                f"best epoch {epoch}: {value:.3f}",
                (epoch, value),
                textcoords="offset points",
                xytext=(-6, 8),
                ha="right",
            )
        axis.set_xlabel("epoch")
        axis.set_title(f"{metric}: train vs val")
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_confusion(
    matrix: np.ndarray, labels: Sequence[str], path: Path, *, normalise: bool
) -> None:
    plt = _pyplot()
    if normalise:
        totals = matrix.sum(axis=1, keepdims=True)
        values = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    else:
        values = matrix
    size = max(6.0, 0.55 * len(labels) + 3)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalise else None)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    axis.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("confusion matrix, row-normalised" if normalise else "confusion matrix (counts)")
    threshold = values.max() / 2 if values.size and values.max() > 0 else 0.5
    for (row, column), value in np.ndenumerate(values):
        if value:
            text = f"{value:.2f}" if normalise else str(int(value))
            colour = "white" if value > threshold else "black"
            axis.text(column, row, text, ha="center", va="center", fontsize=7, color=colour)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_prediction_grid(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    confidence: np.ndarray,
    labels: Sequence[str],
    path: Path,
    count: int = GRID_IMAGES,
) -> list[int]:
    """Up to ``count`` val images (evenly spread) titled predicted/true, green right, red wrong."""
    plt = _pyplot()
    picks = np.unique(np.linspace(0, len(images) - 1, min(count, len(images))).astype(int))
    columns = 10
    rows = max(1, int(np.ceil(len(picks) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.9, rows * 2.2))
    for axis in np.atleast_1d(axes).ravel():
        axis.axis("off")
    for axis, index in zip(np.atleast_1d(axes).ravel(), picks, strict=False):
        right = y_pred[index] == y_true[index]
        axis.imshow(images[index])
        axis.set_title(
            f"{labels[y_pred[index]]} {confidence[index]:.2f}\ntrue: {labels[y_true[index]]}",
            fontsize=7,
            color="green" if right else "red",
        )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return picks.tolist()


def plot_most_confused(pairs: list[dict[str, Any]], path: Path) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, max(2.0, 0.45 * len(pairs) + 1)))
    if pairs:
        names = [f"{p['true']} → {p['predicted']}" for p in pairs][::-1]
        counts = [p["count"] for p in pairs][::-1]
        axis.barh(names, counts, color="indianred")
        for position, value in enumerate(counts):
            axis.text(value, position, f" {value}", va="center")
    else:
        axis.text(0.5, 0.5, "no confusions on val", ha="center", va="center")
        axis.axis("off")
    axis.set_xlabel("val images (true → predicted)")
    axis.set_title("most-confused label pairs")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_reliability(calibration: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for axis, key, title in (
        (axes[0], "reliability_before", f"softmax (ECE {calibration['ece_before']:.3f})"),
        (
            axes[1],
            "reliability_after",
            f"T = {calibration['temperature']:.2f} (ECE {calibration['ece_after']:.3f})",
        ),
    ):
        bins = [b for b in calibration[key] if b["count"]]
        centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
        width = calibration[key][0]["upper"] - calibration[key][0]["lower"]
        axis.bar(
            centres,
            [b["accuracy"] for b in bins],
            width=width,
            edgecolor="black",
            alpha=0.7,
            label="accuracy",
        )
        axis.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            "o",
            color="darkorange",
            label="mean confidence",
        )
        axis.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        if key == "reliability_after":
            axis.axvline(
                calibration["review_threshold"],
                color="red",
                linestyle=":",
                label="review threshold",
            )
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence")
        axis.set_title(title)
        axis.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("accuracy")
    figure.suptitle("reliability diagram (val)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- everything for one set of predictions -----------------------------------------------------


def evaluate_predictions(
    probabilities: np.ndarray,
    y_true: np.ndarray,
    labels: Sequence[str],
    out_dir: Path,
    *,
    images: np.ndarray | None = None,
    history: dict[str, list[float]] | None = None,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    context: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute every number, draw every figure into ``out_dir/report/``, write metrics.json.

    ``calibration``: fitted elsewhere and measured on these predictions
    (:func:`model_build.thresholds.fit_and_measure`); ``None`` fits it on these predictions.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    if probabilities.shape != (len(y_true), len(labels)):
        raise ValueError(
            f"probabilities have shape {probabilities.shape}, "
            f"expected ({len(y_true)}, {len(labels)})"
        )
    if len(y_true) == 0:
        raise ValueError("no val images to evaluate")
    report_dir = out_dir / REPORT_DIR
    report_dir.mkdir(parents=True, exist_ok=True)
    y_pred = probabilities.argmax(axis=1)
    report = classification_report(y_true, y_pred, labels)
    matrix = confusion_matrix(y_true, y_pred, len(labels))
    pairs = most_confused_pairs(matrix, labels)
    if calibration is None:
        calibration = calibrate(probabilities, y_true, target_precision=target_precision)
    history = history or {}
    text = format_report(report)
    (report_dir / REPORT_TEXT_FILE).write_text(text)

    figures: dict[str, str] = {}
    if plot_training_curves(history, report_dir / "training_curves.png"):
        figures["training_curves"] = "training_curves.png"
    plot_confusion(matrix, labels, report_dir / "confusion_matrix.png", normalise=False)
    figures["confusion_matrix"] = "confusion_matrix.png"
    plot_confusion(matrix, labels, report_dir / "confusion_matrix_normalised.png", normalise=True)
    figures["confusion_matrix_normalised"] = "confusion_matrix_normalised.png"
    if images is not None and len(images):
        calibrated = apply_temperature(probabilities, calibration["temperature"])
        plot_prediction_grid(
            images,
            y_true,
            y_pred,
            calibrated.max(axis=1),
            labels,
            report_dir / "predictions_grid.png",
        )
        figures["predictions_grid"] = "predictions_grid.png"
    plot_most_confused(pairs, report_dir / "most_confused.png")
    figures["most_confused"] = "most_confused.png"
    plot_reliability(calibration, report_dir / "reliability.png")
    figures["reliability"] = "reliability.png"

    metrics = {
        "images": len(y_true),
        "labels": list(labels),
        "accuracy": report["accuracy"],
        "top3_accuracy": top_k_accuracy(probabilities, y_true, 3),
        "macro_avg": report["macro avg"],
        "labels_absent": report["labels_absent"],
        "weighted_avg": report["weighted avg"],
        "per_label": report["labels"],
        "most_confused": pairs,
        "confusion_matrix": matrix.tolist(),
        "best_epochs": best_epochs(history),
        "epochs": len(history.get("loss", [])),
        "calibration": calibration,
        "figures": figures,
        **(context or {}),
    }
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    write_html_report(metrics, text, report_dir)
    return metrics


# --- the HTML page -----------------------------------------------------------------------------


def _inline_png(path: Path) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{encoded}">'


def write_html_report(metrics: dict[str, Any], report_text: str, report_dir: Path) -> Path:
    """One self-contained page: numbers, tables and every figure inlined."""
    calibration = metrics["calibration"]
    evaluation = metrics.get("evaluation") or {}
    split = evaluation.get("split", "val")
    summary_rows = [
        ("evaluated on", _evaluated_on(evaluation)),
        (f"{split} images", metrics["images"]),
        ("accuracy", f"{metrics['accuracy']:.4f}"),
        ("top-3 accuracy", f"{metrics['top3_accuracy']:.4f}"),
        ("macro F1", f"{metrics['macro_avg']['f1-score']:.4f}"),
        ("weighted F1", f"{metrics['weighted_avg']['f1-score']:.4f}"),
        ("temperature", f"{calibration['temperature']:.4f}"),
        ("ECE before → after", f"{calibration['ece_before']:.4f} → {calibration['ece_after']:.4f}"),
        ("target precision", f"{calibration['target_precision']:.2f}"),
        ("review threshold (calibrated confidence)", f"{calibration['review_threshold']:.4f}"),
        ("precision at threshold", _maybe(calibration["precision_at_threshold"])),
        (f"coverage (auto-catalogued share of {split})", f"{calibration['coverage']:.4f}"),
        ("target reached", calibration["target_reached"]),
    ]
    if "method" in calibration:
        summary_rows[-2:-2] = [
            (
                "threshold method",
                f"{calibration['method']}: lowest threshold whose {calibration['confidence']:.0%}"
                " lower confidence bound on precision (fitted on val) reaches the target",
            ),
            ("precision lower bound on val", _maybe(calibration.get("precision_lower_bound"))),
            ("images needed above the threshold (all right)", calibration["minimum_images"]),
        ]
        point = calibration.get("point_estimate") or {}
        if point:
            summary_rows.append(
                (
                    "old rule (point estimate on val) for comparison",
                    f"threshold {point['review_threshold']:.4f}: {split} precision "
                    f"{_maybe(point['precision'])}, coverage {point['coverage']:.4f}",
                )
            )
    unfamiliar = metrics.get("unfamiliarity") or {}
    if unfamiliar:
        summary_rows.append(
            (
                f"unfamiliarity ({unfamiliar['method']}) vs {unfamiliar['unfamiliar_source']}",
                f"AUROC {unfamiliar['auroc']:.4f}, FPR at 95% familiar recall "
                f"{unfamiliar['fpr_at_95_familiar_recall']:.4f}; at the shipped threshold "
                f"{unfamiliar['familiar_flagged_at_threshold']:.1%} of {split} and "
                f"{unfamiliar['unfamiliar_flagged_at_threshold']:.1%} of unfamiliar photos go to "
                "review (reason unfamiliar)",
            )
        )
    for key, value in (metrics.get("val") or {}).items():
        if key != "images":
            summary_rows.append((f"val {key.replace('_', ' ')} (fit set)", f"{value:.4f}"))
    for key in ("model", "weights", "best_val_accuracy", "run_dir"):
        if key in metrics:
            summary_rows.append((key.replace("_", " "), metrics[key]))
    best = metrics.get("best_epochs") or {}
    if best:
        summary_rows.append(("best epochs", ", ".join(f"{k}: {v}" for k, v in best.items())))
    summary = "\n".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in summary_rows
    )
    pairs = (
        "\n".join(
            f"<tr><td>{html.escape(p['true'])}</td><td>{html.escape(p['predicted'])}</td>"
            f"<td>{p['count']}</td><td>{p['share_of_true']:.2%}</td></tr>"
            for p in metrics["most_confused"]
        )
        or '<tr><td colspan="4">no confusions</td></tr>'
    )
    captions = {
        "training_curves": "Training curves, train vs val (best epochs marked)",
        "confusion_matrix": "Confusion matrix (counts)",
        "confusion_matrix_normalised": "Confusion matrix, row-normalised (recall on the diagonal)",
        "predictions_grid": (
            "Val images: predicted (calibrated confidence) and true label; green right, red wrong"
        ),
        "most_confused": "Most-confused label pairs",
        "reliability": "Reliability diagram before and after temperature scaling",
    }
    figures = "\n".join(
        f"<figure>{_inline_png(report_dir / name)}<figcaption>{html.escape(captions.get(key, key))}"
        "</figcaption></figure>"
        for key, name in metrics["figures"].items()
        if (report_dir / name).is_file()
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Model evaluation</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; }}
figure {{ margin: 2em 0; }} img {{ max-width: 100%; }}
figcaption {{ color: #555; font-size: 0.9em; }}
</style></head><body>
<h1>Model evaluation ({html.escape(split)} set)</h1>
<p>Images below the review threshold are marked NEEDS_REVIEW by the worker; the rest are
catalogued automatically. Calibrated confidence = max softmax(log(p) / T).</p>
<h2>Summary</h2>
<table>{summary}</table>
<h2>Classification report</h2>
<pre>{html.escape(report_text)}</pre>
<h2>Most-confused pairs</h2>
<table><tr><th>true</th><th>predicted</th><th>images</th><th>share of true label</th></tr>
{pairs}</table>
<h2>Figures</h2>
{figures}
</body></html>
"""
    path = report_dir / "index.html"
    path.write_text(page)
    return path


def _evaluated_on(evaluation: dict[str, Any]) -> str:
    split = evaluation.get("split", "val")
    if split == "val":
        return "val: the data the checkpoint, temperature and threshold were fitted on (optimistic)"
    what = "test/" if split == "test" else "the held-out part of val (never trained nor fitted on)"
    sha = evaluation.get("data_sha256", "")
    return f"{what}; content sha256 {sha[:16]}…" if sha else what


def _maybe(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


# --- a run folder ------------------------------------------------------------------------------


def resolve_data_dir(run_dir: Path, data_dir: Path | None = None) -> Path:
    """``--data``, else the dataset the run was trained on (config.json).

    A relative path in config.json is relative to where training ran: the current folder, or
    else the repository root (``make`` runs everything from there).
    """
    if data_dir is not None:
        return Path(data_dir)
    config = _read_json(run_dir / "config.json")
    # train.py records the folder it actually used (the generated sample data when --data was
    # not given) in config["extra"]["data_dir"]; "data" is the --data argument itself.
    for section in (config.get("extra") or {}, config):
        candidates = [section.get("data_dir"), section.get("data")]
        if isinstance(section.get("dataset"), dict):
            candidates.append(section["dataset"].get("root"))
        for candidate in candidates:
            if candidate:
                path = Path(candidate)
                repository_path = Path(__file__).resolve().parent.parent / path
                if not path.is_absolute() and not path.exists() and repository_path.exists():
                    return repository_path
                return path
    raise ValueError(
        f"cannot tell which dataset {run_dir} was trained on (config.json names none); pass --data"
    )


def load_split_images(
    run_dir: Path, split: str, *, data_dir: Path | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images and label indices of ``split`` of the run's dataset, via the prepare cache.

    ``limit`` keeps a fixed random subset of that many files (chosen before decoding, so asking
    for 200 of 16,800 training images decodes and holds only 200).
    """
    from model_build.prepare import prepare_split

    config = _read_json(run_dir / "config.json")
    dataset = run_dataset(run_dir, data_dir)
    samples = dataset.splits.get(split, ())
    if limit is not None and len(samples) > limit:
        keep = np.random.default_rng(0).choice(len(samples), size=limit, replace=False)
        kept = {samples[i].path for i in keep}
        dataset = dataset.without({s.path for s in samples if s.path not in kept})
    cache_dir = config.get("cache_dir")
    prepared = prepare_split(dataset, split, cache_dir=Path(cache_dir) if cache_dir else None)
    return prepared.pixels, prepared.label_indices


def run_dataset(run_dir: Path, data_dir: Path | None = None):
    """The run's dataset with the splits training used (val, and the held-out part of it)."""
    from model_build.dataset import discover
    from model_build.holdout import with_holdout

    config = _read_json(run_dir / "config.json")
    labels = _read_json(run_dir / "labels.json")
    seed = int(config.get("seed") or 0)
    dataset = discover(
        resolve_data_dir(run_dir, data_dir),
        val_fraction=float(config.get("val_fraction") or 0.2),
        seed=seed,
    )
    if labels and list(dataset.labels) != list(labels):
        raise ValueError(
            f"the dataset's labels {list(dataset.labels)} differ from the run's "
            f"labels.json {labels}"
        )
    # Runs from before held-out evaluation have no holdout_fraction: their val was all trained on.
    return with_holdout(dataset, float(config.get("holdout_fraction") or 0.0), seed)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def evaluate_run(
    run_dir: Path,
    *,
    data_dir: Path | None = None,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    threshold_confidence: float | None = None,
    unfamiliar_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``run_dir/model.keras``; return (and write) the metrics.

    Temperature and review threshold are fitted on val; every reported number is measured on the
    evaluation split (``test/``, else the held-out part of val; see :mod:`model_build.holdout`).
    """
    run_dir = Path(run_dir)
    labels = _read_json(run_dir / "labels.json")
    if not labels:
        raise ValueError(f"{run_dir} has no labels.json: is it a training run folder?")
    if not (run_dir / "model.keras").is_file():
        raise ValueError(f"{run_dir} has no model.keras")

    import keras

    from model_build.export import keras_predict
    from model_build.holdout import evaluation_split, split_content_hash
    from model_build.thresholds import DEFAULT_CONFIDENCE, fit_and_measure

    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    dataset = run_dataset(run_dir, data_dir)
    split = evaluation_split(dataset)
    fit_images, y_fit = load_split_images(run_dir, "val", data_dir=data_dir)
    fit_probabilities = keras_predict(model, fit_images)
    if split == "val":
        print("evaluate: no test/ and nothing held out: numbers are on the data they were fit on")
        images, y_true, probabilities = fit_images, y_fit, fit_probabilities
    else:
        images, y_true = load_split_images(run_dir, split, data_dir=data_dir)
        probabilities = keras_predict(model, images)
    calibration = fit_and_measure(
        fit_probabilities,
        y_fit,
        probabilities,
        y_true,
        target_precision=target_precision,
        confidence=threshold_confidence or DEFAULT_CONFIDENCE,
        evaluated_on=split,
    )
    from model_build.unfamiliarity import evaluate_unfamiliarity

    unfamiliarity = evaluate_unfamiliarity(
        model, run_dir, data_dir, fit_images, images, unfamiliar_dir=unfamiliar_dir
    )
    config = _read_json(run_dir / "config.json")
    fit_report = classification_report(y_fit, fit_probabilities.argmax(1), labels)
    evaluation = {
        "split": split,
        "images": len(y_true),
        "data_sha256": split_content_hash(dataset, split),
        "fit_split": "val",
        "fit_images": len(y_fit),
        "fit_data_sha256": split_content_hash(dataset, "val"),
        "held_out": split != "val",
    }
    metrics = evaluate_predictions(
        probabilities,
        y_true,
        labels,
        run_dir,
        images=images,
        history=read_history(run_dir / "history.csv"),
        target_precision=target_precision,
        calibration=calibration,
        context={
            "model": config.get("model"),
            "weights": config.get("weights"),
            "evaluation": evaluation,
            **({"unfamiliarity": unfamiliarity} if unfamiliarity else {}),
            "val": {
                "images": len(y_fit),
                "accuracy": fit_report["accuracy"],
                "top3_accuracy": top_k_accuracy(fit_probabilities, y_fit, 3),
                "macro_f1": fit_report["macro avg"]["f1-score"],
            },
        },
    )
    calibration = metrics["calibration"]
    print(format_report(classification_report(y_true, probabilities.argmax(1), labels)), end="")
    print(
        f"evaluate: accuracy {metrics['accuracy']:.4f}, top-3 {metrics['top3_accuracy']:.4f}, "
        f"T {calibration['temperature']:.3f}, ECE {calibration['ece_before']:.4f} → "
        f"{calibration['ece_after']:.4f}, review threshold {calibration['review_threshold']:.4f} "
        f"(held-out coverage {calibration['coverage']:.1%}, precision "
        f"{_maybe(calibration['precision_at_threshold'])}, target {target_precision} at "
        f"{calibration.get('confidence', 0):.0%} confidence) on {len(y_true)} {split} images; "
        f"report: {run_dir / REPORT_DIR / 'index.html'}"
    )
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_build.evaluate",
        description="Evaluate a training run on val: report, figures, calibration, threshold.",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: run's)")
    parser.add_argument(
        "--target-precision",
        type=float,
        default=DEFAULT_TARGET_PRECISION,
        help="precision the auto-catalogued val images must reach (default 0.98)",
    )
    parser.add_argument(
        "--threshold-confidence",
        type=float,
        default=None,
        help="confidence that the target precision holds (Clopper-Pearson bound; default 0.95)",
    )
    parser.add_argument(
        "--unfamiliar",
        type=Path,
        default=None,
        help="folder of photos unlike every label, for the unfamiliarity report "
        "(default: generated drawings)",
    )
    args = parser.parse_args(argv)
    try:
        evaluate_run(
            args.run_dir,
            data_dir=args.data,
            target_precision=args.target_precision,
            threshold_confidence=args.threshold_confidence,
            unfamiliar_dir=args.unfamiliar,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"evaluate failed: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

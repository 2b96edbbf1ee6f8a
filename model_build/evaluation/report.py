"""The evaluation report: figures (matplotlib, Agg) and one self-contained HTML page.

Everything is drawn into ``<run>/report/``: ``training_curves.png`` (the run's only curves
figure), ``confusion_matrix.png``, ``confusion_matrix_normalised.png``, ``predictions_grid.png``,
``most_confused.png``, ``reliability.png``, ``classification_report.txt`` and ``index.html``
(figures inlined as base64, opens from disk).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from model_build.evaluation.metrics import best_epochs
from model_build.evaluation.review_agreement import agreement_html

GRID_IMAGES: Final[int] = 50
REPORT_TEXT_FILE: Final[str] = "classification_report.txt"


def _pyplot() -> Any:
    import matplotlib  # noqa: PLC0415 — matplotlib loads only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 — matplotlib loads only when a figure is drawn

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
    figure.suptitle(f"reliability diagram ({calibration.get('evaluated_on', 'val')})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def draw_figures(
    report_dir: Path,
    *,
    matrix: np.ndarray,
    labels: Sequence[str],
    pairs: list[dict[str, Any]],
    calibration: dict[str, Any],
    history: dict[str, list[float]],
    images: np.ndarray | None = None,
    y_true: np.ndarray | None = None,
    y_pred: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
) -> dict[str, str]:
    """Every figure of the report into ``report_dir``; returns ``{key: file name}``."""
    figures: dict[str, str] = {}
    if plot_training_curves(history, report_dir / "training_curves.png"):
        figures["training_curves"] = "training_curves.png"
    plot_confusion(matrix, labels, report_dir / "confusion_matrix.png", normalise=False)
    figures["confusion_matrix"] = "confusion_matrix.png"
    plot_confusion(matrix, labels, report_dir / "confusion_matrix_normalised.png", normalise=True)
    figures["confusion_matrix_normalised"] = "confusion_matrix_normalised.png"
    if images is not None and len(images):
        plot_prediction_grid(
            images, y_true, y_pred, confidence, labels, report_dir / "predictions_grid.png"
        )
        figures["predictions_grid"] = "predictions_grid.png"
    plot_most_confused(pairs, report_dir / "most_confused.png")
    figures["most_confused"] = "most_confused.png"
    plot_reliability(calibration, report_dir / "reliability.png")
    figures["reliability"] = "reliability.png"
    return figures


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
    if calibration.get("assumption"):
        summary_rows[0:0] = [("the guarantee", _guarantee(calibration))]
        summary_rows[-2:-2] = [
            ("threshold method", calibration["method"]),
            ("threshold grid", calibration.get("grid") or "—"),
            (
                "calibration photos (not flagged unfamiliar)",
                f"{calibration['calibration_images']} ({calibration['eligible_images']})",
            ),
            ("precision lower bound on calibration", _maybe(calibration["precision_lower_bound"])),
            ("images needed above the threshold (all right)", calibration["minimum_images"]),
        ]
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
{_review_section(metrics)}<h2>Figures</h2>
{figures}
</body></html>
"""
    path = report_dir / "index.html"
    path.write_text(page)
    return path


def _review_section(metrics: dict[str, Any]) -> str:
    """Model vs reviewer agreement per category, when the run trained on reviewed photos."""
    table = metrics.get("review_agreement")
    if not table:
        return ""

    return agreement_html(table, table.get("source", "the catalogue"))


def _guarantee(calibration: dict[str, Any]) -> str:
    """The promise in one sentence, with its intervals and its assumption."""
    c = calibration
    certified = (
        f"review threshold {c['review_threshold']:.3f} certifies precision ≥ "
        f"{c['target_precision']} with {c['confidence']:.0%} confidence"
        if c["target_reached"]
        else f"precision {c['target_precision']} at {c['confidence']:.0%} confidence could not "
        "be certified: everything goes to review"
    )
    coverage = c.get("coverage_interval") or {}
    precision = c.get("precision_interval") or {}
    measured = (
        f"; on {c['evaluation_images']} {c['evaluated_on']} photos coverage {c['coverage']:.1%} "
        f"[{coverage.get('low', 0):.1%}, {coverage.get('high', 1):.1%}]"
    )
    if c.get("precision_at_threshold") is not None:
        measured += (
            f", precision {c['precision_at_threshold']:.3f} "
            f"[{precision.get('low', 0):.3f}, {precision.get('high', 1):.3f}]"
        )
    return (
        f"{certified} ({c['calibration_images']} calibration photos){measured}. "
        + (c["assumption"])
    )


def _evaluated_on(evaluation: dict[str, Any]) -> str:
    split = evaluation.get("split", "val")
    if not evaluation.get("held_out", split not in ("val", "calibration")):
        return f"{split}: the photos temperature and threshold were fitted on (optimistic)"
    what = (
        "test/"
        if split == "test"
        else f"{split}: photos nothing was trained, selected or fitted on"
    )
    sha = evaluation.get("data_sha256", "")
    return f"{what}; content sha256 {sha[:16]}…" if sha else what


def _maybe(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"

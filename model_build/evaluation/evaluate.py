"""Evaluate a trained model: numbers, report, calibration and review threshold.

Two ways in, one computation:

* :func:`evaluate` — what ``train.run`` calls with the model it holds and the splits it prepared
  (nothing is reloaded, rediscovered or decoded again);
* ``python -m model_build.evaluate RUN_DIR [--data DIR] [--target-precision 0.98]``
  (:func:`evaluate_run`) — loads ``model.keras`` and rebuilds the run's splits from the content
  hashes recorded in ``data.json`` (:func:`model_build.data.prepare.recorded_split`), so it
  evaluates
  *the same* images even if the dataset folder changed since.

Temperature and review threshold are fitted on val; every reported number is measured on the
held-out split (``test/``, else the held-out part of val; :mod:`model_build.data.splits`). The
numbers are :mod:`model_build.evaluation.metrics`, the figures and the HTML page
:mod:`model_build.evaluation.report`;
``metrics.json`` (with the ``calibration`` block ``publish`` copies into the manifest) and
``report/`` are written into the run folder (:mod:`model_build.run_folder`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contracts.artifact import Calibration
from model_build.data.prepare import run_split
from model_build.data.splits import CALIBRATION, check_roles, recorded_name, reported_split
from model_build.evaluation.calibration import (
    DEFAULT_CONFIDENCE,
    DEFAULT_TARGET_PRECISION,
    apply_temperature,
    calibrate,
    quality,
)
from model_build.evaluation.metrics import (
    best_epochs,
    classification_report,
    confusion_matrix,
    format_report,
    most_confused_pairs,
    top_k_accuracy,
)
from model_build.evaluation.report import REPORT_TEXT_FILE, draw_figures, write_html_report
from model_build.evaluation.unfamiliarity import evaluate_unfamiliarity
from model_build.run_folder import RunFolder


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
    calibration: Calibration | None = None,
) -> dict[str, Any]:
    """Compute every number, draw every figure into ``out_dir/report/``, write metrics.json.

    ``calibration``: fitted on the calibration photos and measured on these predictions
    (:func:`model_build.evaluation.calibration.calibrate`); ``None`` fits it on these very
    predictions (the report then says so).
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
    run = RunFolder(out_dir)
    report_dir = run.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    y_pred = probabilities.argmax(axis=1)
    report = classification_report(y_true, y_pred, labels)
    matrix = confusion_matrix(y_true, y_pred, len(labels))
    pairs = most_confused_pairs(matrix, labels)
    if calibration is None:
        calibration = calibrate(
            probabilities,
            y_true,
            probabilities,
            y_true,
            target_precision=target_precision,
            calibrated_on="evaluated photos",
            evaluated_on="the same photos",
        )
    calibration_block = {
        **calibration.model_dump(mode="json"),
        **quality(probabilities, y_true, calibration.temperature),
    }
    history = history or {}
    text = format_report(report)
    (report_dir / REPORT_TEXT_FILE).write_text(text)

    confidence = None
    if images is not None and len(images):
        confidence = apply_temperature(probabilities, calibration.temperature).max(axis=1)
    figures = draw_figures(
        report_dir,
        matrix=matrix,
        labels=labels,
        pairs=pairs,
        calibration=calibration_block,
        history=history,
        images=images,
        y_true=y_true,
        y_pred=y_pred,
        confidence=confidence,
    )

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
        "calibration": calibration_block,
        "figures": figures,
        **(context or {}),
    }
    run.write_metrics(metrics)
    write_html_report(metrics, text, report_dir)
    return metrics


@dataclass(frozen=True)
class Evaluation:
    """What evaluation hands on: the metrics, the calibration (typed), the model's calibration
    photo probabilities (export checks the TFLite file against these instead of predicting
    again) and the unfamiliarity flags (int8's threshold walk leaves the same photos out)."""

    metrics: dict[str, Any]
    calibration: Calibration
    val_probabilities: np.ndarray
    unfamiliarity: Any = None  # model_build.evaluation.unfamiliarity.Unfamiliarity | None


def photos_hash(split, labels) -> str:
    """ "The same photos": sha256 of the sorted ``label<TAB>file sha256`` lines of a prepared
    split (the rule of :func:`model_build.data.splits.split_content_hash`)."""
    lines = sorted(
        f"{labels[int(i)]}\t{digest}"
        for digest, i in zip(split.sha256, split.label_indices, strict=True)
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def evaluate(
    model: Any,
    run: RunFolder,
    *,
    labels: list[str],
    val,
    evaluation_name: str,
    evaluation=None,
    train=None,
    context: dict[str, Any] | None = None,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    threshold_confidence: float = DEFAULT_CONFIDENCE,
    unfamiliar_dir: Path | None = None,
    data_dir: Path | None = None,
    batch_size: int = 32,
    verbose: int = 0,
) -> Evaluation:
    """Evaluate ``model`` (in memory) on prepared splits; write metrics.json and report/.

    ``val`` (a :class:`model_build.data.prepare.PreparedSplit`) fits temperature and threshold;
    ``evaluation`` (the split named ``evaluation_name``; ``None`` when nothing is held out) reports;
    ``train`` (up to 2,000 of its images) fits the unfamiliarity score
    (:mod:`model_build.evaluation.unfamiliarity`; ``None``: rebuilt from the run folder).
    """
    from model_build.data.pipeline import predict_outputs  # noqa: PLC0415 — model_build.data.pipeline loads TensorFlow; this module stays light without it
    from model_build.training.model import FEATURES, PROBABILITIES, parts_of  # noqa: PLC0415 — model_build.training.model loads TensorFlow; this module stays light without it

    print(
        f"evaluate: predicting {len(val)} val images"
        + (f" and {len(evaluation)} {evaluation_name} images" if evaluation is not None else ""),
        flush=True,
    )
    # One pass per photo gives the probabilities and the pooled features (unfamiliarity).
    classifier = parts_of(model).with_features()
    fit_outputs = predict_outputs(
        classifier, val.pixels, batch_size=batch_size, verbose=verbose, label="evaluate val"
    )
    fit_probabilities = fit_outputs[PROBABILITIES]
    y_fit = val.label_indices
    held_out = evaluation is not None
    if evaluation is None:
        print("evaluate: no test/ and nothing held out: numbers are on the data they were fit on")
        evaluation, outputs = val, fit_outputs
    else:
        outputs = predict_outputs(
            classifier,
            evaluation.pixels,
            batch_size=batch_size,
            verbose=verbose,
            label=f"evaluate {evaluation_name}",
        )
    probabilities = outputs[PROBABILITIES]
    y_true = evaluation.label_indices
    # The unfamiliarity cut first: the worker sends flagged photos to review whatever their
    # confidence, so the threshold is certified on the photos the flag lets through.
    unfamiliarity = evaluate_unfamiliarity(
        model,
        run.path,
        data_dir,
        val.pixels,
        evaluation.pixels,
        unfamiliar_dir=unfamiliar_dir,
        train=train,
        val_features=fit_outputs.get(FEATURES),
        eval_features=outputs.get(FEATURES),
    )
    calibration = calibrate(
        fit_probabilities,
        y_fit,
        probabilities,
        y_true,
        target_precision=target_precision,
        confidence=threshold_confidence,
        fit_unfamiliar=None if unfamiliarity is None else unfamiliarity.calibration_flags,
        eval_unfamiliar=None if unfamiliarity is None else unfamiliarity.evaluation_flags,
        evaluated_on=evaluation_name,
    )
    fit_report = classification_report(y_fit, fit_probabilities.argmax(1), labels)
    summary = {
        "split": evaluation_name,
        "images": len(y_true),
        "data_sha256": photos_hash(evaluation, labels),
        "fit_split": CALIBRATION,
        "fit_images": len(y_fit),
        "fit_data_sha256": photos_hash(val, labels),
        "held_out": held_out,
    }
    metrics = evaluate_predictions(
        probabilities,
        y_true,
        labels,
        run.path,
        images=evaluation.pixels,
        history=run.history_columns(),
        target_precision=target_precision,
        calibration=calibration,
        context={
            **(context or {}),
            "evaluation": summary,
            **({"unfamiliarity": unfamiliarity.report} if unfamiliarity else {}),
            "val": {
                "images": len(y_fit),
                "accuracy": fit_report["accuracy"],
                "top3_accuracy": top_k_accuracy(fit_probabilities, y_fit, 3),
                "macro_f1": fit_report["macro avg"]["f1-score"],
            },
        },
    )
    print(format_report(classification_report(y_true, probabilities.argmax(1), labels)), end="")
    block = metrics["calibration"]
    print(
        f"evaluate: accuracy {metrics['accuracy']:.4f}, top-3 {metrics['top3_accuracy']:.4f}, "
        f"T {calibration.temperature:.3f}, ECE {block['ece_before']:.4f} → "
        f"{block['ece_after']:.4f}; {guarantee_line(calibration)}; "
        f"report: {run.report_dir / 'index.html'}"
    )
    return Evaluation(
        metrics=metrics,
        calibration=calibration,
        val_probabilities=fit_probabilities,
        unfamiliarity=unfamiliarity,
    )


def guarantee_line(calibration: Calibration) -> str:
    """The promise in one line: target, confidence, calibration size, held-out figures."""
    c = calibration
    if not c.target_reached:
        return (
            f"target precision {c.target_precision} at {c.confidence:.0%} confidence NOT "
            f"certified on {c.calibration_images} calibration photos (needs ≥ {c.minimum_images} "
            "auto-catalogued, all right): everything goes to review"
        )
    precision = c.precision_interval
    coverage = c.coverage_interval
    return (
        f"review threshold {c.review_threshold:.3f} certifies precision ≥ {c.target_precision} "
        f"with {c.confidence:.0%} confidence on {c.calibration_images} calibration photos; on "
        f"{c.evaluation_images} {c.evaluated_on} photos coverage {c.coverage:.1%} "
        f"[{coverage.low:.1%}, {coverage.high:.1%}], precision "
        f"{_maybe(c.precision_at_threshold)}"
        + (f" [{precision.low:.3f}, {precision.high:.3f}]" if c.precision_at_threshold else "")
    )


def _maybe(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def evaluate_run(
    run_dir: Path,
    *,
    data_dir: Path | None = None,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    threshold_confidence: float = DEFAULT_CONFIDENCE,
    unfamiliar_dir: Path | None = None,
) -> dict[str, Any]:
    """Standalone: evaluate ``run_dir/model.keras`` on the run's recorded splits.

    The exported files and ``export.json`` of an earlier evaluation are removed: int8's
    calibration was made with the old target and temperature, so the run must be exported again
    (``python -m model_build.export RUN``) before it can be published — it cannot go stale."""
    run = RunFolder(run_dir)
    labels = run.read_labels()
    if not run.model_file.is_file():
        raise ValueError(f"{run.path} has no {run.model_file.name}")
    record = run.read_data()
    # A photo in two roles (a checkpoint chosen on calibration photos...) voids every number.
    check_roles({split: recorded.sha256 for split, recorded in record.splits.items()})
    name = reported_split(record.splits)
    fitted_on = recorded_name(record.splits, CALIBRATION) or CALIBRATION
    val = run_split(run, fitted_on, data_dir=data_dir, record=record)
    evaluation = (
        None if name == fitted_on else run_split(run, name, data_dir=data_dir, record=record)
    )

    import keras  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it

    model = keras.models.load_model(run.model_file, compile=False)
    config = run.config_dict()
    run.remove_export()
    return evaluate(
        model,
        run,
        labels=labels,
        val=val,
        evaluation_name=name,
        evaluation=evaluation,
        context={"model": config.get("model"), "weights": config.get("weights")},
        target_precision=target_precision,
        threshold_confidence=threshold_confidence,
        unfamiliar_dir=unfamiliar_dir,
        data_dir=data_dir,
    ).metrics

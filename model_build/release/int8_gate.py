"""Whether the int8 model may be published: its own calibration, judged against float32's.

int8 outputs are not float32's, so int8 gets its own temperature and certified threshold, fitted
by the same rule on the same calibration photos with the same target and confidence
(:func:`model_build.evaluation.calibration.calibrate`, the one owner), with the unfamiliarity
flags int8's own features give — what the worker running int8 would do. The gate then compares
the two variants *as the worker uses them*, on the held-out photos:

* **coverage** (share auto-catalogued) may drop by at most :data:`MAX_COVERAGE_DROP`; an int8
  model that auto-catalogues nothing is refused outright (the old gate skipped its precision
  check when no photo reached the threshold and published a useless file);
* **precision** of what it auto-catalogues may drop by at most :data:`MAX_PRECISION_DROP`;
* **accuracy** may drop by at most :data:`MAX_ACCURACY_DROP`.

Top-1 agreement with float32 was the first gate (≥ 99 %); it rejected int8 on real photos while
its accuracy differed by −0.2…+0.04 points. It is still recorded, for information.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from contracts.artifact import Calibration
from model_build.evaluation.calibration import calibrate

MAX_ACCURACY_DROP: Final[float] = 0.01
MAX_PRECISION_DROP: Final[float] = 0.01
MAX_COVERAGE_DROP: Final[float] = 0.02


def _summary(probabilities: np.ndarray, labels: np.ndarray, calibration: Calibration) -> dict:
    return {
        "accuracy": float(np.mean(probabilities.argmax(1) == labels)) if len(labels) else 0.0,
        "coverage": calibration.coverage,
        "precision_at_threshold": calibration.precision_at_threshold,
        "review_threshold": calibration.review_threshold,
        "temperature": calibration.temperature,
    }


def gate_int8(
    *,
    float32: Calibration,
    float_eval: np.ndarray,
    int8_fit: np.ndarray,
    int8_eval: np.ndarray,
    fit_labels: np.ndarray,
    eval_labels: np.ndarray,
    int8_fit_unfamiliar: np.ndarray | None = None,
    int8_eval_unfamiliar: np.ndarray | None = None,
    max_accuracy_drop: float = MAX_ACCURACY_DROP,
    max_precision_drop: float = MAX_PRECISION_DROP,
    max_coverage_drop: float = MAX_COVERAGE_DROP,
) -> dict[str, Any]:
    """The decision, its reasons, both variants' held-out figures and int8's own calibration.

    ``float32`` is the published float32 calibration (evaluation's); int8's is fitted here with
    its target and confidence, so the two cannot disagree on them.
    """
    fit_labels = np.asarray(fit_labels, dtype=np.int64)
    eval_labels = np.asarray(eval_labels, dtype=np.int64)
    evaluated_on = float32.evaluated_on or "held_out"
    int8_calibration = calibrate(
        int8_fit,
        fit_labels,
        int8_eval,
        eval_labels,
        target_precision=float32.target_precision,
        confidence=float32.confidence or 0.95,
        fit_unfamiliar=int8_fit_unfamiliar,
        eval_unfamiliar=int8_eval_unfamiliar,
        calibrated_on=float32.calibrated_on or "calibration",
        evaluated_on=evaluated_on,
        variant="int8",
    )
    f32 = _summary(float_eval, eval_labels, float32)
    i8 = _summary(int8_eval, eval_labels, int8_calibration)
    reasons = []
    if f32["accuracy"] - i8["accuracy"] > max_accuracy_drop:
        reasons.append(
            f"accuracy {i8['accuracy']:.4f} vs float32 {f32['accuracy']:.4f} on {evaluated_on} "
            f"(more than {max_accuracy_drop:.0%} lower)"
        )
    if i8["coverage"] == 0 and f32["coverage"] > 0:
        reasons.append(
            f"int8 auto-catalogues nothing on {evaluated_on} (float32 {f32['coverage']:.1%})"
        )
    elif f32["coverage"] - i8["coverage"] > max_coverage_drop:
        reasons.append(
            f"coverage {i8['coverage']:.1%} vs float32 {f32['coverage']:.1%} on {evaluated_on} "
            f"(more than {max_coverage_drop:.0%} lower)"
        )
    if f32["precision_at_threshold"] is not None and i8["precision_at_threshold"] is not None:
        drop = f32["precision_at_threshold"] - i8["precision_at_threshold"]
        if drop > max_precision_drop:
            reasons.append(
                f"auto-catalogued precision {i8['precision_at_threshold']:.4f} vs float32 "
                f"{f32['precision_at_threshold']:.4f} on {evaluated_on} "
                f"(more than {max_precision_drop:.0%} lower)"
            )
    return {
        "int8_published": not reasons,
        "int8_gate": "held-out coverage, auto-catalogued precision and accuracy within the "
        "margins of float32's, each variant at its own certified threshold",
        "int8_rejected_because": "; ".join(reasons) or None,
        "int8_max_accuracy_drop": max_accuracy_drop,
        "int8_max_precision_drop": max_precision_drop,
        "int8_max_coverage_drop": max_coverage_drop,
        "evaluated_on": evaluated_on,
        "float32_held_out": f32,
        "int8_held_out": i8,
        "int8_agreement_held_out": float(np.mean(float_eval.argmax(1) == int8_eval.argmax(1)))
        if len(eval_labels)
        else 1.0,
        "int8_calibration": int8_calibration.model_dump(mode="json"),
    }

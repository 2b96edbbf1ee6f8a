"""Calibration: temperature scaling, expected calibration error and the review threshold.

Pure numpy/scipy on arrays of probabilities, so the numbers can be checked without a model.

* **Temperature scaling** (Guo et al., 2017) fits one scalar ``T`` on the val set by minimising
  the negative log-likelihood of ``softmax(log(p) / T)``. The model outputs softmax
  probabilities, so ``log(p)`` are its logits up to a per-image constant, which softmax ignores.
  ``T > 1`` softens an over-confident model; top-1 never changes.
* **ECE** bins the top-1 confidence into equal-width bins and averages ``|accuracy - confidence|``
  weighted by the share of images in each bin.
* **Review threshold**: the lowest calibrated confidence ``t`` such that the val images with
  confidence ``>= t`` (those the worker would auto-catalogue) have top-1 precision ``>=`` the
  target. Coverage is their share of val. The worker marks an image NEEDS_REVIEW when its
  calibrated confidence is below ``t``.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from scipy.optimize import minimize_scalar

from contracts import scoring

ECE_BINS: Final[int] = 15
_EPSILON: Final[float] = 1e-12
_LOG_T_BOUNDS: Final[tuple[float, float]] = (-4.0, 4.0)  # T between 0.018 and 55


def logits_from_probabilities(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), _EPSILON, 1.0))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities: ``softmax(log(p) / T)``.

    :func:`contracts.scoring.apply_temperature`, the very function the worker uses."""
    return scoring.apply_temperature(probabilities, temperature)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = np.asarray(probabilities)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, _EPSILON, 1.0))))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises val NLL (bounded search over log T)."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0
    logits = logits_from_probabilities(probabilities)
    rows = np.arange(len(labels))

    def nll(log_temperature: float) -> float:
        scaled = logits / np.exp(log_temperature)
        scaled = scaled - scaled.max(axis=1, keepdims=True)
        log_normaliser = np.log(np.exp(scaled).sum(axis=1))
        return float(np.mean(log_normaliser - scaled[rows, labels]))

    result = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-5})
    return float(np.exp(result.x))


def reliability_bins(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, Any]]:
    """Per equal-width confidence bin: bounds, count, mean confidence and accuracy."""
    probabilities = np.asarray(probabilities)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i+1]]; confidence 0 falls into the first bin.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    result = []
    for position in range(bins):
        members = index == position
        count = int(members.sum())
        result.append(
            {
                "lower": float(edges[position]),
                "upper": float(edges[position + 1]),
                "count": count,
                "confidence": float(confidence[members].mean()) if count else None,
                "accuracy": float(correct[members].mean()) if count else None,
            }
        )
    return result


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    total = len(labels)
    if total == 0:
        return 0.0
    return float(
        sum(
            item["count"] / total * abs(item["accuracy"] - item["confidence"])
            for item in reliability_bins(probabilities, labels, bins)
            if item["count"]
        )
    )


def choose_review_threshold(
    confidence: np.ndarray, correct: np.ndarray, target_precision: float
) -> dict[str, Any]:
    """Lowest threshold whose auto-catalogued set (confidence >= threshold) reaches the target.

    Returns ``threshold``, ``coverage`` (share auto-catalogued), ``precision`` of that set,
    ``reached`` (False when no threshold reaches the target: then everything goes to review,
    threshold 1.0) and ``target_precision``.
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target precision must be in (0, 1], got {target_precision}")
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    total = len(confidence)
    if total == 0:
        return _threshold(1.0, 0.0, None, False, target_precision)
    order = np.argsort(-confidence, kind="stable")
    sorted_confidence = confidence[order]
    precision = np.cumsum(correct[order]) / np.arange(1, total + 1)
    # A cut is only possible after the last of a run of equal confidences.
    is_cut = np.append(sorted_confidence[1:] != sorted_confidence[:-1], True)
    eligible = np.flatnonzero(is_cut & (precision >= target_precision - 1e-12))
    if len(eligible) == 0:
        coverage = float(np.mean(confidence >= 1.0))
        return _threshold(1.0, coverage, None, False, target_precision)
    last = int(eligible[-1])
    return _threshold(
        float(sorted_confidence[last]),
        (last + 1) / total,
        float(precision[last]),
        True,
        target_precision,
    )


def _threshold(
    threshold: float,
    coverage: float,
    precision: float | None,
    reached: bool,
    target_precision: float,
) -> dict[str, Any]:
    return {
        "review_threshold": threshold,
        "coverage": coverage,
        "precision_at_threshold": precision,
        "target_reached": reached,
        "target_precision": target_precision,
    }


def calibrate(
    probabilities: np.ndarray, labels: np.ndarray, *, target_precision: float = 0.98
) -> dict[str, Any]:
    """Fit T, measure ECE before/after, choose the review threshold on calibrated confidence."""
    labels = np.asarray(labels, dtype=np.int64)
    temperature = fit_temperature(probabilities, labels)
    calibrated = apply_temperature(probabilities, temperature)
    correct = calibrated.argmax(axis=1) == labels
    threshold = choose_review_threshold(calibrated.max(axis=1), correct, target_precision)
    return {
        "temperature": temperature,
        **threshold,
        "ece_before": expected_calibration_error(probabilities, labels),
        "ece_after": expected_calibration_error(calibrated, labels),
        "nll_before": negative_log_likelihood(probabilities, labels),
        "nll_after": negative_log_likelihood(calibrated, labels),
        "ece_bins": ECE_BINS,
        "reliability_before": reliability_bins(probabilities, labels),
        "reliability_after": reliability_bins(calibrated, labels),
    }

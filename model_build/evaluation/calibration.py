"""The one owner of the review rule: temperature, the certified threshold, and its measurement.

Pure numpy/scipy on arrays, so every number can be checked without a model. :func:`calibrate`
is the whole step and returns :class:`contracts.artifact.Calibration`, the frozen, typed block
the manifest carries and the worker reads: nothing downstream re-derives a threshold.

* **Temperature scaling** (Guo et al., 2017) fits one scalar ``T`` on the calibration split by
  minimising the negative log-likelihood of ``softmax(log(p) / T)``; top-1 never changes.
* **The certified rule is the worker's rule.** The worker auto-catalogues a photo when its
  calibrated confidence is ≥ ``t`` *and* the unfamiliarity score does not flag it
  (:mod:`handler.worker`). So the threshold walk runs on exactly those photos: flagged photos are
  removed first (they go to review whatever ``t`` is), then candidates are tested.
* **A grid fixed before the data** (:data:`THRESHOLD_GRID`, 0.999 then 0.995 down to 0.300 in
  steps of 0.005) is walked from the top. At each candidate the ``k`` right of the ``n``
  auto-catalogued calibration photos give the one-sided exact Clopper–Pearson lower bound on
  precision, ``Beta(δ; k, n − k + 1)`` with ``δ = 1 − confidence``; the walk accepts while the
  bound is ≥ the target and stops at the first failure ("Learn then Test", Angelopoulos et al.
  2021: fixed-sequence testing, no multiplicity correction). A candidate with fewer photos than
  :func:`minimum_support` cannot pass even with all of them right and is skipped without ending
  the walk — that choice depends on the confidences only, never on which photos are right, so the
  binomial bound stays valid conditionally on them. The guarantee: with probability ≥
  ``confidence`` over the calibration draw, the precision of what the worker auto-catalogues on
  new photos from the same source is ≥ the target (``tests/unit/test_calibration_rule.py``
  simulates it). Nothing accepted → threshold 1.0, everything to review, ``target_reached``
  false.
* **Measurement on held-out photos** (:func:`measure`) applies the same rule and reports coverage
  and precision with exact two-sided 95 % Clopper–Pearson intervals.

The earlier point-estimate rule ("lowest threshold whose calibration photos reach the target") is
gone from production code: it picked the luckiest point of a noisy curve (0.98 on val gave 0.963
on photos it had not seen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import beta

from contracts import scoring
from contracts.artifact import Calibration, Interval
from model_build.config import TrainConfig

ECE_BINS: Final[int] = 15
# The defaults live in TrainConfig (the one place a run's settings are named).
DEFAULT_TARGET_PRECISION: Final[float] = TrainConfig.target_precision
DEFAULT_CONFIDENCE: Final[float] = TrainConfig.threshold_confidence
INTERVAL_LEVEL: Final[float] = 0.95
METHOD: Final[str] = "clopper-pearson fixed-sequence on a fixed grid, unfamiliar photos removed"
# Fixed before any data is seen: the walk's order cannot adapt to the calibration photos.
THRESHOLD_GRID: Final[tuple[float, ...]] = (
    0.999,
    *(round(0.995 - 0.005 * step, 3) for step in range(140)),
)
ASSUMPTION: Final[str] = (
    "Holds for photos drawn like the calibration photos (same photo source and label mix), "
    "scored by the published {variant} model with its own temperature and threshold, unfamiliar "
    "photos sent to review, and the threshold not overridden."
)
_EPSILON: Final[float] = 1e-12
_LOG_T_BOUNDS: Final[tuple[float, float]] = (-4.0, 4.0)  # T between 0.018 and 55


# --- temperature --------------------------------------------------------------------------------


def logits_from_probabilities(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), _EPSILON, 1.0))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities: ``softmax(log(p) / T)``.

    :func:`contracts.scoring.apply_temperature`, the very function the worker uses."""
    return scoring.apply_temperature(probabilities, temperature)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = np.asarray(probabilities)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, _EPSILON, 1.0))))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the calibration photos' NLL (bounded search over log T)."""
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


# --- the certified threshold --------------------------------------------------------------------


def clopper_pearson_lower(correct: int, total: int, confidence: float) -> float:
    """One-sided exact lower confidence bound on a binomial proportion (0 when ``correct`` = 0)."""
    if total <= 0 or correct <= 0:
        return 0.0
    return float(beta.ppf(1.0 - confidence, correct, total - correct + 1))


def clopper_pearson_interval(successes: int, total: int, level: float = INTERVAL_LEVEL) -> Interval:
    """Exact two-sided interval of a binomial proportion (``[0, 1]`` for no trials)."""
    if total <= 0:
        return Interval(low=0.0, high=1.0, level=level)
    tail = (1.0 - level) / 2
    low = 0.0 if successes == 0 else float(beta.ppf(tail, successes, total - successes + 1))
    high = (
        1.0 if successes == total else float(beta.ppf(1 - tail, successes + 1, total - successes))
    )
    return Interval(low=low, high=high, level=level)


def minimum_support(target_precision: float, confidence: float) -> int:
    """The fewest photos (all right) whose lower bound reaches ``target_precision``."""
    if target_precision >= 1.0:
        return 2**62  # a lower bound never reaches 1
    # All n right: lower bound = (1 - confidence) ** (1 / n) >= target.
    return math.ceil(math.log(1.0 - confidence) / math.log(target_precision))


@dataclass(frozen=True)
class ThresholdChoice:
    """The walk's outcome on the calibration photos."""

    threshold: float
    target_reached: bool
    precision_lower_bound: float | None
    precision: float | None  # on the auto-catalogued calibration photos
    coverage: float  # share of all calibration photos auto-catalogued
    eligible_images: int  # calibration photos not flagged unfamiliar


def choose_threshold(
    scores: np.ndarray,
    correct: np.ndarray,
    *,
    target_precision: float,
    confidence: float = DEFAULT_CONFIDENCE,
    unfamiliar: np.ndarray | None = None,
    grid: tuple[float, ...] = THRESHOLD_GRID,
) -> ThresholdChoice:
    """The lowest grid threshold the fixed sequence accepts (see the module docstring)."""
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target precision must be in (0, 1], got {target_precision}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    scores = np.asarray(scores, dtype=np.float64)
    right = np.asarray(correct, dtype=bool)
    eligible = np.ones(len(scores), bool) if unfamiliar is None else ~np.asarray(unfamiliar, bool)
    needed = minimum_support(target_precision, confidence)
    accepted: tuple[float, float, int, int] | None = None
    for threshold in sorted(grid, reverse=True):
        above = eligible & (scores >= threshold)
        count = int(above.sum())
        if count < needed:
            continue  # cannot pass even if all right: not a test, the walk goes on
        hits = int(right[above].sum())
        lower = clopper_pearson_lower(hits, count, confidence)
        if lower < target_precision:
            break
        accepted = (threshold, lower, hits, count)
    total = max(len(scores), 1)
    if accepted is None:
        return ThresholdChoice(1.0, False, None, None, 0.0, int(eligible.sum()))
    threshold, lower, hits, count = accepted
    return ThresholdChoice(threshold, True, lower, hits / count, count / total, int(eligible.sum()))


@dataclass(frozen=True)
class Measurement:
    """The worker's rule on labelled photos: what it auto-catalogues and how often it is right."""

    images: int
    auto_catalogued: int
    errors: int
    coverage: float
    coverage_interval: Interval
    precision: float | None
    precision_interval: Interval
    unfamiliar: int  # flagged, sent to review whatever their confidence


def measure(
    scores: np.ndarray,
    correct: np.ndarray,
    threshold: float,
    unfamiliar: np.ndarray | None = None,
) -> Measurement:
    """Coverage and precision of ``confidence ≥ threshold and not unfamiliar``, exact intervals."""
    scores = np.asarray(scores, dtype=np.float64)
    right = np.asarray(correct, dtype=bool)
    flagged = np.zeros(len(scores), bool) if unfamiliar is None else np.asarray(unfamiliar, bool)
    auto = (scores >= threshold) & ~flagged
    count, hits = int(auto.sum()), int(right[auto].sum())
    return Measurement(
        images=len(scores),
        auto_catalogued=count,
        errors=count - hits,
        coverage=count / len(scores) if len(scores) else 0.0,
        coverage_interval=clopper_pearson_interval(count, len(scores)),
        precision=hits / count if count else None,
        precision_interval=clopper_pearson_interval(hits, count),
        unfamiliar=int(flagged.sum()),
    )


# --- the whole step -----------------------------------------------------------------------------


def calibrate(
    fit_probabilities: np.ndarray,
    fit_labels: np.ndarray,
    eval_probabilities: np.ndarray,
    eval_labels: np.ndarray,
    *,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    confidence: float = DEFAULT_CONFIDENCE,
    fit_unfamiliar: np.ndarray | None = None,
    eval_unfamiliar: np.ndarray | None = None,
    calibrated_on: str = "calibration",
    evaluated_on: str = "held_out",
    variant: str = "float32",
) -> Calibration:
    """Temperature and threshold fitted on the calibration photos, measured on the held-out ones.

    ``*_unfamiliar`` are the worker's unfamiliarity flags of those photos (None: the model ships
    no score). Returns the manifest's :class:`~contracts.artifact.Calibration`.
    """
    fit_labels = np.asarray(fit_labels, dtype=np.int64)
    eval_labels = np.asarray(eval_labels, dtype=np.int64)
    temperature = fit_temperature(fit_probabilities, fit_labels)
    fit_calibrated = apply_temperature(fit_probabilities, temperature)
    chosen = choose_threshold(
        fit_calibrated.max(1),
        fit_calibrated.argmax(1) == fit_labels,
        target_precision=target_precision,
        confidence=confidence,
        unfamiliar=fit_unfamiliar,
    )
    calibrated = apply_temperature(eval_probabilities, temperature)
    measured = measure(
        calibrated.max(1), calibrated.argmax(1) == eval_labels, chosen.threshold, eval_unfamiliar
    )
    return Calibration(
        temperature=temperature,
        review_threshold=chosen.threshold,
        target_precision=target_precision,
        confidence=confidence,
        coverage=measured.coverage,
        coverage_interval=measured.coverage_interval,
        precision_at_threshold=measured.precision,
        precision_interval=measured.precision_interval,
        target_reached=chosen.target_reached,
        target_met_on_held_out=(
            measured.precision is not None and measured.precision >= target_precision
        ),
        auto_catalogued=measured.auto_catalogued,
        auto_catalogued_errors=measured.errors,
        unfamiliar_excluded=fit_unfamiliar is not None,
        method=METHOD,
        grid=f"{THRESHOLD_GRID[0]}, {THRESHOLD_GRID[1]} … {THRESHOLD_GRID[-1]} (fixed)",
        minimum_images=minimum_support(target_precision, confidence),
        calibrated_on=calibrated_on,
        calibration_images=len(fit_labels),
        eligible_images=chosen.eligible_images,
        coverage_fit=chosen.coverage,
        precision_fit=chosen.precision,
        precision_lower_bound=chosen.precision_lower_bound,
        evaluated_on=evaluated_on,
        evaluation_images=len(eval_labels),
        variant=variant,
        assumption=ASSUMPTION.format(variant=variant),
    )


def quality(probabilities: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, Any]:
    """ECE and NLL before and after temperature, and the reliability bins (report figures)."""
    labels = np.asarray(labels, dtype=np.int64)
    calibrated = apply_temperature(probabilities, temperature)
    return {
        "ece_before": expected_calibration_error(probabilities, labels),
        "ece_after": expected_calibration_error(calibrated, labels),
        "nll_before": negative_log_likelihood(probabilities, labels),
        "nll_after": negative_log_likelihood(calibrated, labels),
        "ece_bins": ECE_BINS,
        "reliability_before": reliability_bins(probabilities, labels),
        "reliability_after": reliability_bins(calibrated, labels),
    }

"""Scores from the model's output: temperature calibration and the top-k labels (contract 4).

Defined once, imported by both halves: training (:mod:`model_build.evaluation.calibration` fits the
temperature with this formula; :mod:`model_build.evaluation.metrics` scores top-k with
:func:`top_k`) and the
worker (:mod:`handler.classifier`). ``tests/unit/test_scoring_parity.py`` checks both sides give
the same numbers. numpy only.
"""

from __future__ import annotations

from typing import Final

import numpy as np

PROBABILITY_FLOOR: Final[float] = 1e-12
# Softmax outputs of a quantised model sum to 1 only up to the quantisation step.
PROBABILITY_SUM_TOLERANCE: Final[float] = 0.05


def log_probabilities(output: np.ndarray) -> np.ndarray:
    """``log p`` of each row: the model's softmax output renormalised (floored at 1e-12), or
    ``log_softmax`` when the rows are logits (negative values or sums far from 1)."""
    output = np.asarray(output, dtype=np.float64)
    sums = output.sum(axis=-1)
    if np.all(output >= 0) and np.all(np.abs(sums - 1.0) <= PROBABILITY_SUM_TOLERANCE):
        return np.log(np.maximum(output / sums[..., None], PROBABILITY_FLOOR))
    shifted = output - output.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def apply_temperature(output: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities: ``softmax(log p / T)`` (for logits: ``softmax(logits / T)``)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    scaled = log_probabilities(output) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exponentials = np.exp(scaled)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def top_k(probabilities: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores per row, best first; ties go to the lower index."""
    probabilities = np.asarray(probabilities)
    k = min(k, probabilities.shape[-1])
    return np.argsort(-probabilities, axis=-1, kind="stable")[..., :k]

"""Temperature scaling lowers ECE on an over-confident model (the threshold rule:
test_calibration_rule.py)."""

from __future__ import annotations

import numpy as np
import pytest

from model_build.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    quality,
)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _overconfident(count: int = 3000, classes: int = 14, seed: int = 0):
    """Labels drawn from softmax(logits) (a calibrated model) but reported as softmax(3·logits):
    the model is right as often as before and far surer of itself than it should be."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, (count, classes))
    labels = np.array([rng.choice(classes, p=p) for p in softmax(logits)])
    return softmax(logits * 3.0), labels


def test_calibration_lowers_ece_on_an_overconfident_model() -> None:
    probabilities, labels = _overconfident()
    temperature = fit_temperature(probabilities, labels)
    result = quality(probabilities, labels, temperature)
    assert temperature == pytest.approx(3.0, rel=0.15)  # softens
    assert result["ece_before"] > 0.15
    assert result["ece_after"] < result["ece_before"] / 3
    assert result["nll_after"] < result["nll_before"]
    calibrated = apply_temperature(probabilities, temperature)
    assert (calibrated.argmax(1) == probabilities.argmax(1)).all()  # top-1 never changes


def test_temperature_recovers_a_known_scaling() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (4000, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(logits)])  # calibrated at T=1
    assert fit_temperature(softmax(logits / 0.5), labels) == pytest.approx(2.0, rel=0.1)
    assert fit_temperature(softmax(logits), labels) == pytest.approx(1.0, rel=0.1)


def test_ece_of_a_perfectly_calibrated_toy() -> None:
    probabilities = np.array([[0.8, 0.2]] * 10)
    labels = np.array([0] * 8 + [1] * 2)  # 80% right at 80% confidence
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.0, abs=1e-9)
    assert expected_calibration_error(probabilities, np.zeros(10, int)) == pytest.approx(0.2)

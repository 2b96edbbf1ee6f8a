"""Temperature scaling lowers ECE on an over-confident model; the review threshold rule."""

from __future__ import annotations

import numpy as np
import pytest

from model_build.evaluation.calibration import (
    apply_temperature,
    calibrate,
    choose_review_threshold,
    expected_calibration_error,
    fit_temperature,
    softmax,
)


def _overconfident(count: int = 3000, classes: int = 14, seed: int = 0):
    """Labels drawn from softmax(logits) (a calibrated model) but reported as softmax(3·logits):
    the model is right as often as before and far surer of itself than it should be."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, (count, classes))
    labels = np.array([rng.choice(classes, p=p) for p in softmax(logits)])
    return softmax(logits * 3.0), labels


def test_calibration_lowers_ece_on_an_overconfident_model() -> None:
    probabilities, labels = _overconfident()
    result = calibrate(probabilities, labels)
    assert result["temperature"] == pytest.approx(3.0, rel=0.15)  # softens
    assert result["ece_before"] > 0.15
    assert result["ece_after"] < result["ece_before"] / 3
    assert result["nll_after"] < result["nll_before"]
    calibrated = apply_temperature(probabilities, result["temperature"])
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


def test_review_threshold_is_the_lowest_reaching_the_target() -> None:
    confidence = np.array([0.99, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([1, 1, 1, 1, 0, 1, 0, 0], dtype=bool)
    result = choose_review_threshold(confidence, correct, target_precision=0.8)
    # >=0.7: 5 of 6 right = 0.833 >= 0.8; >=0.6: 5/7 < 0.8
    assert result["review_threshold"] == pytest.approx(0.7)
    assert result["coverage"] == pytest.approx(6 / 8)
    assert result["precision_at_threshold"] == pytest.approx(5 / 6)
    assert result["target_reached"]
    strict = choose_review_threshold(confidence, correct, target_precision=1.0)
    assert strict["review_threshold"] == pytest.approx(0.85)
    assert strict["coverage"] == pytest.approx(0.5)


def test_ties_are_never_split() -> None:
    confidence = np.array([0.9, 0.9, 0.9, 0.5])
    correct = np.array([1, 1, 0, 1], dtype=bool)
    result = choose_review_threshold(confidence, correct, target_precision=0.7)
    assert result["coverage"] in (0.75, 1.0)  # all three 0.9s go together
    assert result["review_threshold"] == pytest.approx(0.5)  # 3 of 4 = 0.75 >= 0.7


def test_unreachable_target_sends_everything_to_review() -> None:
    result = choose_review_threshold(np.array([0.9, 0.8]), np.array([False, False]), 0.98)
    assert not result["target_reached"]
    assert result["review_threshold"] == 1.0
    assert result["coverage"] == 0.0

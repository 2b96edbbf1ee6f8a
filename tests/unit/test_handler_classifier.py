"""Calibration of the model's output: temperature scaling on log-probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from handler.classifier import calibrate


def softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def test_temperature_one_leaves_probabilities_unchanged() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]])
    np.testing.assert_allclose(calibrate(probabilities, 1.0), probabilities, atol=1e-12)


def test_temperature_above_one_softens_and_keeps_the_ranking() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1]])
    softened = calibrate(probabilities, 2.0)
    expected = np.sqrt(probabilities) / np.sqrt(probabilities).sum()
    np.testing.assert_allclose(softened, expected, atol=1e-12)
    assert softened[0, 0] < 0.7
    assert list(np.argsort(softened[0])) == list(np.argsort(probabilities[0]))


def test_logits_give_the_same_result_as_their_softmax() -> None:
    logits = np.array([[2.0, -1.0, 0.5], [-3.0, 4.0, 0.0]])
    np.testing.assert_allclose(calibrate(logits, 1.5), calibrate(softmax(logits), 1.5), atol=1e-9)
    np.testing.assert_allclose(calibrate(logits, 1.5), softmax(logits / 1.5), atol=1e-9)


def test_quantised_probabilities_that_do_not_sum_to_one_exactly() -> None:
    quantised = np.array([[0.70703125, 0.19921875, 0.09765625]])  # steps of 1/256, sum 1.0039
    calibrated = calibrate(quantised, 1.0)
    np.testing.assert_allclose(calibrated.sum(), 1.0)
    np.testing.assert_allclose(calibrated, quantised / quantised.sum(), atol=1e-12)


def test_zero_probabilities_stay_finite() -> None:
    calibrated = calibrate(np.array([[1.0, 0.0, 0.0]]), 3.0)
    assert np.all(np.isfinite(calibrated))
    assert calibrated[0, 0] == pytest.approx(1.0, abs=1e-3)

"""The review threshold's bound, its minimum support, and calibrate fitting on one set while
reporting on the other (the simulation of its guarantee: test_calibration_rule.py)."""

from __future__ import annotations

import numpy as np
import pytest

from model_build.evaluation.calibration import (
    calibrate,
    choose_threshold,
    clopper_pearson_lower,
    minimum_support,
)


def test_clopper_pearson_lower_bound_known_values() -> None:
    # All n right: the bound is (1 - confidence) ** (1 / n).
    assert clopper_pearson_lower(50, 50, 0.95) == pytest.approx(0.05 ** (1 / 50))
    assert clopper_pearson_lower(0, 10, 0.95) == 0.0
    # 90 of 100 right: the exact one-sided 95 % bound (textbook value 0.8362).
    assert clopper_pearson_lower(90, 100, 0.95) == pytest.approx(0.8363, abs=5e-4)
    assert minimum_support(0.98, 0.95) == 149
    assert minimum_support(0.95, 0.95) == 59


def test_too_few_images_for_the_target_sends_everything_to_review() -> None:
    scores = np.linspace(0.9, 1.0, 100)
    result = choose_threshold(scores, np.ones(100, bool), target_precision=0.98, confidence=0.95)
    assert result.target_reached is False
    assert result.threshold == 1.0
    assert minimum_support(0.98, 0.95) == 149  # the report says what it would have needed


def test_calibrate_fits_on_one_set_and_reports_on_the_other() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (600, 4))
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    noisy = np.array([rng.choice(4, p=p) for p in probabilities])  # a calibrated model
    result = calibrate(
        probabilities[:300],
        noisy[:300],
        probabilities[300:],
        noisy[300:],
        target_precision=0.9,
        confidence=0.9,
    )
    assert result.evaluation_images == 300
    assert result.calibration_images == 300
    assert result.evaluated_on == "held_out"
    assert result.target_reached
    assert 0 < result.coverage < 1
    assert result.coverage_interval.low < result.coverage < result.coverage_interval.high

"""The review threshold holds its target precision on new photos with the stated confidence;
the old point-estimate rule does not."""

from __future__ import annotations

import numpy as np
import pytest

from model_build.evaluation.calibration import choose_review_threshold
from model_build.evaluation.thresholds import (
    choose_threshold_with_confidence,
    clopper_pearson_lower,
    fit_and_measure,
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


def _population(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """A calibrated model: an image with confidence s is right with probability s."""
    confidence = rng.beta(5.0, 1.0, count)
    return confidence, rng.random(count) < confidence


def _true_precision(threshold: float) -> float:
    # Precision of {s >= t} under s ~ Beta(5, 1) with P(right | s) = s: E[s | s >= t]
    # = (5/6) (1 - t^6) / (1 - t^5).
    if threshold >= 1.0:
        return 1.0
    return (5 / 6) * (1 - threshold**6) / (1 - threshold**5)


def test_threshold_holds_the_target_on_new_photos_with_the_stated_confidence() -> None:
    """300 repetitions of "fit on 1,000 val images": the old rule's threshold falls short of 0.95
    on the population about half the time; the bounded one at most 5 % of the time (+ noise)."""
    rng = np.random.default_rng(0)
    target, confidence, repetitions = 0.95, 0.95, 300
    old_misses = new_misses = 0
    coverage = []
    for _ in range(repetitions):
        scores, right = _population(rng, 1000)
        old = choose_review_threshold(scores, right, target)["review_threshold"]
        new = choose_threshold_with_confidence(scores, right, target, confidence)
        old_misses += _true_precision(old) < target
        new_misses += _true_precision(new["review_threshold"]) < target
        coverage.append(new["coverage_fit"])
    assert old_misses / repetitions > 0.3
    assert new_misses / repetitions <= 0.05 + 0.03
    assert np.mean(coverage) > 0.1  # still auto-catalogues a share (about 0.4 at best here)


def test_too_few_images_for_the_target_sends_everything_to_review() -> None:
    scores = np.linspace(0.9, 1.0, 100)
    result = choose_threshold_with_confidence(scores, np.ones(100, bool), 0.98, 0.95)
    assert result["target_reached"] is False
    assert result["review_threshold"] == 1.0
    assert result["minimum_images"] == 149  # the report says what it would have needed


def test_fit_and_measure_reports_on_the_other_set() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (600, 4))
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    noisy = np.array([rng.choice(4, p=p) for p in probabilities])  # a calibrated model
    result = fit_and_measure(
        probabilities[:300],
        noisy[:300],
        probabilities[300:],
        noisy[300:],
        target_precision=0.9,
        confidence=0.9,
    )
    assert result["evaluation_images"] == 300
    assert result["evaluated_on"] == "holdout"
    assert result["target_reached"]
    assert 0 < result["coverage"] < 1
    assert result["point_estimate"]["review_threshold"] <= result["review_threshold"]

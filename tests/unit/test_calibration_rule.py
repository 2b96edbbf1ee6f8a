"""The certified rule (model_build.evaluation.calibration): the worker's rule, a fixed grid, a
guarantee that holds in simulation, and the frozen typed result the manifest carries."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

from contracts.artifact import Calibration
from model_build.evaluation.calibration import (
    THRESHOLD_GRID,
    calibrate,
    choose_threshold,
    clopper_pearson_interval,
    measure,
)


def _draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores uniform on [0.3, 1]; a photo at score s is right with probability 0.5 + 0.5 s.
    Precision of everything at or above t is then 0.75 + 0.25 t exactly (t ≥ 0.3)."""
    scores = rng.uniform(0.3, 1.0, n)
    return scores, rng.uniform(size=n) < 0.5 + 0.5 * scores


def test_simulated_miss_rate_is_at_most_the_nominal_level() -> None:
    # GIVEN a known score distribution, target 0.95 (true precision ≥ 0.95 iff t ≥ 0.8) and 95 %
    # confidence; WHEN the rule chooses a threshold on 300 independent calibration draws
    rng = np.random.default_rng(7)
    repetitions, misses, naive_misses = 300, 0, 0
    for _ in range(repetitions):
        scores, right = _draw(rng, 600)
        chosen = choose_threshold(scores, right, target_precision=0.95, confidence=0.95)
        true_precision = 0.75 + 0.25 * chosen.threshold
        misses += chosen.target_reached and true_precision < 0.95 - 1e-12
        # The removed point-estimate rule, for contrast: lowest grid t with empirical ≥ target.
        reaching = [t for t in THRESHOLD_GRID if right[scores >= t].mean() >= 0.95]
        naive = min(reaching, default=1.0)
        naive_misses += 0.75 + 0.25 * naive < 0.95 - 1e-12
    # THEN the share of draws whose certified threshold misses the target is ≤ 5 % (one-sided
    # binomial slack for 300 repetitions), while the point estimate misses far more often.
    assert misses / repetitions <= 0.05 + 2.33 * np.sqrt(0.05 * 0.95 / repetitions)
    assert naive_misses / repetitions > 0.2


def test_the_walk_runs_on_the_photos_the_worker_would_auto_catalogue() -> None:
    # GIVEN calibration photos where confident, *flagged-unfamiliar* photos are all right and the
    # photos the worker would actually auto-catalogue are right only 90 % of the time
    rng = np.random.default_rng(0)
    familiar = rng.uniform(0.96, 1.0, 400)
    familiar_right = rng.uniform(size=400) < 0.9
    scores = np.concatenate([familiar, np.full(600, 0.999)])
    right = np.concatenate([familiar_right, np.ones(600, bool)])
    flagged = np.concatenate([np.zeros(400, bool), np.ones(600, bool)])
    # WHEN the threshold is certified with and without the flag applied first
    with_flags = choose_threshold(scores, right, target_precision=0.95, unfamiliar=flagged)
    without = choose_threshold(scores, right, target_precision=0.95)
    # THEN counting flagged photos would certify a precision the worker never delivers
    assert without.target_reached
    assert not with_flags.target_reached
    assert with_flags.eligible_images == 400
    delivered = measure(scores, right, without.threshold, unfamiliar=flagged)
    assert delivered.precision < 0.95


def test_threshold_comes_from_the_fixed_grid_and_a_result_is_frozen_and_typed() -> None:
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.full(4, 0.2), size=800)
    labels = probabilities.argmax(1)
    labels[:30] = (labels[:30] + 1) % 4
    result = calibrate(probabilities, labels, probabilities, labels, target_precision=0.9)
    assert isinstance(result, Calibration)
    assert result.review_threshold in THRESHOLD_GRID
    assert result.target_reached
    assert result.unfamiliar_excluded is False
    assert result.calibration_images == 800
    assert result.precision_interval.low <= result.precision_at_threshold
    assert "same photo source and label mix" in result.assumption
    with pytest.raises(pydantic.ValidationError):
        result.review_threshold = 0.5  # type: ignore[misc]


def test_clopper_pearson_interval_matches_the_exact_values() -> None:
    # 0 of 10 and 10 of 10: one side is exact 0 / 1, the other (α/2)^(1/n) for the 95 % interval.
    none = clopper_pearson_interval(0, 10)
    assert none.low == 0.0
    assert none.high == pytest.approx(1 - 0.025 ** (1 / 10))
    every = clopper_pearson_interval(10, 10)
    assert every.low == pytest.approx(0.025 ** (1 / 10))
    assert every.high == 1.0

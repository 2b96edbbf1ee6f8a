"""Training and the worker score the same way: one temperature formula, one top-k, one LiteRT loop.

The temperature formula and the top-k ranking live in :mod:`contracts.scoring`, the LiteRT
resize-allocate-invoke loop in :mod:`contracts.litert`; both halves import them. These tests hold
the two sides to the same numbers, so a change on one side cannot drift from the other.
"""

from __future__ import annotations

import numpy as np
import pytest

from handler.classifier import Classifier, calibrate, predictions
from model_build.evaluation.calibration import apply_temperature, fit_temperature
from model_build.evaluation.metrics import top_k_accuracy
from model_build.release.export import tflite_predict
from tests.support.tiny_artifact import LABELS, tiny_model_files


def _probabilities(seed: int, rows: int = 64, labels: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (rows, labels))
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


@pytest.mark.parametrize("temperature", [0.4, 1.0, 1.7, 5.0])
def test_the_temperature_formula_is_the_same_in_training_and_in_the_worker(
    temperature: float,
) -> None:
    probabilities = _probabilities(0)
    probabilities[0] = 0.0
    probabilities[0, 3] = 1.0  # exact zeros and a one: the floor must agree too
    np.testing.assert_allclose(
        apply_temperature(probabilities, temperature),
        calibrate(probabilities, temperature),
        rtol=1e-12,
        atol=1e-15,
    )


def test_a_fitted_temperature_gives_the_worker_the_calibrated_scores_evaluation_measured() -> None:
    probabilities = _probabilities(1) ** 0.5
    probabilities /= probabilities.sum(1, keepdims=True)
    labels = probabilities.argmax(1)
    temperature = fit_temperature(probabilities, labels)
    ours = apply_temperature(probabilities, temperature).max(1)
    worker = np.array(
        [p.confidence for p in predictions(calibrate(probabilities, temperature), "abcdefg")]
    )
    np.testing.assert_allclose(worker, ours, atol=1e-6)  # the worker rounds to 6 places


def test_top_k_ranks_labels_the_same_way_including_ties() -> None:
    probabilities = _probabilities(2)
    probabilities[:8] = 1.0 / 7  # complete ties: the lower label index comes first on both sides
    probabilities[8, [1, 4]] = probabilities[8].max() + 0.1  # a tie for first place
    labels = [f"l{i}" for i in range(7)]
    worker_top3 = np.array(
        [[labels.index(s.label) for s in p.top3] for p in predictions(probabilities, labels)]
    )
    for k in (1, 2, 3):
        for row in range(len(probabilities)):
            hit = top_k_accuracy(probabilities[row : row + 1], worker_top3[row : row + 1, k - 1], k)
            assert hit == 1.0, (row, k)  # the worker's k-th label is in training's top k ...
            if k > 1:  # ... and not in its top k - 1: the same place in both rankings
                earlier = top_k_accuracy(
                    probabilities[row : row + 1], worker_top3[row : row + 1, k - 1], k - 1
                )
                assert earlier == 0.0, (row, k)
    assert worker_top3[:8, 0].tolist() == [0] * 8
    assert worker_top3[8, :2].tolist() == [1, 4]


@pytest.mark.heavy
def test_export_and_the_worker_get_the_same_outputs_from_a_tflite_file(tmp_path) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(tiny_model_files()["model.tflite"])
    images = np.random.default_rng(3).integers(0, 256, (11, 224, 224, 3), dtype=np.uint8)
    exported = tflite_predict(path, images, batch_size=4)  # batches of 4, 4 and 3: two resizes
    classifier = Classifier(path, LABELS, temperature=1.0)
    served = [classifier.predict(images[start : start + 5]) for start in (0, 5, 10)]
    confidences = np.array([p.confidence for batch in served for p in batch])
    np.testing.assert_allclose(confidences, exported.max(1), atol=1e-6)
    categories = [p.category for batch in served for p in batch]
    assert categories == [LABELS[i] for i in exported.argmax(1)]

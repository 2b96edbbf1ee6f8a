"""``--label-smoothing ε``: every phase trains on smoothed targets; ε = 0 is the reference's loss,
unchanged; a bad ε is refused before anything slow runs."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from model_build.config import UserError
from model_build.data.pipeline import SmoothedSparseCrossentropy, compile_for, training_loss
from model_build.train import check_choices, parse_arguments

CLASSES = 5


def _probabilities(rows: int, seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(rows, CLASSES)).astype(np.float32)
    return np.asarray(keras.ops.softmax(logits))


def test_integer_labels_give_keras_smoothed_one_hot_loss() -> None:
    """The sparse form equals Keras' own CategoricalCrossentropy(label_smoothing=ε) on one-hot
    labels, for labels shaped (N,) and (N, 1)."""
    probabilities = _probabilities(7)
    labels = np.array([0, 4, 2, 2, 1, 3, 0])
    one_hot = np.eye(CLASSES, dtype=np.float32)[labels]

    for epsilon in (0.1, 0.3):
        expected = keras.losses.CategoricalCrossentropy(label_smoothing=epsilon)(
            one_hot, probabilities
        )
        loss = SmoothedSparseCrossentropy(epsilon)
        assert float(loss(labels, probabilities)) == pytest.approx(float(expected), rel=1e-5)
        assert float(loss(labels[:, None], probabilities)) == pytest.approx(
            float(expected), rel=1e-5
        )


def test_smoothing_raises_the_loss_of_a_confident_right_answer() -> None:
    """The point of smoothing: a near-certain right answer is no longer the minimum."""
    certain = np.full((1, CLASSES), 1e-6, dtype=np.float32)
    certain[0, 2] = 1 - 4e-6
    hedged = np.full((1, CLASSES), 0.1 / CLASSES, dtype=np.float32)
    hedged[0, 2] += 0.9
    labels = np.array([2])

    smoothed = SmoothedSparseCrossentropy(0.1)
    plain = keras.losses.SparseCategoricalCrossentropy()
    assert float(plain(labels, certain)) < float(plain(labels, hedged))
    assert float(smoothed(labels, certain)) > float(smoothed(labels, hedged))


def test_no_smoothing_is_the_reference_loss_and_smoothing_survives_a_save(tmp_path: Path) -> None:
    assert training_loss(0.0) == "sparse_categorical_crossentropy"
    assert isinstance(training_loss(0.0, replicas=2), keras.losses.SparseCategoricalCrossentropy)
    assert training_loss(0.2, replicas=2).reduction == "mean_with_sample_weight"

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(CLASSES, "softmax")])
    compile_for(model, 1e-3, label_smoothing=0.2)
    model.fit(np.ones((4, 3), np.float32), np.arange(4), epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")

    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.loss, SmoothedSparseCrossentropy)
    assert loaded.loss.label_smoothing == pytest.approx(0.2)


def test_the_flag_reaches_the_config_and_a_bad_value_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()

    config = parse_arguments(["--data", str(data), "--label-smoothing", "0.1"])
    assert config.label_smoothing == pytest.approx(0.1)
    check_choices(config.resolved())  # accepted
    assert parse_arguments(["--data", str(data)]).label_smoothing == 0.0  # default: none

    for bad in ("1.0", "-0.1"):
        config = parse_arguments(["--data", str(data), "--label-smoothing", bad])
        with pytest.raises(UserError, match=r"--label-smoothing must be in \[0, 1\)"):
            check_choices(config.resolved())

"""Evaluation runs the backbone once per photo: the probabilities and the pooled features the
unfamiliarity score needs come from one two-output pass (issue 16, "one model anatomy").

Before, evaluation predicted the calibration and held-out photos, then the unfamiliarity step ran
the backbone over the same photos again for their pooled features.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

from model_build.data.prepare import PreparedSplit
from model_build.evaluation import unfamiliarity
from model_build.evaluation.evaluate import evaluate
from model_build.run_folder import RunFolder

LABELS = ("red", "green", "blue")


def _split(count: int, seed: int) -> PreparedSplit:
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 3
    pixels = rng.integers(0, 60, (count, 224, 224, 3)).astype(np.uint8)
    for index, label in enumerate(labels):
        pixels[index, :, :, label] += 150
    return PreparedSplit(
        pixels=pixels,
        label_indices=labels,
        paths=tuple(Path(f"{seed}-{i}.jpg") for i in range(count)),
        labels=LABELS,
        sha256=tuple(f"{seed:02d}{i:062d}" for i in range(count)),
    )


def _classifier() -> keras.Model:
    """The classifier's structure (scaling → backbone → head) with a tiny backbone, its layers
    named as the builder names them (code that looks parts up by name finds them too)."""
    keras.utils.set_random_seed(0)
    backbone_in = keras.Input((224, 224, 3))
    x = layers.Conv2D(8, 3, activation="relu")(layers.AveragePooling2D(16)(backbone_in))
    backbone = keras.Model(backbone_in, x, name="mobilenet_v2_backbone")
    head_in = keras.Input(tuple(backbone.outputs[0].shape[1:]))
    pooled = layers.GlobalAveragePooling2D()(head_in)
    head = keras.Model(head_in, layers.Dense(3, activation="softmax")(pooled), name="head")
    inputs = keras.Input((224, 224, 3), name="image")
    scaled = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale_to_minus1_1")(inputs)
    return keras.Model(inputs, head(backbone(scaled, training=False)))


def test_calibration_and_held_out_photos_go_through_the_backbone_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calibration, held_out, train = _split(9, 1), _split(6, 2), _split(12, 3)
    seen: list[int] = []
    original = unfamiliarity.pooled_features

    def spy(extractor, pixels, batch_size=32):
        seen.append(len(pixels))
        return original(extractor, pixels, batch_size)

    monkeypatch.setattr(unfamiliarity, "pooled_features", spy)
    monkeypatch.setattr(unfamiliarity, "GENERATED_UNFAMILIAR", 5)

    result = evaluate(
        _classifier(), RunFolder(tmp_path), labels=list(LABELS), val=calibration,
        evaluation_name="held_out", evaluation=held_out, train=train,
    )  # fmt: skip

    # A second backbone pass runs only over photos evaluation did not predict: the training
    # photos the score is fitted on and the unfamiliar drawings it is reported against.
    assert sorted(seen) == [5, 12]
    assert result.metrics["unfamiliarity"]["familiar"] == len(held_out)

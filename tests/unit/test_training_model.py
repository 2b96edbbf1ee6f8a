"""The model: reference parameter counts, scaling inside, and the offline-weights message."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from keras.src.utils import file_utils

from model_build import train
from model_build.training.fit import unfreeze_top_layers
from model_build.training.model import WeightsUnavailable, build_model, parts_of
from sample_data.photos import generate_dataset


def _trainable(model: keras.Model) -> int:
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def test_reference_architecture_parameter_counts() -> None:
    model = build_model("mobilenet_v2", num_classes=14, weights=None)

    assert model.count_params() == 3_800_142
    assert _trainable(model) == 1_542_158
    assert model.input_shape == (None, 224, 224, 3)
    assert model.output_shape == (None, 14)


def test_gap_head_same_backbone_no_convolution() -> None:
    model = build_model("mobilenet_v2", num_classes=14, weights=None, head="gap")

    assert _trainable(model) == 1280 * 14 + 14  # one dense layer on the pooled features
    assert model.count_params() == 3_800_142 - 1_542_158 + 1280 * 14 + 14
    assert model.output_shape == (None, 14)
    with pytest.raises(ValueError, match="unknown head"):
        build_model("mobilenet_v2", num_classes=3, weights=None, head="huge")


def test_scaling_is_inside_and_uint8_is_accepted() -> None:
    model = build_model("small", num_classes=3)
    scaling = model.get_layer("scale_to_minus1_1")
    assert np.allclose(scaling(np.array([[0.0, 255.0]])).numpy(), [[-1.0, 1.0]])

    pixels = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    from_uint8 = model(pixels, training=False).numpy()
    from_float = model(pixels.astype(np.float32), training=False).numpy()
    assert np.allclose(from_uint8, from_float)
    assert np.allclose(from_uint8.sum(axis=1), 1.0, atol=1e-5)


def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make every Keras download fail as it does without network (nothing leaves the machine)."""

    def unreachable(fname, origin, *args, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure")

    monkeypatch.setattr(file_utils, "get_file", unreachable)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


def test_offline_imagenet_weights_raise_a_typed_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _offline(monkeypatch, tmp_path)

    with pytest.raises(WeightsUnavailable, match="could not download the ImageNet"):
        build_model("mobilenet_v2", num_classes=14, weights="imagenet")


def test_offline_cli_exits_2_naming_both_alternatives(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _offline(monkeypatch, tmp_path)
    data = generate_dataset(
        tmp_path / "data", train_per_label=2, val_per_label=1, image_size=32, labels=("a", "b")
    )

    status = train.main(
        [
            "--data", str(data), "--weights", "imagenet", "--out", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache"), "--workers", "1",
        ]
    )  # fmt: skip

    err = capsys.readouterr().err
    assert status == 2
    assert "--weights PATH" in err
    assert "--weights none" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model("mobilenet_v2", num_classes=3, weights=str(tmp_path / "nope.h5"))


def test_fine_tuning_unfreezes_the_top_layers_but_never_batch_norm() -> None:
    model = build_model("mobilenet_v2", num_classes=14, weights=None)
    backbone = parts_of(model).backbone

    unfreeze_top_layers(backbone, 20)

    top = backbone.layers[-20:]
    assert all(not layer.trainable for layer in backbone.layers[:-20])
    assert all(
        layer.trainable is not isinstance(layer, keras.layers.BatchNormalization) for layer in top
    )
    assert any(layer.trainable for layer in top)
    # Head and unfrozen convolutions train; BatchNorm statistics and gammas stay fixed.
    assert _trainable(model) > 1_542_158
    assert all("batch_normalization" not in w.path and "_bn" not in w.path
               for w in backbone.trainable_weights)  # fmt: skip

"""The frozen-feature fast path: the head sees the features the full model computes on the fly."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from model_build.training.feature_cache import augmented_views, compute_features, feature_extractor
from model_build.training.model import build_model, parts_of

IMAGE_SIZE = 128  # the smallest size the reference head fits on (4×4 features)


def _model():
    """A reference model whose random backbone gives non-zero, input-dependent features.

    With Keras' fresh BatchNorm statistics a random MobileNetV2 outputs all zeros, which would
    make any comparison of features vacuous; random BatchNorm parameters fix that.
    """
    model = build_model("mobilenet_v2", num_classes=3, weights=None, image_size=IMAGE_SIZE)
    rng = np.random.default_rng(42)
    for layer in parts_of(model).backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.gamma.assign(rng.uniform(0.5, 1.5, shape))
            layer.beta.assign(rng.uniform(0.0, 0.5, shape))
            layer.moving_mean.assign(rng.normal(0.0, 0.1, shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape))
    return model


@pytest.mark.heavy
def test_cached_features_equal_on_the_fly_features_for_the_same_view(tmp_path: Path) -> None:
    model = _model()
    pixels = np.random.default_rng(0).integers(0, 256, (6, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    views, batch_size, seed = 2, 4, 5

    cached = compute_features(
        model, pixels, tmp_path / "train.npy", views=views, seed=seed, batch_size=batch_size
    )
    assert cached.shape == (views * len(pixels), 4, 4, 1280)

    head = parts_of(model).head
    extract = feature_extractor(model)
    for view in range(views):
        rows = slice(view * len(pixels), (view + 1) * len(pixels))
        on_the_fly = np.concatenate(
            [
                model(batch, training=False).numpy()
                for batch in augmented_views(pixels, view=view, seed=seed, batch_size=batch_size)
            ]
        )
        from_cache = head(cached[rows].astype(np.float32), training=False).numpy()
        assert np.allclose(from_cache, on_the_fly, atol=2e-3)
        # And the stored features themselves match a fresh extraction (float16 storage).
        fresh = np.concatenate(
            [
                extract(batch).numpy()
                for batch in augmented_views(pixels, view=view, seed=seed, batch_size=batch_size)
            ]
        )
        assert np.allclose(cached[rows], fresh, rtol=1e-2, atol=1e-2)

    # Non-trivial features, and views are different augmentations, not copies.
    assert np.abs(np.asarray(cached, dtype=np.float32)).mean() > 1e-3
    assert not np.allclose(cached[: len(pixels)], cached[len(pixels) :])


def test_unaugmented_features_for_val(tmp_path: Path) -> None:
    model = _model()
    pixels = np.random.default_rng(1).integers(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)

    cached = compute_features(model, pixels, tmp_path / "val.npy", views=0, seed=0, batch_size=2)

    expected = feature_extractor(model)(pixels).numpy()
    assert np.allclose(cached, expected, rtol=1e-2, atol=1e-2)

"""Augmentation as the reference did it, with Keras preprocessing layers in the tf.data pipeline.

Train only; validation images go to the model untouched. The layers work on float pixels 0..255
(before the model's own scaling), so the model never sees a different input range in training and
serving.

Reference ``ImageDataGenerator`` settings and their equivalents here:

=====================================  ==========================================================
rotation_range=20 (degrees)            RandomRotation(20/360) — the factor is a fraction of 2π
brightness_range (darker / brighter)   RandomBrightness(0.2, value_range=(0, 255))
zoom_range=0.2                         RandomZoom(0.2) — zoom in or out by up to 20%
horizontal_flip=True                   RandomFlip("horizontal")
fill_mode="nearest" (its default)      fill_mode="nearest" on rotation and zoom
=====================================  ==========================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import keras
import numpy as np
from keras import layers

ROTATION_FACTOR: Final[float] = 20.0 / 360.0
BRIGHTNESS_FACTOR: Final[float] = 0.2
ZOOM_FACTOR: Final[float] = 0.2


def build_augmenter(seed: int | None = None) -> keras.Sequential:
    """The train-time augmentation. With ``seed`` set the sequence of views is reproducible."""

    def layer_seed(offset: int) -> int | None:
        return None if seed is None else seed * 16 + offset

    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=layer_seed(0)),
            layers.RandomRotation(ROTATION_FACTOR, fill_mode="nearest", seed=layer_seed(1)),
            layers.RandomZoom(ZOOM_FACTOR, fill_mode="nearest", seed=layer_seed(2)),
            layers.RandomBrightness(BRIGHTNESS_FACTOR, value_range=(0, 255), seed=layer_seed(3)),
        ],
        name="augmentation",
    )


def augment_batch(augmenter: keras.Sequential, images) -> object:
    """Augmented float32 pixels 0..255 for a uint8/float batch ``[N, H, W, 3]``."""
    import tensorflow as tf

    return augmenter(tf.cast(images, tf.float32), training=True)


def save_preview(pixels: np.ndarray, path: Path, *, views: int = 5, seed: int = 0) -> None:
    """A grid PNG: each row one training image, first column original, then augmented views."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    rows = min(len(pixels), 6)
    if rows == 0:
        return
    augmenter = build_augmenter(seed)
    figure, axes = pyplot.subplots(rows, views + 1, figsize=(2 * (views + 1), 2 * rows))
    axes = np.atleast_2d(axes)
    for row in range(rows):
        original = pixels[row]
        axes[row, 0].imshow(original)
        axes[row, 0].set_title("original" if row == 0 else "")
        for column in range(1, views + 1):
            view = np.asarray(augment_batch(augmenter, original[np.newaxis]))[0]
            axes[row, column].imshow(np.clip(view, 0, 255).astype(np.uint8))
            axes[row, column].set_title(f"view {column}" if row == 0 else "")
        for axis in axes[row]:
            axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)

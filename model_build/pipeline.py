"""tf.data input pipelines over prepared (decoded-once) uint8 arrays.

No file is opened and no JPEG decoded here: batches are gathered from the in-memory uint8 array
that :func:`model_build.prepare.prepare_split` loaded from the cache, augmented in the graph
(train only) and prefetched.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from model_build.augment import build_augmenter


def train_dataset(
    pixels: np.ndarray,
    label_indices: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    augment: bool = True,
) -> tf.data.Dataset:
    """Shuffled (reshuffled every epoch, seeded), augmented batches of float32 pixels 0..255."""
    images = tf.constant(pixels)
    targets = tf.constant(label_indices)
    count = len(pixels)
    dataset = tf.data.Dataset.range(count).shuffle(count, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(
        lambda index: (tf.gather(images, index), tf.gather(targets, index))
    )
    if augment:
        augmenter = build_augmenter(seed)
        # Sequential (not parallel) map: the augmentation's random state advances in a fixed order,
        # so the same seed gives the same views. Its ops still use every core.
        dataset = dataset.map(
            lambda batch, target: (augmenter(tf.cast(batch, tf.float32), training=True), target)
        )
    else:
        dataset = dataset.map(lambda batch, target: (tf.cast(batch, tf.float32), target))
    return dataset.prefetch(tf.data.AUTOTUNE)


def eval_dataset(
    pixels: np.ndarray, label_indices: np.ndarray, *, batch_size: int
) -> tf.data.Dataset:
    """Batches in file order, untouched (no augmentation)."""
    images = tf.constant(pixels)
    targets = tf.constant(label_indices)
    dataset = tf.data.Dataset.range(len(pixels)).batch(batch_size)
    dataset = dataset.map(
        lambda index: (tf.cast(tf.gather(images, index), tf.float32), tf.gather(targets, index))
    )
    return dataset.prefetch(tf.data.AUTOTUNE)

"""The frozen-feature fast path (``--feature-cache-views K``).

While the MobileNetV2 backbone is frozen its output depends only on its (augmented) input, yet
plain training runs the whole backbone forward on every image in every epoch, and the backbone is
about 97% of the model's compute. Here the backbone runs once per *view* instead: for K augmented
views of each training image (and once for the untouched val images) the features
(7×7×1280 per image) are computed and stored as float16 on disk; the head alone is then trained
on them for as many epochs as needed.

Trade-off, in short:

* **Faster**: a reference-length schedule (37 epochs) costs K backbone passes over train instead of
  37, plus a cheap head per epoch.
* **Less augmentation diversity**: the head sees only K distinct views of each image instead of a
  fresh one every epoch, so with small K it can overfit sooner than plain training.
* **Disk**: 7×7×1280 float16 = 125 KB per view and image (about 10 GB for 16,800 images × 5 views).
* **Frozen only**: fine-tuning changes the backbone, so ``--fine-tune-layers`` runs its phase on
  the fly as usual.

View ``k`` is defined exactly: the augmentation with batch seeds ``batch_seed(seed * 1000 + k, 0,
b)`` applied to batch ``b`` of the training images in file order in batches of ``batch_size``
(:func:`augmented_views`; the batches are augmented in parallel, each from its own seed). The test
``test_training_feature_cache`` checks that the head sees the same features for a view as the full
model computes on the fly for it.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from model_build.augment import augment_batch, batch_seed, build_augmenter
from model_build.model import BACKBONE_NAME

FEATURE_DTYPE = np.float16
HEAD_NAME = "head"
SCALING_NAME = "scale_to_minus1_1"


def view_seed(seed: int, view: int) -> int:
    return seed * 1000 + view


def augmented_views(
    pixels: np.ndarray, *, view: int, seed: int, batch_size: int
) -> tf.data.Dataset:
    """The batches of augmented view ``view`` of ``pixels``, in order (float32 0..255).

    A tf.data pipeline (augmentation prefetched while the backbone runs); batch ``b`` is augmented
    from the stateless seed ``batch_seed(view_seed(seed, view), 0, b)``, so a view is the same every
    time it is produced although the batches are augmented in parallel.
    """
    augmenter = build_augmenter(view_seed(seed, view))
    images = tf.constant(pixels)
    dataset = tf.data.Dataset.range(len(pixels)).batch(batch_size).enumerate()
    dataset = dataset.map(
        lambda number, index: augment_batch(
            augmenter, tf.gather(images, index), seed=batch_seed(view_seed(seed, view), 0, number)
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return dataset.prefetch(2)


def feature_extractor(model: keras.Model):
    """A function pixels 0..255 → backbone features, using the model's own scaling and backbone."""
    scaling = model.get_layer(SCALING_NAME)
    backbone = model.get_layer(BACKBONE_NAME)

    @tf.function(reduce_retracing=True)
    def extract(images: tf.Tensor) -> tf.Tensor:
        return backbone(scaling(tf.cast(images, tf.float32)), training=False)

    return extract


def compute_features(
    model: keras.Model,
    pixels: np.ndarray,
    path: Path,
    *,
    views: int,
    seed: int,
    batch_size: int,
) -> np.ndarray:
    """Features of ``views`` augmented views (``views=0``: the untouched images) → ``.npy`` file.

    Returns a read-only memmap of shape ``[max(views, 1) * N, 7, 7, 1280]``; rows ``k*N .. k*N+N-1``
    are view ``k`` in file order.
    """
    extract = feature_extractor(model)
    count = len(pixels)
    shape = tuple(model.get_layer(BACKBONE_NAME).outputs[0].shape[1:])
    rows = max(views, 1) * count
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    store = np.lib.format.open_memmap(partial, mode="w+", dtype=FEATURE_DTYPE, shape=(rows, *shape))
    if views == 0:
        for start in range(0, count, batch_size):
            batch = pixels[start : start + batch_size]
            store[start : start + len(batch)] = extract(batch).numpy().astype(FEATURE_DTYPE)
    else:
        for view in range(views):
            offset = view * count
            for batch in augmented_views(pixels, view=view, seed=seed, batch_size=batch_size):
                size = int(batch.shape[0])
                store[offset : offset + size] = extract(batch).numpy().astype(FEATURE_DTYPE)
                offset += size
    store.flush()
    del store
    partial.replace(path)
    return np.load(path, mmap_mode="r")


def head_train_dataset(
    features: np.ndarray,
    label_indices: np.ndarray,
    *,
    views: int,
    batch_size: int,
    seed: int,
    first_epoch: int = 0,
) -> tuple[tf.data.Dataset, int]:
    """Shuffled batches over all views; returns the dataset and steps per epoch (one image pass).

    The batches form one stream over permutations of all ``views × N`` rows, permutation ``c``
    keyed by ``[seed, c]`` (stateless); epoch ``e`` is the stream's batches
    ``e*steps .. (e+1)*steps - 1``. ``fit`` keeps one iterator across epochs (``steps_per_epoch``
    is set), so a resumed run passes ``first_epoch`` (the epochs already completed) and sees
    exactly the batches an uninterrupted run would.
    """
    count = len(label_indices)
    targets = np.tile(label_indices, views)
    total = len(targets)
    steps = math.ceil(count / batch_size)

    load = _batch_loader(features, targets)

    def permutation(cycle: tf.Tensor) -> tf.data.Dataset:
        key = tf.stack([tf.constant(seed, tf.int64), cycle])
        order = tf.random.experimental.stateless_shuffle(tf.range(total, dtype=tf.int64), key)
        return tf.data.Dataset.from_tensor_slices(order)

    start = first_epoch * steps * batch_size  # position in the stream
    dataset = tf.data.Dataset.range(start // total, 2**62).flat_map(permutation)
    dataset = dataset.skip(start % total).batch(batch_size).map(load).prefetch(tf.data.AUTOTUNE)
    return dataset, steps


def head_eval_dataset(
    features: np.ndarray, label_indices: np.ndarray, *, batch_size: int
) -> tf.data.Dataset:
    load = _batch_loader(features, label_indices)
    dataset = tf.data.Dataset.range(len(label_indices)).batch(batch_size).map(load)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _batch_loader(features: np.ndarray, targets: np.ndarray):
    """A tf.data map function: a batch of row indices -> (float32 features, targets).

    The rows are read in ascending order, which keeps reads from the on-disk memmap sequential;
    a batch's order does not matter to training.
    """

    def gather(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.sort(index)
        return features[order].astype(np.float32), targets[order]

    def load(index: tf.Tensor):
        batch, target = tf.numpy_function(gather, [index], (tf.float32, tf.int64))
        batch.set_shape((None, *features.shape[1:]))
        target.set_shape((None,))
        return batch, target

    return load


class SaveFullModel(keras.callbacks.Callback):
    """While the head trains on cached features, save the *full* model on val-accuracy gains."""

    def __init__(self, full_model: keras.Model, path: Path, initial_best: float = -math.inf):
        super().__init__()
        self.full_model = full_model
        self.path = Path(path)
        self.best = initial_best

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get("val_accuracy")
        if value is not None and value > self.best:
            self.best = float(value)
            self.full_model.save(self.path)

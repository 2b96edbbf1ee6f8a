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
  The files are kept in the cache folder across runs, keyed by (split content hash, backbone +
  weights hash, view seed): a sweep over head settings, or a rerun, reuses them, and an
  interrupted computation resumes within its view.
* **Frozen only**: fine-tuning changes the backbone, so ``--fine-tune-layers`` runs its phase on
  the fly as usual; ``--fine-tune-from BLOCK`` caches the activations below the block instead
  (:mod:`model_build.training.fine_tune`, through :func:`cached_views`).

View ``k`` is defined exactly: the augmentation with batch seeds ``batch_seed(seed * 1000 + k, 0,
b)`` applied to batch ``b`` of the training images in file order in batches of ``batch_size``
(:func:`augmented_views`; the batches are augmented in parallel, each from its own seed). The test
``test_training_feature_cache`` checks that the head sees the same features for a view as the full
model computes on the fly for it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from model_build.data.augment import augment_batch, batch_seed, build_augmenter
from model_build.data.pipeline import gather_batches
from model_build.data.rowfile import RowFile, RowWriter
from model_build.progress import Progress
from model_build.training.model import Classifier, parts_of

FEATURE_DTYPE = np.float16
FEATURES_DIR = "features"
_FLUSH_EVERY = 32  # batches between progress checkpoints of a partial view


def view_seed(seed: int, view: int) -> int:
    return seed * 1000 + view


def augmented_views(
    pixels: np.ndarray, *, view: int, seed: int, batch_size: int, start: int = 0
) -> tf.data.Dataset:
    """The batches of augmented view ``view`` of ``pixels``, in order (float32 0..255).

    A tf.data pipeline (augmentation prefetched while the backbone runs); batch ``b`` is augmented
    from the stateless seed ``batch_seed(view_seed(seed, view), 0, b)``, so a view is the same every
    time it is produced although the batches are augmented in parallel. ``start`` (a multiple of
    ``batch_size``) skips the batches before it (resuming a partial view). The pixels are read
    from the array (a row file, typically) batch by batch, never copied whole.
    """
    augmenter = build_augmenter(view_seed(seed, view))
    first = start // batch_size
    dataset = gather_batches(pixels, batch_size, first_batch=first)
    dataset = dataset.map(
        lambda number, batch: augment_batch(
            augmenter, batch, seed=batch_seed(view_seed(seed, view), 0, number)
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return dataset.prefetch(2)


def plain_batches(pixels: np.ndarray, *, batch_size: int, start: int = 0) -> tf.data.Dataset:
    """The untouched images in order, batch by batch (float32 0..255)."""
    dataset = gather_batches(pixels, batch_size, first_batch=start // batch_size)
    return dataset.map(lambda number, batch: tf.cast(batch, tf.float32)).prefetch(2)


def _parts(model: keras.Model | Classifier) -> Classifier:
    return model if isinstance(model, Classifier) else parts_of(model)


def feature_extractor(model: keras.Model | Classifier, strategy=None):
    """A function pixels 0..255 → backbone features, using the model's own scaling and backbone.

    With a distribution strategy of several replicas the batch is split across them
    (``strategy.run`` on a distributed batch) and the features gathered back in order.
    """
    return distributed(_parts(model).backbone_features, strategy)


def distributed(function, strategy=None):
    """``function`` (a batch → a batch, row for row) compiled, and with a strategy of several
    replicas run on each replica's contiguous slice of the batch, gathered back in order."""

    @tf.function(reduce_retracing=True)
    def extract(images: tf.Tensor) -> tf.Tensor:
        return function(images)

    if strategy is None or strategy.num_replicas_in_sync <= 1:
        return extract

    @tf.function(reduce_retracing=True)
    def distributed_step(images):
        return strategy.run(extract, args=(images,))

    def extract_distributed(images):
        images = tf.convert_to_tensor(images)
        distributed = strategy.experimental_distribute_values_from_function(
            lambda context: _shard(images, context)
        )
        return tf.concat(strategy.experimental_local_results(distributed_step(distributed)), axis=0)

    return extract_distributed


def _shard(images: tf.Tensor, context) -> tf.Tensor:
    """Replica ``i`` of ``n`` gets the ``i``-th contiguous slice of the batch (order kept)."""
    count = tf.shape(images)[0]
    replicas = context.num_replicas_in_sync
    index = context.replica_id_in_sync_group
    size = (count + replicas - 1) // replicas
    return images[tf.minimum(index * size, count) : tf.minimum((index + 1) * size, count)]


def feature_shape(model: keras.Model | Classifier) -> tuple[int, ...]:
    return tuple(_parts(model).backbone.outputs[0].shape[1:])


def write_view(
    extract,
    pixels: np.ndarray,
    path: Path,
    *,
    shape: tuple[int, ...],
    view: int | None,
    seed: int,
    batch_size: int,
    label: str = "features",
) -> np.ndarray:
    """Features of one view (``view=None``: the untouched images) into ``path`` (float16 .npy).

    Resumable: the partial file ``<path>.partial.npy`` is reopened (never truncated) and the
    count of rows already written, stored beside it after every few batches, is skipped.
    Returns a :class:`~model_build.data.rowfile.RowFile` ``[N, *shape]`` (read row by row).
    """
    if path.is_file():
        return RowFile(path)
    count = len(pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.npy")
    progress_file = path.with_name(path.stem + ".partial.json")
    done = 0
    if partial.is_file() and progress_file.is_file():
        try:
            done = int(json.loads(progress_file.read_text())["rows"])
            if done % batch_size or done > count:
                raise ValueError("partial file does not match")
            store = RowWriter(partial, (count, *shape), FEATURE_DTYPE, resume=True)
            print(f"{label}: resuming after {done} of {count} images")
        except (OSError, ValueError, KeyError):
            done = 0
    if done == 0:
        store = RowWriter(partial, (count, *shape), FEATURE_DTYPE)
    if view is None:
        batches = plain_batches(pixels, batch_size=batch_size, start=done)
    else:
        batches = augmented_views(pixels, view=view, seed=seed, batch_size=batch_size, start=done)
    offset = done
    with Progress(label, total=count, initial=done, unit="img") as progress:
        for number, batch in enumerate(batches, start=1):
            size = int(batch.shape[0])
            store.write(offset, np.asarray(extract(batch)).astype(FEATURE_DTYPE))
            offset += size
            progress.update(size)
            if number % _FLUSH_EVERY == 0:
                store.flush()
                progress_file.write_text(json.dumps({"rows": offset}))
    store.flush()
    store.close()
    partial.replace(path)
    progress_file.unlink(missing_ok=True)
    return RowFile(path)


def compute_features(
    model: keras.Model,
    pixels: np.ndarray,
    path: Path,
    *,
    views: int,
    seed: int,
    batch_size: int,
) -> np.ndarray:
    """Features of ``views`` augmented views (``views=0``: the untouched images) → one ``.npy``.

    Returns a :class:`~model_build.data.rowfile.RowFile` ``[max(views, 1) * N, *feature shape]``;
    rows
    ``k*N .. k*N+N-1`` are view ``k`` in file order. (Training uses :func:`cached_features`,
    one file per view in the cache folder; this is the same computation into one file.)
    """
    extract = feature_extractor(model)
    shape = feature_shape(model)
    parts = [
        write_view(
            extract,
            pixels,
            path.with_name(f"{path.stem}.view{view}.npy"),
            shape=shape,
            view=None if views == 0 else view,
            seed=seed,
            batch_size=batch_size,
        )
        for view in range(max(views, 1))
    ]
    with RowWriter(path, (len(parts) * len(pixels), *shape), FEATURE_DTYPE) as store:
        for index, part in enumerate(parts):
            for start in range(0, len(pixels), 256):
                rows = part[start : start + 256]
                store.write(index * len(pixels) + start, rows)
    del parts
    for view in range(max(views, 1)):
        path.with_name(f"{path.stem}.view{view}.npy").unlink()
    return RowFile(path)


def weights_hash(model: keras.Model | Classifier) -> str:
    """A hash of the backbone's architecture and weights (keys the feature cache)."""
    return network_hash(_parts(model).backbone)


def network_hash(network: keras.Model) -> str:
    """A hash of a network's name, weight shapes and weights."""
    digest = hashlib.sha256(network.name.encode())
    for array in network.get_weights():
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def cached_features(
    model: keras.Model | Classifier,
    split,
    *,
    views: int,
    seed: int,
    batch_size: int,
    cache_dir: Path,
    strategy=None,
    name: str = "features",
) -> list[np.ndarray]:
    """The features of ``views`` augmented views of ``split`` (``views=0``: untouched), one
    :class:`~model_build.data.rowfile.RowFile` per view, from the cache folder or computed into it.

    ``split`` is a :class:`model_build.data.prepare.PreparedSplit`. Key:
    ``<cache_dir>/features/<backbone+weights hash>/<split content hash>/<view>.npy`` where
    ``<view>`` is ``seed<view seed>_b<batch size>`` (batch ``b`` of a view is augmented from its
    own seed, so the batch size is part of the view's definition) or ``plain``.
    """
    return cached_views(
        feature_extractor(model, strategy),
        Path(cache_dir) / FEATURES_DIR / weights_hash(model) / split.content_hash,
        split.pixels,
        shape=feature_shape(model),
        views=views,
        seed=seed,
        batch_size=batch_size,
        name=f"features {name}",
    )


def view_names(views: int, *, seed: int, batch_size: int) -> list[str]:
    """The file stems of ``views`` augmented views (``views=0``: ``["plain"]``)."""
    if not views:
        return ["plain"]
    return [f"seed{view_seed(seed, view)}_b{batch_size}" for view in range(views)]


def cached_views(
    extract,
    folder: Path,
    pixels: np.ndarray,
    *,
    shape: tuple[int, ...],
    views: int,
    seed: int,
    batch_size: int,
    name: str,
) -> list[np.ndarray]:
    """``extract`` of ``views`` augmented views of ``pixels`` (``views=0``: untouched), one
    float16 row file per view in ``folder`` (named by :func:`view_names`), computed only where
    missing and resumed within a view (:func:`write_view`)."""
    names = view_names(views, seed=seed, batch_size=batch_size)
    result = []
    for index, stem in enumerate(names):
        path = Path(folder) / f"{stem}.npy"
        if not path.is_file():
            print(f"{name}: view {index + 1}/{len(names)} → {path}")
        result.append(
            write_view(
                extract,
                pixels,
                path,
                shape=shape,
                view=index if views else None,
                seed=seed,
                batch_size=batch_size,
                label=f"{name} {index + 1}/{len(names)}",
            )
        )
    return result


def head_train_dataset(
    features: np.ndarray | Sequence[np.ndarray],
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
    features = _stacked(features, count)
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
    features: np.ndarray | Sequence[np.ndarray], label_indices: np.ndarray, *, batch_size: int
) -> tf.data.Dataset:
    load = _batch_loader(_stacked(features, len(label_indices)), label_indices)
    dataset = tf.data.Dataset.range(len(label_indices)).batch(batch_size).map(load)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _batch_loader(features: np.ndarray, targets: np.ndarray):
    """A tf.data map function: a batch of row indices -> (float32 features, targets).

    The rows are read in ascending order, which keeps reads from the on-disk file sequential;
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


class _Stacked:
    """Row ``r`` of the views ``[v0, v1, …]`` stacked (view ``r // N``, image ``r % N``), read
    from the per-view row files without concatenating them."""

    def __init__(self, parts: Sequence[np.ndarray], count: int) -> None:
        self.parts = list(parts)
        self.count = count
        self.shape = (len(self.parts) * count, *self.parts[0].shape[1:])

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.parts[0].dtype)
        views, images = np.divmod(rows, self.count)
        for view in np.unique(views):
            mask = views == view
            out[mask] = self.parts[int(view)][images[mask]]
        return out


def _stacked(features, count: int):
    """One array-like of all rows: an array or row file as it is, a list of per-view parts
    stacked (a list of one: that part)."""
    if not isinstance(features, (list, tuple)):
        return features
    return features[0] if len(features) == 1 else _Stacked(features, count)

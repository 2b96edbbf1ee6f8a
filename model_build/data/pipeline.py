"""tf.data input pipelines over prepared (decoded-once) uint8 arrays.

No JPEG is decoded here: batches are gathered from the uint8 array that
:func:`model_build.data.prepare.prepare_split` returns — the split's pixels in the cache folder,
read
row by row (:class:`model_build.data.rowfile.RowFile`) — by a ``tf.numpy_function`` per batch,
augmented in the graph (train only) and prefetched. The pixels are never copied whole (no
``tf.constant`` of the array, no tf.data copy): one copy lives in the kernel's page cache, and each
batch is read from it when it is needed.

**Epoch randomness.** With an :class:`EpochRandomness` (what training always passes) everything
random in epoch ``e`` is a pure function of ``(seed, e)``: the shuffle order is a stateless
permutation keyed by ``[seed, e]``, batch ``b`` is augmented from the stateless seed
``batch_seed(seed, e, b)`` (:mod:`model_build.data.augment`), and at the start of every epoch each
Keras
``SeedGenerator`` (the model's Dropout, and any tracked layer's) is set to a state derived from
``(seed, generator index, e)``. So an epoch is the same whether the process ran the epochs before
it or resumed after a crash — a resumed run reproduces an uninterrupted one.

**Parallel augmentation.** Because no batch's augmentation depends on random state left by another,
the gather-cast-augment map runs with ``num_parallel_calls=AUTOTUNE`` and ``deterministic=True``
(output in order), about 1.8× faster than a sequential map on two cores.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from model_build.data.augment import batch_seed, build_augmenter
from model_build.progress import Progress


def seed_generators(*layers: keras.Layer) -> list:
    """Every Keras ``SeedGenerator`` of ``layers`` and their sublayers, in a stable order."""
    found, seen = [], set()
    for root in layers:
        for layer in root._flatten_layers(include_self=True, recursive=True):
            for generator in getattr(layer, "_seed_generators", ()):
                if id(generator) not in seen:
                    seen.add(id(generator))
                    found.append(generator)
    return found


def epoch_seed_state(seed: int, index: int, epoch: int) -> np.ndarray:
    """The ``[seed, counter]`` state of generator ``index`` at the start of ``epoch``."""
    key = np.random.SeedSequence([seed % 2**32, index, epoch]).generate_state(1)[0]
    return np.array([int(key) % 2**31, 0])


def reseed(layers: list, seed: int, epoch: int) -> None:
    """Set every SeedGenerator of ``layers`` to its state for ``epoch`` (dtype kept)."""
    for index, generator in enumerate(seed_generators(*layers)):
        state = generator.state
        state.assign(np.asarray(epoch_seed_state(seed, index, epoch), dtype=state.dtype))


class EpochRandomness(keras.callbacks.Callback):
    """Callback making each epoch's randomness a pure function of ``(seed, epoch)``.

    ``on_epoch_begin`` sets :attr:`epoch` (read by :func:`train_dataset`'s shuffle when Keras
    creates the epoch's iterator, which happens after ``on_epoch_begin`` when ``fit`` has no
    ``steps_per_epoch``) and reseeds the SeedGenerators of the tracked layers and of the model
    being fitted.
    """

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = int(seed)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")

    def set_epoch(self, epoch: int) -> None:
        self.epoch.assign(epoch)
        model = [self.model] if self.model is not None else []
        reseed(model, self.seed, epoch)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.set_epoch(epoch)


def epoch_order(count: int, seed: int, epoch) -> tf.Tensor:
    """A permutation of ``0..count-1`` determined by ``(seed, epoch)`` alone."""
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), seed=key)


def train_dataset(
    pixels: np.ndarray,
    label_indices: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    augment: bool = True,
    randomness: EpochRandomness | None = None,
) -> tf.data.Dataset:
    """Shuffled (a new order every epoch, seeded), augmented batches of float32 pixels 0..255.

    With ``randomness`` (pass the same object to ``fit``'s callbacks) the order and the views of
    epoch ``e`` depend only on ``(seed, e)``; without it the shuffle is tf.data's stateful one
    (reshuffled per iteration) and the batch seeds come from a seeded random stream redrawn per
    iteration, reproducible only for a process that runs every epoch.
    """
    count = len(pixels)
    augmenter = build_augmenter(seed) if augment else None
    gather = _gatherer(pixels, label_indices)

    def load(index, key):
        images, targets = gather(index)
        batch = tf.cast(images, tf.float32)
        if augmenter is not None:
            batch = augmenter(batch, seed=key, training=True)
        return batch, targets

    # Every batch carries its own seed, so the map can run in parallel and stay reproducible:
    # ``deterministic=True`` keeps the output order, and no random state is shared between calls.
    def load_all(batches: tf.data.Dataset) -> tf.data.Dataset:
        return batches.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    if randomness is None:
        order = tf.data.Dataset.range(count).shuffle(
            count, seed=seed, reshuffle_each_iteration=True
        )
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = load_all(tf.data.Dataset.zip(order.batch(batch_size), seeds))
    else:
        epoch = randomness.epoch

        def epoch_batches(current):
            batches = tf.data.Dataset.from_tensor_slices(epoch_order(count, seed, current))
            batches = batches.batch(batch_size).enumerate()
            return load_all(
                batches.map(lambda number, index: (index, batch_seed(seed, current, number)))
            )

        # The epoch is read once per iteration (Keras creates the epoch's iterator after
        # on_epoch_begin) in its own small map, and the parallel map runs inside the flat_map on
        # the value: with op determinism on, tf.data runs a parallel map sequentially when a
        # variable is read upstream of it in the same pipeline (measured: half the throughput).
        dataset = (
            tf.data.Dataset.from_tensors(0)
            .map(lambda _: tf.identity(epoch))
            .flat_map(epoch_batches)
        )
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(-(-count // batch_size)))
    return dataset.prefetch(tf.data.AUTOTUNE)


def eval_dataset(
    pixels: np.ndarray, label_indices: np.ndarray | None = None, *, batch_size: int
) -> tf.data.Dataset:
    """Batches in file order, untouched (no augmentation); images only without labels."""
    if label_indices is None:
        return (
            gather_batches(pixels, batch_size)
            .map(lambda number, batch: tf.cast(batch, tf.float32))
            .prefetch(tf.data.AUTOTUNE)
        )
    gather = _gatherer(pixels, label_indices)

    def load(index):
        images, targets = gather(index)
        return tf.cast(images, tf.float32), targets

    dataset = tf.data.Dataset.range(len(pixels)).batch(batch_size).map(load)
    return dataset.prefetch(tf.data.AUTOTUNE)


def gather_batches(pixels: np.ndarray, batch_size: int, *, first_batch: int = 0):
    """``(batch number, uint8 batch)`` in file order from batch ``first_batch`` on."""
    count = len(pixels)
    gather = _gatherer(pixels, None)
    batches = tf.data.Dataset.range(count).batch(batch_size).enumerate()
    return batches.skip(first_batch).map(lambda number, index: (number, gather(index)))


def _gatherer(pixels: np.ndarray, label_indices: np.ndarray | None):
    """A graph function: int64 row indices → those rows (uint8 pixels, or any other dtype the
    array holds, e.g. cached float16 activations) and their labels, read from the array (a row
    file, typically) by ``tf.numpy_function``."""
    shape = tuple(pixels.shape[1:])
    dtype = tf.as_dtype(np.dtype(pixels.dtype))
    targets = None if label_indices is None else np.asarray(label_indices, dtype=np.int64)

    def read(index: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(pixels[index])

    def gather(index: tf.Tensor):
        images = tf.numpy_function(read, [index], dtype, stateful=False)
        images.set_shape((None, *shape))
        if targets is None:
            return images
        return images, tf.gather(tf.constant(targets), index)

    return gather


def replicas_of(model) -> int:
    """Replicas of the distribution strategy ``model`` was built under (1 without one)."""
    strategy = getattr(model, "distribute_strategy", None)
    return int(getattr(strategy, "num_replicas_in_sync", 1) or 1)


def pad_for_replicas(dataset: tf.data.Dataset, replicas: int) -> tf.data.Dataset:
    """Pad every batch to a multiple of ``replicas`` with copies of its first row, weighted 0.

    ``MirroredStrategy`` splits a global batch between the replicas; a last batch that does not
    divide evenly (7 images on 2 replicas) fails inside Keras' ``fit``/``predict`` (``AddN must
    have the same size and shape``). Batches of ``(x, y)`` become ``(x, y, weight)`` — compile
    with :func:`compile_for` so the padding counts neither in the loss nor in the accuracy —
    and batches of ``x`` alone are padded (cut the predictions to the real count).
    """
    if replicas <= 1:
        return dataset

    def pad(images, targets=None):
        count = tf.shape(images)[0]
        extra = (-count) % replicas
        padded = tf.concat([images, tf.repeat(images[:1], extra, axis=0)], axis=0)
        if targets is None:
            return padded
        weights = tf.concat([tf.ones([count]), tf.zeros([extra])], axis=0)
        targets = tf.concat([targets, tf.repeat(targets[:1], extra, axis=0)], axis=0)
        return padded, targets, weights

    return dataset.map(pad)


@keras.saving.register_keras_serializable(package="model_build")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy with label smoothing, for integer labels.

    Keras' ``SparseCategoricalCrossentropy`` has no ``label_smoothing`` (only the one-hot
    ``CategoricalCrossentropy`` does, https://keras.io/api/losses/probabilistic_losses/), so the
    labels are made one-hot inside the loss and passed to ``categorical_crossentropy``: the target
    of the true label is ``1 - ε + ε/K`` and of each other label ``ε/K``. Registered so a saved
    model that carries its compile settings loads anywhere.
    """

    def __init__(self, label_smoothing: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        classes = keras.ops.shape(y_pred)[-1]
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        return keras.losses.categorical_crossentropy(
            keras.ops.one_hot(labels, classes, dtype=y_pred.dtype),
            y_pred,
            label_smoothing=self.label_smoothing,
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def training_loss(label_smoothing: float = 0.0, replicas: int = 1):
    """The training loss: sparse categorical cross-entropy (integer labels; identical to the
    reference's categorical cross-entropy on one-hot), with ``label_smoothing`` ε > 0 the
    smoothed one; weighted (padding rows count 0) when the batches are padded for several
    replicas (:func:`pad_for_replicas`)."""
    reduction = "mean_with_sample_weight" if replicas > 1 else "sum_over_batch_size"
    if label_smoothing > 0:
        return SmoothedSparseCrossentropy(label_smoothing, reduction=reduction)
    if replicas <= 1:
        return "sparse_categorical_crossentropy"
    return keras.losses.SparseCategoricalCrossentropy(reduction=reduction)


def compile_for(
    model, learning_rate: float, replicas: int = 1, *, label_smoothing: float = 0.0
) -> None:
    """Adam, :func:`training_loss`, accuracy (weighted when the batches are padded for several
    replicas, :func:`pad_for_replicas`)."""
    compile_with(model, keras.optimizers.Adam(learning_rate=learning_rate), replicas,
                 label_smoothing=label_smoothing)  # fmt: skip


def compile_with(model, optimizer, replicas: int = 1, *, label_smoothing: float = 0.0) -> None:
    """Compile ``model`` with ``optimizer``, :func:`training_loss` and accuracy."""
    metrics = {"weighted_metrics" if replicas > 1 else "metrics": ["accuracy"]}
    model.compile(optimizer=optimizer, loss=training_loss(label_smoothing, replicas), **metrics)


def predict(
    model, pixels: np.ndarray, *, batch_size: int = 32, verbose: int = 0, label: str | None = None
) -> np.ndarray:
    """The model's probabilities for uint8 images, compiled (``predict``), batch by batch.

    With ``label`` (and ``verbose=0``) progress is reported as :mod:`model_build.progress` does.
    """
    return _predict(model, pixels, batch_size=batch_size, verbose=verbose, label=label)


def predict_outputs(
    model, pixels: np.ndarray, *, batch_size: int = 32, verbose: int = 0, label: str | None = None
) -> dict[str, np.ndarray]:
    """Every output of a model with named outputs (``{"probabilities", "features"}`` of
    :meth:`model_build.training.model.Classifier.with_features`) in one pass, as
    :func:`predict`."""
    return _predict(model, pixels, batch_size=batch_size, verbose=verbose, label=label)


def _predict(model, pixels: np.ndarray, *, batch_size: int, verbose: int, label: str | None):
    data = pad_for_replicas(eval_dataset(pixels, batch_size=batch_size), replicas_of(model))
    callbacks = []
    if label and not verbose:
        callbacks.append(_PredictProgress(label, len(pixels), batch_size))
    try:
        output = model.predict(data, verbose=verbose, callbacks=callbacks)
    finally:
        for callback in callbacks:
            callback.close()
    if isinstance(output, dict):
        return {name: np.asarray(part, np.float32)[: len(pixels)] for name, part in output.items()}
    return np.asarray(output, dtype=np.float32)[: len(pixels)]


class _PredictProgress(keras.callbacks.Callback):
    def __init__(self, label: str, total: int, batch_size: int) -> None:
        super().__init__()
        self.progress = Progress(label, total=total)
        self.total, self.batch_size, self.done = total, batch_size, 0

    def on_predict_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = min(self.batch_size, self.total - self.done)
        self.done += step
        self.progress.update(step)

    def close(self) -> None:
        self.progress.__exit__(None, None, None)

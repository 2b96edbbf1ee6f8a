"""tf.data input pipelines over prepared (decoded-once) uint8 arrays.

No file is opened and no JPEG decoded here: batches are gathered from the in-memory uint8 array
that :func:`model_build.prepare.prepare_split` loaded from the cache, augmented in the graph
(train only) and prefetched.

**Epoch randomness.** With an :class:`EpochRandomness` (what training always passes) everything
random in epoch ``e`` is a pure function of ``(seed, e)``: the shuffle order is a stateless
permutation keyed by ``[seed, e]``, batch ``b`` is augmented from the stateless seed
``batch_seed(seed, e, b)`` (:mod:`model_build.augment`), and at the start of every epoch each Keras
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

from model_build.augment import batch_seed, build_augmenter


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
        self.layers: list = []

    def track(self, layer: keras.Layer) -> None:
        self.layers.append(layer)

    def set_epoch(self, epoch: int) -> None:
        self.epoch.assign(epoch)
        model = [self.model] if self.model is not None else []
        reseed([*self.layers, *model], self.seed, epoch)

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
    images = tf.constant(pixels)
    targets = tf.constant(label_indices)
    count = len(pixels)
    augmenter = build_augmenter(seed) if augment else None

    def load(index, key):
        batch = tf.cast(tf.gather(images, index), tf.float32)
        if augmenter is not None:
            batch = augmenter(batch, seed=key, training=True)
        return batch, tf.gather(targets, index)

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

"""Fine-tune the top of the backbone from cached activations (``--fine-tune-from BLOCK``).

When only the blocks from ``BLOCK`` up are trained, everything below the block never changes, so
its output for an augmented view of a photo is the same in every epoch. It is computed once per
view, stored as float16 row files (``<cache>/activations/<weights of the part below>/<block>/<split
content hash>/<view>.npy``, kept across runs and resumed within a view exactly like the feature
cache, :func:`model_build.training.feature_cache.cached_views`), and training runs only the part
above it: for MobileNetV2 from ``block_14_expand`` that is 3 of 17 blocks plus the last 1×1
convolution, at 7×7 — about a quarter of the multiply-adds, and no augmentation or decoding per
epoch.

The two phases, in one run (:func:`train_from_activations`):

1. **Frozen**: the final features of every cached view are the (frozen) top applied to its
   activations, computed once into the feature cache; the head alone trains on them, as
   ``--feature-cache-views`` does.
2. **Fine-tune**: from the best phase-1 head, the top blocks and the head train together on the
   cached activations, the head at ``--fine-tune-head-learning-rate`` and the backbone at the
   lower ``--fine-tune-learning-rate`` (:class:`TwoRateAdam`). BatchNormalization stays in
   inference mode, as the Keras transfer-learning guide prescribes
   (https://keras.io/guides/transfer_learning/, "Fine-tuning": call the base model with
   ``training=False`` so its BatchNorm layers do not update their batch statistics, which would
   wreck what the model has learned): the top is called with ``training=False`` and its
   BatchNormalization layers are not trainable, so their moving statistics (and scale and offset)
   never move.

The top is a sub-model of the backbone that *shares* its layers, so training it trains the full
classifier: what is checkpointed, evaluated, exported and published is the whole network — the
same architecture, parameter count and TFLite size as a frozen run with the same head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import keras
import numpy as np

from model_build.data.pipeline import compile_with
from model_build.training.feature_cache import (
    FEATURES_DIR,
    cached_views,
    distributed,
    network_hash,
    weights_hash,
)
from model_build.training.model import Classifier

ACTIVATIONS_DIR: Final[str] = "activations"


def split_backbone(backbone: keras.Model, block: str) -> tuple[keras.Model, keras.Model]:
    """``(below, top)``: the backbone up to the input of layer ``block``, and from there to its
    output. Both share the backbone's layers (and weights); ``top(below(x)) == backbone(x)``.

    ``block`` must be a block boundary (a registry entry's ``fine_tune_blocks``), whose input is
    the only tensor crossing the cut.
    """
    cut = backbone.get_layer(block).input
    below = keras.Model(backbone.inputs[0], cut, name=f"{backbone.name}_below_{block}")
    top = keras.Model(cut, backbone.outputs[0], name=f"{backbone.name}_from_{block}")
    return below, top


def activation_shape(below: keras.Model) -> tuple[int, ...]:
    return tuple(below.outputs[0].shape[1:])


def cached_activations(
    classifier: Classifier,
    below: keras.Model,
    split,
    *,
    block: str,
    views: int,
    seed: int,
    batch_size: int,
    cache_dir: Path,
    strategy=None,
    name: str,
) -> list[np.ndarray]:
    """The activations at ``block`` of ``views`` augmented views of ``split`` (``views=0``: the
    untouched photos), one float16 row file per view, from the cache or computed into it.

    Keyed by the weights of the part below the block (fine-tuning the top never invalidates it),
    the block, the split's content and the view's seed and batch size.
    """

    def extract(pixels):
        return below(classifier.scaling(keras.ops.cast(pixels, "float32")), training=False)

    folder = Path(cache_dir) / ACTIVATIONS_DIR / network_hash(below) / block / split.content_hash
    return cached_views(
        distributed(extract, strategy),
        folder,
        split.pixels,
        shape=activation_shape(below),
        views=views,
        seed=seed,
        batch_size=batch_size,
        name=f"activations {name} at {block}",
    )


def features_from_activations(
    classifier: Classifier,
    top: keras.Model,
    activations: list[np.ndarray],
    *,
    block: str,
    content_hash: str,
    batch_size: int,
    cache_dir: Path,
    strategy=None,
    name: str,
) -> list[np.ndarray]:
    """The backbone's final features of each cached view: the top (as it is now, frozen) applied
    to the view's activations, into the feature cache under the whole backbone's weights hash."""

    def extract(rows):
        return top(keras.ops.cast(rows, "float32"), training=False)

    folder = Path(cache_dir) / FEATURES_DIR / weights_hash(classifier) / content_hash
    shape = tuple(top.outputs[0].shape[1:])
    run = distributed(extract, strategy)
    result = []
    for index, rows in enumerate(activations):
        stem = f"{Path(rows.path).stem}.from_{block}"
        result.extend(
            cached_views(
                run,
                folder / stem,
                rows,
                shape=shape,
                views=0,
                seed=0,
                batch_size=batch_size,
                name=f"features {name} {index + 1}/{len(activations)} from {block}",
            )
        )
    return result


class TwoRateAdam(keras.optimizers.Adam):
    """Adam with a smaller step for the backbone: a variable in ``backbone_variables`` moves at
    ``learning_rate × backbone_ratio``, every other one (the head) at ``learning_rate``.

    One optimizer, so a learning-rate schedule (``ReduceLROnPlateau``) lowers both rates together
    and keeps their ratio. (Scaling the backbone's gradients instead would do nothing: Adam's step
    does not depend on the scale of the gradient.)
    """

    def __init__(self, *, backbone_variables, backbone_ratio: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.backbone_ratio = float(backbone_ratio)
        self._backbone_ids = {id(variable) for variable in backbone_variables}
        self._backbone_indices: set[int] = set()

    def build(self, variables) -> None:
        super().build(variables)
        self._backbone_indices = {
            index for index, variable in enumerate(variables) if id(variable) in self._backbone_ids
        }

    def update_step(self, gradient, variable, learning_rate) -> None:
        if self._get_variable_index(variable) in self._backbone_indices:
            learning_rate = learning_rate * self.backbone_ratio
        super().update_step(gradient, variable, learning_rate)


def freeze_for_fine_tuning(top: keras.Model) -> None:
    """Every layer of ``top`` trains except BatchNormalization (inference mode, fixed)."""
    top.trainable = True
    for layer in top.layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)


def fine_tuning_model(top: keras.Model, head: keras.Model) -> keras.Model:
    """activations at the block → probabilities: the top (BatchNorm in inference mode, as the
    Keras transfer-learning guide calls the base model) and the head, layers shared."""
    inputs = keras.Input(shape=top.inputs[0].shape[1:], name="activations")
    return keras.Model(inputs, head(top(inputs, training=False)), name="fine_tune_top")


def compile_two_rates(
    trainer: keras.Model,
    top: keras.Model,
    *,
    head_learning_rate: float,
    backbone_learning_rate: float,
    replicas: int = 1,
    label_smoothing: float = 0.0,
) -> None:
    """Compile ``trainer`` like :func:`model_build.data.pipeline.compile_for`, with
    :class:`TwoRateAdam` (the top at ``backbone_learning_rate``, the head at
    ``head_learning_rate``)."""
    optimizer = TwoRateAdam(
        learning_rate=head_learning_rate,
        backbone_variables=top.trainable_variables,
        backbone_ratio=backbone_learning_rate / head_learning_rate,
    )
    compile_with(trainer, optimizer, replicas, label_smoothing=label_smoothing)

"""The classifier: the reference architecture, and the small stand-in the embedded demo trains.

Both take RGB pixels 0..255 ``[N, 224, 224, 3]`` (uint8 or float; uint8 arrays are converted to
float32 on entry) and scale them *inside* the model (contract 2 of ARCHITECTURE.md), so every
runtime feeds raw pixels.

``mobilenet_v2`` is the reference exactly::

    Rescaling(1/127.5, offset=-1)            # [-1, 1], what ImageNet MobileNetV2 expects
    MobileNetV2(include_top=False), frozen, called with training=False
    Conv2D(128, 3×3, relu) → MaxPooling2D(2×2) → Flatten → Dropout(0.2)
    Dense(128, relu) → Dense(num_classes, softmax)

With 14 labels it has 3,800,142 parameters, 1,542,158 trainable. (The reference rescaled to [0, 1],
which does not match the ImageNet weights.)

``small`` is a compact CNN trained from scratch, for the generated sample data on a laptop CPU. It
first average-pools 224 → 112 (antialiased and TFLite-friendly), so the input contract stays the
same as the real model's.

**One anatomy.** :func:`build_classifier` hands out the parts it built — ``scaling``,
``backbone``, ``head`` — with the model, and :func:`parts_of` finds the same parts in a model
loaded from ``model.keras`` by its structure (input → scaling → backbone → head), never by a layer
name. :meth:`Classifier.with_features` is the one two-output model (probabilities and the pooled
backbone features) that evaluation runs once per photo, export converts and the unfamiliarity
score reads; the feature cache and the fine-tuning phase take the backbone from the parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import keras
from keras import layers

from contracts.image import CHANNELS, IMAGE_SIZE
from model_build.training.backbones import BACKBONES, Backbone, backbone_spec

MODEL_KINDS: Final[tuple[str, ...]] = (*BACKBONES, "small")
HEAD_KINDS: Final[tuple[str, ...]] = ("reference", "gap")
SCALING_NAME: Final[str] = "scale_to_minus1_1"
HEAD_NAME: Final[str] = "head"
PROBABILITIES: Final[str] = "probabilities"
FEATURES: Final[str] = "features"
ModelKind = str


@dataclass(frozen=True)
class Classifier:
    """A classifier and the parts it is made of.

    ``model`` maps pixels 0..255 to probabilities (what is trained, saved and exported).
    ``scaling``, ``backbone`` and ``head`` are its layers (shared, not copies: training the model
    trains them); all three are None for the small CNN, which has no backbone.
    """

    model: keras.Model
    scaling: keras.Layer | None = None
    backbone: keras.Model | None = None
    head: keras.Model | None = None

    @property
    def has_backbone(self) -> bool:
        return self.backbone is not None

    def backbone_features(self, pixels):
        """Pixels 0..255 → the backbone's last feature map (inference mode)."""
        return self.backbone(self.scaling(keras.ops.cast(pixels, "float32")), training=False)

    def with_features(self) -> keras.Model:
        """One model, two outputs: ``{"probabilities", "features"}``, the features being the
        global average of the backbone's last feature map (``[N, 1280]``); the backbone runs once
        for both. Without a backbone (the small CNN) the only output is the probabilities."""
        inputs = keras.Input(shape=self.model.inputs[0].shape[1:], name="image")
        if self.backbone is None:
            return keras.Model(inputs, {PROBABILITIES: self.model(inputs)}, name="classifier")
        maps = self.backbone(self.scaling(inputs), training=False)
        outputs = {
            PROBABILITIES: self.head(maps, training=False),
            FEATURES: layers.GlobalAveragePooling2D(name="pooled_features")(maps),
        }
        return keras.Model(inputs, outputs, name="classifier_with_features")

    def pooled_features(self) -> keras.Model:
        """The features output alone: pixels → pooled backbone features ``[N, 1280]``."""
        inputs = keras.Input(shape=self.model.inputs[0].shape[1:], name="image")
        maps = self.backbone(self.scaling(inputs), training=False)
        pooled = layers.GlobalAveragePooling2D(name="pooled_features")(maps)
        return keras.Model(inputs, pooled, name="pooled_features")


def parts_of(model: keras.Model) -> Classifier:
    """The parts of a classifier built by :func:`build_classifier` (also after loading it from
    ``model.keras``): found by the structure the builder gives every backbone model — one
    Rescaling layer, then the backbone sub-model, then the head sub-model — not by name. Any other
    model (the small CNN) comes back with no parts."""
    inner = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if (
        len(inner) == 3
        and isinstance(inner[0], layers.Rescaling)
        and all(isinstance(layer, keras.Model) for layer in inner[1:])
    ):
        scaling, backbone, head = inner
        return Classifier(model=model, scaling=scaling, backbone=backbone, head=head)
    return Classifier(model=model)


class WeightsUnavailable(RuntimeError):
    """The requested backbone weights cannot be obtained (typically: offline, not yet cached)."""


def build_model(
    kind: ModelKind = "mobilenet_v2",
    *,
    num_classes: int,
    weights: str | Path | None = "imagenet",
    dropout_rate: float = 0.2,
    image_size: int = IMAGE_SIZE,
    head: str = "reference",
) -> keras.Model:
    """Build an uncompiled classifier (the model of :func:`build_classifier`)."""
    return build_classifier(
        kind,
        num_classes=num_classes,
        weights=weights,
        dropout_rate=dropout_rate,
        image_size=image_size,
        head=head,
    ).model


def build_classifier(
    kind: ModelKind = "mobilenet_v2",
    *,
    num_classes: int,
    weights: str | Path | None = "imagenet",
    dropout_rate: float = 0.2,
    image_size: int = IMAGE_SIZE,
    head: str = "reference",
) -> Classifier:
    """Build an uncompiled classifier and hand out its parts.

    ``head`` (backbone models only): ``"reference"`` (the reference head, exactly) or ``"gap"``
    (global average pooling → dropout 0.3 → dense softmax; see :func:`build_head`).

    ``weights`` (``mobilenet_v2`` only): ``"imagenet"`` (Keras downloads and caches them in
    ``~/.keras/models``), a path to a local MobileNetV2 no-top weights file, or ``None`` /
    ``"none"`` for random initialisation. Raises :class:`WeightsUnavailable` when the ImageNet
    download fails.
    """
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    spec = backbone_spec(kind)
    if spec is not None:
        return _build_on_backbone(spec, num_classes, weights, dropout_rate, image_size, head)
    if kind == "small":
        return Classifier(model=_build_small(num_classes, dropout_rate, image_size))
    raise ValueError(f"unknown model kind {kind!r}; expected one of {MODEL_KINDS}")


def build_backbone(
    weights: str | Path | None = "imagenet",
    image_size: int = IMAGE_SIZE,
    spec: Backbone = BACKBONES["mobilenet_v2"],
) -> keras.Model:
    """The registry entry's application without its top, frozen.

    Raises :class:`WeightsUnavailable` when the ImageNet weights cannot be downloaded.
    """
    weights = _normalise_weights(weights)
    try:
        backbone = getattr(keras.applications, spec.application)(
            input_shape=(image_size, image_size, CHANNELS),
            include_top=False,
            weights=weights,
            name=spec.layer_name,
        )
    except Exception as error:  # keras.utils.get_file raises a plain Exception on URL errors
        if weights == "imagenet":
            raise WeightsUnavailable(
                f"could not download the ImageNet {spec.application} weights ({_first_line(error)})"
            ) from error
        raise
    backbone.trainable = False
    return backbone


def build_head(
    feature_shape: tuple[int, ...],
    num_classes: int,
    dropout_rate: float = 0.2,
    kind: str = "reference",
) -> keras.Model:
    """The head on backbone features (also what the feature-cache mode trains).

    ``"reference"``: the reference head exactly (1.54 M trainable parameters with 14 labels).
    ``"gap"``: GlobalAveragePooling2D → Dropout(0.3) → Dense(softmax): 1,281 parameters per
    label, no convolution, so cheaper at inference than the reference head; same backbone.
    """
    features = keras.Input(shape=feature_shape, name="features")
    if kind == "gap":
        x = layers.GlobalAveragePooling2D(name="head_gap")(features)
        x = layers.Dropout(0.3, name="head_dropout")(x)
        outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
        return keras.Model(features, outputs, name=HEAD_NAME)
    if kind != "reference":
        raise ValueError(f"unknown head {kind!r}; expected one of {HEAD_KINDS}")
    x = layers.Conv2D(128, 3, activation="relu", name="head_conv")(features)
    x = layers.MaxPooling2D(2, name="head_pool")(x)
    x = layers.Flatten(name="head_flatten")(x)
    x = layers.Dropout(dropout_rate, name="head_dropout")(x)
    x = layers.Dense(128, activation="relu", name="head_dense")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(features, outputs, name=HEAD_NAME)


def _build_on_backbone(
    spec: Backbone,
    num_classes: int,
    weights: str | Path | None,
    dropout_rate: float,
    image_size: int,
    head_kind: str = "reference",
) -> Classifier:
    backbone = build_backbone(weights, image_size, spec)
    head = build_head(tuple(backbone.outputs[0].shape[1:]), num_classes, dropout_rate, head_kind)
    inputs = keras.Input(shape=(image_size, image_size, CHANNELS), name="image")
    scaling = layers.Rescaling(spec.scale, offset=spec.offset, name=SCALING_NAME)
    # training=False keeps BatchNorm in inference mode even when layers are unfrozen to fine-tune
    # (the Keras transfer-learning guide, https://keras.io/guides/transfer_learning/).
    features = backbone(scaling(inputs), training=False)
    outputs = head(features)
    model = keras.Model(inputs, outputs, name=f"{spec.name}_classifier")
    return Classifier(model=model, scaling=scaling, backbone=backbone, head=head)


def _build_small(num_classes: int, dropout_rate: float, image_size: int) -> keras.Model:
    inputs = keras.Input(shape=(image_size, image_size, CHANNELS), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name=SCALING_NAME)(inputs)
    x = layers.AveragePooling2D(2, name="downsample")(x)
    # 112 → 56 by a strided convolution, then three conv + pool stages down to 7×7.
    for index, (filters, strides) in enumerate(((24, 2), (32, 1), (64, 1), (128, 1))):
        x = layers.Conv2D(
            filters, 3, strides=strides, padding="same", use_bias=False, name=f"conv{index}"
        )(x)
        # momentum 0.9: the moving statistics settle within an epoch of a small dataset, so
        # val accuracy tracks train accuracy from the first epochs.
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{index}")(x)
        x = layers.ReLU(name=f"relu{index}")(x)
        if strides == 1:
            x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout_rate, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def _normalise_weights(weights: str | Path | None) -> str | None:
    if weights is None or str(weights).lower() == "none":
        return None
    if str(weights) == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    return str(path)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def ensure_weights(kind: str, weights: str | Path | None) -> None:
    """Fail fast, before any data is decoded: the weights file exists, or the ImageNet weights
    are in Keras' cache (downloaded now if not). Raises :class:`WeightsUnavailable` or
    ``FileNotFoundError``."""
    spec = backbone_spec(kind)
    normalised = _normalise_weights(weights)  # FileNotFoundError for a missing PATH
    if spec is None or normalised != "imagenet":
        return
    try:
        keras.utils.get_file(
            spec.weights_file, spec.weights_url + spec.weights_file, cache_subdir="models"
        )
    except Exception as error:  # get_file raises a plain Exception on URL errors
        raise WeightsUnavailable(
            f"could not download the ImageNet {spec.application} weights ({_first_line(error)})"
        ) from error

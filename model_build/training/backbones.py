"""The backbone registry: one entry per pretrained Keras application the classifier can stand on.

An entry names the ``keras.applications`` constructor, the scaling from pixels 0..255 that its
weights expect (applied *inside* the model, contract 2) and a description of that scaling, which
``publish`` writes into the artifact's manifest (``input.scaling``). Swapping MobileNetV2 for
another application is one entry here; :mod:`model_build.training.model` builds the same head on
any of
them, and the feature cache, fine-tuning and export find the backbone by its layer name.

This module imports no TensorFlow, so the plan and publish can read it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Backbone:
    name: str
    application: str  # the keras.applications constructor, e.g. "MobileNetV2"
    scale: float  # model input = pixels * scale + offset
    offset: float
    scaling: str  # human-readable, written to the manifest
    weights_file: str  # Keras' cached no-top ImageNet weights (~/.keras/models)
    weights_url: str  # where Keras downloads them from
    fine_tune_blocks: tuple[str, ...] = ()  # --fine-tune-from choices, bottom to top

    @property
    def layer_name(self) -> str:
        return f"{self.name}_backbone"


BACKBONES: Final[dict[str, Backbone]] = {
    "mobilenet_v2": Backbone(
        name="mobilenet_v2",
        application="MobileNetV2",
        scale=1.0 / 127.5,
        offset=-1.0,
        scaling="inside the model: x / 127.5 - 1 (MobileNetV2 ImageNet weights expect [-1, 1])",
        weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        weights_url="https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/",
        # block_N_expand is the first layer of inverted-residual block N; its input is the output
        # of block N-1 (block_13 is the stride-2 step 14×14 → 7×7; blocks 14–16 run at 7×7).
        fine_tune_blocks=tuple(f"block_{number}_expand" for number in range(1, 17)),
    ),
}
SMALL_SCALING: Final[str] = "inside the model: x / 127.5 - 1"


def backbone_spec(model: str | None) -> Backbone | None:
    """The registry entry of a model kind; None for ``small`` (no backbone)."""
    return BACKBONES.get(model or "")


def fine_tune_block_problem(model: str | None, block: str) -> str | None:
    """Why ``--fine-tune-from block`` cannot be used with ``model`` (None when it can)."""
    spec = backbone_spec(model)
    if spec is None:
        return f"--fine-tune-from needs a pretrained backbone; --model {model} has none"
    if block not in spec.fine_tune_blocks:
        first, last = spec.fine_tune_blocks[0], spec.fine_tune_blocks[-1]
        return (
            f"--fine-tune-from {block!r} is not a block of {spec.application}: use one of "
            f"{first} … {last} (block_13_expand: the 7×7 stage and the step into it; "
            "block_16_expand: the last block only)"
        )
    return None


def scaling_of(model: str | None) -> str:
    spec = backbone_spec(model)
    return spec.scaling if spec else SMALL_SCALING


def default_weights(model: str | None) -> str:
    """``imagenet`` for a pretrained backbone, ``none`` for the small CNN."""
    return "imagenet" if backbone_spec(model) else "none"


def describe_model(model: str | None, head: str = "reference") -> str:
    spec = backbone_spec(model)
    if spec is None:
        return (
            "small — a small stand-in CNN trained from scratch for the demo, NOT the "
            "reference model; train the real one with --data DIR (MobileNetV2, ImageNet weights)"
        )
    return f"{spec.name} — frozen {spec.application} + {head} head"

"""Export a trained Keras model to TFLite: float32 and full-integer int8 (contract 4).

Both files take **uint8 RGB [N, 224, 224, 3]** (contract 2: the scaling is inside the model) and
return float32 class probabilities [N, labels]. The batch dimension is dynamic
(``shape_signature`` ``[-1, 224, 224, 3]``): the worker calls ``resize_tensor_input`` once per
batch size and runs a whole batch in one ``invoke``.

* ``model.tflite`` is checked against Keras on every val image: top-1 must agree. A disagreement
  is only tolerated where Keras itself is undecided (its two best probabilities closer than
  :data:`NEAR_TIE`), because float rounding may legitimately flip such a tie; those cases are
  counted in ``export.json``.
* ``model_int8.tflite`` is quantised with every op in int8 (``TFLITE_BUILTINS_INT8``), its
  activation ranges calibrated on training images (the representative dataset). Input stays uint8
  (cast inside) and output float32, so the worker feeds both files the same way. With labelled
  val and evaluation images (a run folder always has them) it is kept when its held-out accuracy
  and auto-catalogued precision are within a point of float32's, and it gets its own temperature
  and review threshold (:mod:`model_build.release.int8_gate`); without labels (bare arrays) the old
  rule
  applies: top-1 agreement with float32 on val ≥ :data:`INT8_MIN_AGREEMENT`. The figures are
  recorded in ``export.json`` either way, and a rejected file is kept as
  ``model_int8.rejected.tflite`` for inspection (publish ignores it).

Keras 3 models hold resource variables, which the TFLite calibrator cannot read, so the serving
function is frozen (variables folded into constants) before either conversion.

``train.run`` calls :func:`export_model` with the model it holds, the val images and the Keras
probabilities evaluation already computed. ``python -m model_build.export RUN_DIR``
(:func:`export_run`) loads ``model.keras`` and rebuilds the run's recorded splits instead.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from contracts import litert
from contracts.artifact import Calibration
from contracts.image import IMAGE_SIZE
from contracts.unfamiliarity import UnfamiliarityScorer
from model_build.data.prepare import run_split
from model_build.data.splits import CALIBRATION, recorded_name, reported_split
from model_build.evaluation.evaluate import Evaluation
from model_build.quiet import converter_quietly
from model_build.release.int8_gate import gate_int8
from model_build.run_folder import MODEL_FILE, RunFolder

INT8_MIN_AGREEMENT: Final[float] = 0.99
NEAR_TIE: Final[float] = 1e-4
REPRESENTATIVE_IMAGES: Final[int] = 200
BATCH_SIZE: Final[int] = 32


class ExportError(ValueError):
    """Conversion failed or the float32 file disagrees with Keras."""


@dataclass
class ExportReport:
    images_checked: int
    float32_agreement: float
    float32_disagreements: int
    float32_near_ties: int
    float32_max_abs_diff: float
    float32_bytes: int
    int8_agreement: float | None
    int8_published: bool
    int8_bytes: int | None
    int8_min_agreement: float
    representative_images: int
    int8_gate: dict[str, Any] | None = None  # held-out gate and int8's own calibration

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        gate = values.pop("int8_gate") or {}
        return {**values, **gate}


# --- conversion (TensorFlow) -------------------------------------------------------------------


def _frozen_serving_function(model: Any, image_size: int, features: bool = False) -> Any:
    """``features=True`` adds a second output: the global average of the backbone's last feature
    map (``[N, 1280]``), which the worker's unfamiliarity score reads; the backbone runs once for
    both outputs. The outputs are told apart by their last dimension (labels vs 1280)."""
    import tensorflow as tf  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it
    from tensorflow.python.framework.convert_to_constants import (  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it
        convert_variables_to_constants_v2,
    )

    from model_build.training.model import FEATURES, PROBABILITIES, parts_of  # noqa: PLC0415 — model_build.training.model loads TensorFlow; this module stays light without it

    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="image")
    # The classifier's own two-output model (model_build.training.model): no layer looked up.
    network = parts_of(model).with_features() if features else model

    @tf.function(input_signature=[spec])
    def serve(image: Any) -> dict[str, Any]:
        outputs = network(tf.cast(image, tf.float32), training=False)
        if not features:
            return {"probabilities": tf.cast(outputs, tf.float32)}
        return {name: tf.cast(outputs[name], tf.float32) for name in (PROBABILITIES, FEATURES)}

    return convert_variables_to_constants_v2(serve.get_concrete_function())


@contextlib.contextmanager
def _quiet_converter() -> Iterator[None]:
    """The converter warns about its own deprecated path and unquantised uint8 inputs: noise."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            yield
    finally:
        absl_logger.setLevel(level)


def convert_float32(model: Any, *, image_size: int = IMAGE_SIZE, features: bool = False) -> bytes:
    """Keras model -> float32 TFLite bytes with uint8 [N, size, size, 3] input."""
    import tensorflow as tf  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it

    frozen = _frozen_serving_function(model, image_size, features)
    with _quiet_converter(), converter_quietly():
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        return converter.convert()


def convert_int8(
    model: Any,
    representative_images: np.ndarray,
    *,
    image_size: int = IMAGE_SIZE,
    features: bool = False,
) -> bytes:
    """Full-integer quantisation; ``representative_images`` are uint8 training images."""
    import tensorflow as tf  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it

    if len(representative_images) == 0:
        raise ExportError("int8 quantisation needs at least one representative training image")

    def representative_dataset() -> Iterator[list[np.ndarray]]:
        for image in representative_images:
            yield [image[np.newaxis].astype(np.uint8)]

    frozen = _frozen_serving_function(model, image_size, features)
    with _quiet_converter(), converter_quietly():
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter.convert()


def keras_predict(model: Any, images: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Keras probabilities for uint8 images (compiled ``predict`` over a tf.data pipeline)."""
    from model_build.data.pipeline import predict  # noqa: PLC0415 — model_build.data.pipeline loads TensorFlow; this module stays light without it

    return predict(model, images, batch_size=batch_size)


def tflite_predict(
    model: bytes | str | Path,
    images: np.ndarray,
    batch_size: int = BATCH_SIZE,
    *,
    output: str = "probabilities",
) -> np.ndarray:
    """Probabilities (or, ``output="features"``, the pooled features of a model exported with
    them) from a TFLite model under LiteRT: :func:`contracts.litert.predict`, the worker's
    resize-allocate-invoke loop. With two outputs, the probabilities are the narrower."""
    return litert.predict(model, images, batch_size, output=output)


# --- checks ------------------------------------------------------------------------------------


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    if len(reference) == 0:
        return 1.0
    return float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))


def float32_check(keras_probs: np.ndarray, tflite_probs: np.ndarray) -> dict[str, Any]:
    """Top-1 agreement of float32 TFLite with Keras; a disagreement on a near-tie is excused."""
    differs = keras_probs.argmax(axis=1) != tflite_probs.argmax(axis=1)
    top2 = np.sort(keras_probs, axis=1)[:, -2:] if keras_probs.shape[1] > 1 else None
    margin = (top2[:, 1] - top2[:, 0]) if top2 is not None else np.ones(len(keras_probs))
    near_tie = differs & (margin < NEAR_TIE)
    return {
        "agreement": top1_agreement(keras_probs, tflite_probs),
        "disagreements": int(differs.sum()),
        "near_ties": int(near_tie.sum()),
        "real_disagreements": int((differs & ~near_tie).sum()),
        "max_abs_diff": float(np.abs(keras_probs - tflite_probs).max()) if differs.size else 0.0,
    }


def export_model(
    model: Any,
    out_dir: Path,
    *,
    calibration_split: Any,
    representative_images: np.ndarray,
    evaluation: Evaluation | None = None,
    held_out: Any = None,
    image_size: int = IMAGE_SIZE,
    min_int8_agreement: float = INT8_MIN_AGREEMENT,
    log: Callable[[str], None] = print,
) -> ExportReport:
    """Write model.tflite (+ model_int8.tflite when it passes its gate) and export.json.

    ``calibration_split`` and ``held_out`` are prepared splits
    (:class:`model_build.data.prepare.PreparedSplit`: ``pixels``, ``label_indices``; ``held_out``
    None: nothing held out). ``representative_images`` are training photos for int8's activation
    ranges. With ``evaluation`` (:class:`model_build.evaluation.evaluate.Evaluation`: its float32
    :class:`~contracts.artifact.Calibration` and Keras probabilities of the calibration photos)
    int8 gets its own calibration with the same target and confidence and the held-out gate of
    :mod:`model_build.release.int8_gate`; without it the old rule applies: top-1 agreement with
    float32 ≥ ``min_int8_agreement``. A model exported with the unfamiliarity score
    (``unfamiliarity.npz`` in ``out_dir``) gets the pooled features as a second output.
    """
    val_images = calibration_split.pixels
    val_labels = calibration_split.label_indices
    train_images = representative_images
    calibration = None if evaluation is None else evaluation.calibration
    keras_probabilities = None if evaluation is None else evaluation.val_probabilities
    out = RunFolder(out_dir)
    out.path.mkdir(parents=True, exist_ok=True)
    scorer = (
        UnfamiliarityScorer.load(out.unfamiliarity_file)
        if out.unfamiliarity_file.is_file()
        else None
    )
    features = scorer is not None
    float_bytes = convert_float32(model, image_size=image_size, features=features)
    keras_probs = (
        keras_predict(model, val_images)
        if keras_probabilities is None
        else np.asarray(keras_probabilities, dtype=np.float32)
    )
    float_probs = tflite_predict(float_bytes, val_images)
    check = float32_check(keras_probs, float_probs)
    if check["real_disagreements"]:
        raise ExportError(
            f"float32 TFLite disagrees with Keras on {check['real_disagreements']} of "
            f"{len(val_images)} val images (max probability difference "
            f"{check['max_abs_diff']:.2e}); the conversion is wrong"
        )
    out.tflite_file.write_bytes(float_bytes)
    log(
        f"export: {MODEL_FILE} {len(float_bytes) / 1e6:.2f} MB, top-1 agrees with Keras on "
        f"{check['agreement']:.2%} of {len(val_images)} calibration images "
        f"(near-ties {check['near_ties']}, max |Δp| {check['max_abs_diff']:.1e})"
    )

    representative = _sample(train_images, REPRESENTATIVE_IMAGES)
    int8_bytes = convert_int8(model, representative, image_size=image_size, features=features)
    int8_probs = tflite_predict(int8_bytes, val_images)
    int8_agreement = top1_agreement(float_probs, int8_probs)
    gate = None
    if calibration is not None:
        eval_images = val_images if held_out is None else held_out.pixels
        eval_labels = val_labels if held_out is None else held_out.label_indices
        same = held_out is None

        def flags(images: np.ndarray) -> np.ndarray | None:
            # What the worker running int8 flags: the scorer on int8's own features.
            if scorer is None:
                return None
            return scorer.unfamiliar(tflite_predict(int8_bytes, images, output="features"))

        gate = gate_int8(
            float32=calibration,
            float_eval=float_probs if same else tflite_predict(float_bytes, eval_images),
            int8_fit=int8_probs,
            int8_eval=int8_probs if same else tflite_predict(int8_bytes, eval_images),
            fit_labels=val_labels,
            eval_labels=eval_labels,
            int8_fit_unfamiliar=flags(val_images),
            int8_eval_unfamiliar=flags(eval_images) if not same else flags(val_images),
        )
        published = gate["int8_published"]
    else:
        published = int8_agreement >= min_int8_agreement
    for stale in (out.int8_file, out.int8_rejected_file):
        stale.unlink(missing_ok=True)
    (out.int8_file if published else out.int8_rejected_file).write_bytes(int8_bytes)
    if gate is None:
        verdict = "published" if published else f"NOT published (needs ≥ {min_int8_agreement:.0%})"
    else:
        f32, i8 = gate["float32_held_out"], gate["int8_held_out"]
        verdict = (
            f"accuracy {i8['accuracy']:.4f} vs {f32['accuracy']:.4f}, coverage "
            f"{i8['coverage']:.1%} vs {f32['coverage']:.1%}, auto-catalogued precision "
            f"{_fmt(i8['precision_at_threshold'])} vs {_fmt(f32['precision_at_threshold'])} on "
            f"{gate['evaluated_on']} -> "
            + ("published" if published else f"NOT published: {gate['int8_rejected_because']}")
        )
    log(
        f"export: int8 {len(int8_bytes) / 1e6:.2f} MB, top-1 agreement with float32 "
        f"{int8_agreement:.2%} on calibration photos; {verdict}"
    )
    report = ExportReport(
        images_checked=len(val_images),
        float32_agreement=check["agreement"],
        float32_disagreements=check["disagreements"],
        float32_near_ties=check["near_ties"],
        float32_max_abs_diff=check["max_abs_diff"],
        float32_bytes=len(float_bytes),
        int8_agreement=int8_agreement,
        int8_published=published,
        int8_bytes=len(int8_bytes),
        int8_min_agreement=min_int8_agreement,
        representative_images=len(representative),
        int8_gate=gate,
    )
    out.write_export(report.to_dict())
    return report


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _sample(images: np.ndarray, count: int) -> np.ndarray:
    if len(images) <= count:
        return images
    picks = np.random.default_rng(0).choice(len(images), size=count, replace=False)
    return images[np.sort(picks)]


# --- run folder --------------------------------------------------------------------------------


def export_run(run_dir: Path, *, data_dir: Path | None = None) -> ExportReport:
    """Standalone: export ``run_dir/model.keras`` using the run's own recorded splits."""
    import keras  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it

    run = RunFolder(run_dir)
    record = run.read_data()
    fitted_on = recorded_name(record.splits, CALIBRATION) or CALIBRATION
    val = run_split(run, fitted_on, data_dir=data_dir, record=record)
    split = reported_split(record.splits)
    evaluation = (
        val if split == fitted_on else run_split(run, split, data_dir=data_dir, record=record)
    )
    train = run_split(run, "train", data_dir=data_dir, record=record, limit=REPRESENTATIVE_IMAGES)
    block = (run.read_metrics() or {}).get("calibration")
    if not isinstance(block, dict):
        raise ExportError(
            f"{run.path} has no evaluation: run python -m model_build.evaluate {run.path} first"
        )
    model = keras.models.load_model(run.model_file, compile=False)
    image_size = int(model.inputs[0].shape[1] or IMAGE_SIZE)
    return export_model(
        model,
        run.path,
        calibration_split=val,
        representative_images=train.pixels,
        # The float32 calibration evaluation wrote; Keras predicts the calibration photos again.
        evaluation=Evaluation(
            metrics={},
            calibration=Calibration.model_validate(block),
            val_probabilities=keras_predict(model, val.pixels),
        ),
        held_out=None if evaluation is val else evaluation,
        image_size=image_size,
    )

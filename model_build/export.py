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
  and review threshold (:mod:`model_build.int8_gate`); without labels (bare arrays) the old rule
  applies: top-1 agreement with float32 on val ≥ :data:`INT8_MIN_AGREEMENT`. The figures are
  recorded in ``export.json`` either way, and a rejected file is kept as
  ``model_int8.rejected.tflite`` for inspection (publish ignores it).

Keras 3 models hold resource variables, which the TFLite calibrator cannot read, so the serving
function is frozen (variables folded into constants) before either conversion.

``python -m model_build.export RUN_DIR`` writes the files into the run folder; ``publish``
calls :func:`export_run` itself when they are missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from contracts.image import IMAGE_SIZE
from contracts.unfamiliarity import UNFAMILIARITY_FILE

MODEL_FILE: Final[str] = "model.tflite"
MODEL_INT8_FILE: Final[str] = "model_int8.tflite"
MODEL_INT8_REJECTED_FILE: Final[str] = "model_int8.rejected.tflite"
EXPORT_REPORT_FILE: Final[str] = "export.json"
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
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="image")
    if features:
        from model_build.model import BACKBONE_NAME

        scaling = model.get_layer("scale_to_minus1_1")
        backbone = model.get_layer(BACKBONE_NAME)
        head = model.get_layer("head")

    @tf.function(input_signature=[spec])
    def serve(image: Any) -> dict[str, Any]:
        if not features:
            probabilities = model(tf.cast(image, tf.float32), training=False)
            return {"probabilities": tf.cast(probabilities, tf.float32)}
        maps = backbone(scaling(tf.cast(image, tf.float32)), training=False)
        return {
            "probabilities": tf.cast(head(maps, training=False), tf.float32),
            "features": tf.cast(tf.reduce_mean(maps, axis=[1, 2]), tf.float32),
        }

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
    import tensorflow as tf

    frozen = _frozen_serving_function(model, image_size, features)
    with _quiet_converter():
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
    import tensorflow as tf

    if len(representative_images) == 0:
        raise ExportError("int8 quantisation needs at least one representative training image")

    def representative_dataset() -> Iterator[list[np.ndarray]]:
        for image in representative_images:
            yield [image[np.newaxis].astype(np.uint8)]

    frozen = _frozen_serving_function(model, image_size, features)
    with _quiet_converter():
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter.convert()


def keras_predict(model: Any, images: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Keras probabilities for uint8 images, batch by batch (no tf.data, no progress bar)."""
    outputs = [
        np.asarray(model(images[start : start + batch_size].astype(np.float32), training=False))
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs).astype(np.float32)


# --- running a TFLite file (LiteRT only; no TensorFlow) -----------------------------------------


def tflite_predict(
    model: bytes | str | Path,
    images: np.ndarray,
    batch_size: int = BATCH_SIZE,
    *,
    output: str = "probabilities",
) -> np.ndarray:
    """Probabilities (or, ``output="features"``, the pooled features of a model exported with
    them) from a TFLite model under LiteRT, resizing the batch dimension as needed.

    With two outputs, the probabilities are the one with the smaller last dimension."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, bytes):
        interpreter = Interpreter(model_content=model)
    else:
        interpreter = Interpreter(model_path=str(model))
    input_index = interpreter.get_input_details()[0]["index"]
    current = None
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = np.ascontiguousarray(images[start : start + batch_size], dtype=np.uint8)
        if batch.shape[0] != current:
            interpreter.resize_tensor_input(input_index, list(batch.shape))
            interpreter.allocate_tensors()
            current = batch.shape[0]
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        details = sorted(interpreter.get_output_details(), key=lambda d: int(d["shape"][-1]))
        chosen = details[-1] if output == "features" and len(details) > 1 else details[0]
        outputs.append(interpreter.get_tensor(chosen["index"]).copy())
    return np.concatenate(outputs).astype(np.float32)


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
    val_images: np.ndarray,
    train_images: np.ndarray,
    image_size: int = IMAGE_SIZE,
    min_int8_agreement: float = INT8_MIN_AGREEMENT,
    log: Callable[[str], None] = print,
    val_labels: np.ndarray | None = None,
    eval_images: np.ndarray | None = None,
    eval_labels: np.ndarray | None = None,
    evaluated_on: str = "val",
    target_precision: float = 0.98,
    threshold_confidence: float | None = None,
    features: bool = False,
) -> ExportReport:
    """Write model.tflite (+ model_int8.tflite when it passes its gate) and export.json.

    With ``val_labels`` the int8 gate is :func:`model_build.int8_gate.gate_int8` on
    ``eval_images``/``eval_labels`` (default: val itself), else top-1 agreement on val.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    float_bytes = convert_float32(model, image_size=image_size, features=features)
    keras_probs = keras_predict(model, val_images)
    float_probs = tflite_predict(float_bytes, val_images)
    check = float32_check(keras_probs, float_probs)
    if check["real_disagreements"]:
        raise ExportError(
            f"float32 TFLite disagrees with Keras on {check['real_disagreements']} of "
            f"{len(val_images)} val images (max probability difference "
            f"{check['max_abs_diff']:.2e}); the conversion is wrong"
        )
    (out_dir / MODEL_FILE).write_bytes(float_bytes)
    log(
        f"export: {MODEL_FILE} {len(float_bytes) / 1e6:.2f} MB, top-1 agrees with Keras on "
        f"{check['agreement']:.2%} of {len(val_images)} val images "
        f"(near-ties {check['near_ties']}, max |Δp| {check['max_abs_diff']:.1e})"
    )

    representative = _sample(train_images, REPRESENTATIVE_IMAGES)
    int8_bytes = convert_int8(model, representative, image_size=image_size, features=features)
    int8_probs = tflite_predict(int8_bytes, val_images)
    int8_agreement = top1_agreement(float_probs, int8_probs)
    gate = None
    if val_labels is not None:
        from model_build.int8_gate import gate_int8
        from model_build.thresholds import DEFAULT_CONFIDENCE

        if eval_images is None or eval_labels is None:
            eval_images, eval_labels, evaluated_on = val_images, val_labels, "val"
        same = eval_images is val_images
        gate = gate_int8(
            float_fit=float_probs,
            int8_fit=int8_probs,
            fit_labels=val_labels,
            float_eval=float_probs if same else tflite_predict(float_bytes, eval_images),
            int8_eval=int8_probs if same else tflite_predict(int8_bytes, eval_images),
            eval_labels=eval_labels,
            target_precision=target_precision,
            confidence=threshold_confidence or DEFAULT_CONFIDENCE,
            evaluated_on=evaluated_on,
        )
        published = gate["int8_published"]
    else:
        published = int8_agreement >= min_int8_agreement
    for stale in (MODEL_INT8_FILE, MODEL_INT8_REJECTED_FILE):
        (out_dir / stale).unlink(missing_ok=True)
    (out_dir / (MODEL_INT8_FILE if published else MODEL_INT8_REJECTED_FILE)).write_bytes(int8_bytes)
    if gate is None:
        verdict = "published" if published else f"NOT published (needs ≥ {min_int8_agreement:.0%})"
    else:
        f32, i8 = gate["float32_held_out"], gate["int8_held_out"]
        verdict = (
            f"accuracy {i8['accuracy']:.4f} vs {f32['accuracy']:.4f}, auto-catalogued precision "
            f"{_fmt(i8['precision_at_threshold'])} vs {_fmt(f32['precision_at_threshold'])} on "
            f"{gate['evaluated_on']} -> "
            + ("published" if published else f"NOT published: {gate['int8_rejected_because']}")
        )
    log(
        f"export: int8 {len(int8_bytes) / 1e6:.2f} MB, top-1 agreement with float32 "
        f"{int8_agreement:.2%} on val; {verdict}"
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
    (out_dir / EXPORT_REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
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
    """Export ``run_dir/model.keras`` using the run's own train and val images."""
    import keras

    from model_build.evaluate import _read_json, load_split_images, run_dataset
    from model_build.holdout import evaluation_split

    run_dir = Path(run_dir)
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    val_images, val_labels = load_split_images(run_dir, "val", data_dir=data_dir)
    split = evaluation_split(run_dataset(run_dir, data_dir))
    eval_images, eval_labels = (
        (val_images, val_labels)
        if split == "val"
        else load_split_images(run_dir, split, data_dir=data_dir)
    )
    calibration = (_read_json(run_dir / "metrics.json") or {}).get("calibration") or {}
    train_images, _ = load_split_images(
        run_dir, "train", data_dir=data_dir, limit=REPRESENTATIVE_IMAGES
    )
    image_size = int(model.inputs[0].shape[1] or IMAGE_SIZE)
    return export_model(
        model,
        run_dir,
        val_images=val_images,
        train_images=train_images,
        image_size=image_size,
        val_labels=val_labels,
        eval_images=eval_images,
        eval_labels=eval_labels,
        evaluated_on=split,
        target_precision=float(calibration.get("target_precision") or 0.98),
        threshold_confidence=calibration.get("confidence"),
        # The unfamiliarity score needs the pooled backbone features as a second output.
        features=(run_dir / UNFAMILIARITY_FILE).is_file(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_build.export",
        description="Export RUN_DIR/model.keras to model.tflite and model_int8.tflite.",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: run's)")
    args = parser.parse_args(argv)
    try:
        export_run(args.run_dir, data_dir=args.data)
    except (ExportError, FileNotFoundError, ValueError) as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

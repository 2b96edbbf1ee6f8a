"""Benchmark: Keras (TensorFlow) vs TFLite float32 vs TFLite int8 under LiteRT, same images.

``python -m bench.model_runtimes [--images 60] [--trained RUN_OR_ARTIFACT_DIR]``

1. The **reference architecture** (``model_build.training.model.build_model("mobilenet_v2")``:
frozen
   MobileNetV2 + the reference head, 14 labels), exported with ``model_build.release.export``
   exactly as a
   training run is. Weights are ImageNet when Keras has them cached, otherwise random
   (``weights=None``): latency and size do not depend on the weights, but int8 *agreement* on a
   random model is not meaningful (its outputs are near-uniform, so tiny quantisation errors
   flip the top-1), so it is printed and flagged as such.
2. A **trained** model for a meaningful int8 agreement: ``--trained DIR`` (a run folder or a
   published version with ``model.keras``), by default the newest ``artifacts/<version>`` or
   ``runs/*/model.keras`` if one exists.

Per-image latency is measured at batch 1 (one photo per call) and per image at batch 10 (a
worker batch), the median of repeated calls after warm-up, timed round-robin across the
runtimes on the same batches so background load affects all of them alike. Keras is timed two
ways: ``predict`` (what the reference notebook calls) and a compiled ``tf.function`` (Keras at
its best). LiteRT uses as many threads as CPUs (TensorFlow uses them all by default). Prints a
table and the ratios; writes ``bench/results/model_runtimes.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from contracts.image import image_to_tensor
from model_build.release.export import (
    convert_float32,
    convert_int8,
    keras_predict,
    tflite_predict,
    top1_agreement,
)
from sample_data.photos import generate_dataset

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPOSITORY_ROOT / "bench" / "results" / "model_runtimes.json"
BENCH_DATA = REPOSITORY_ROOT / ".cache" / "bench-model-images"
LABEL_COUNT = 14


def sample_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` generated val photos and the train photos, through the real image contract."""
    per_label = max(2, -(-count // LABEL_COUNT))
    root = generate_dataset(BENCH_DATA, train_per_label=per_label, val_per_label=per_label)
    paths = sorted((root / "val").rglob("*.jpg"))[:count]
    train_paths = sorted((root / "train").rglob("*.jpg"))
    images = np.stack([image_to_tensor(p.read_bytes()) for p in paths])
    train = np.stack([image_to_tensor(p.read_bytes()) for p in train_paths])
    return images, train


def keras_callers(model: Any) -> dict[str, Callable[[np.ndarray], Any]]:
    import tensorflow as tf  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it

    compiled = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return {
        "keras_predict": lambda batch: model.predict(batch.astype(np.float32), verbose=0),
        "keras_function": lambda batch: compiled(batch.astype(np.float32)).numpy(),
    }


def litert_caller(model_bytes: bytes, batch_size: int) -> Callable[[np.ndarray], Any]:
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 — the LiteRT runtime loads only when a model is opened

    interpreter = Interpreter(model_content=model_bytes, num_threads=os.cpu_count())
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, [batch_size, 224, 224, 3])
    interpreter.allocate_tensors()
    output = interpreter.get_output_details()[0]["index"]

    def call(batch: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(index, np.ascontiguousarray(batch))
        interpreter.invoke()
        return interpreter.get_tensor(output)

    return call


def interleaved_latency(
    callers: dict[str, Callable[[np.ndarray], Any]],
    images: np.ndarray,
    batch_size: int,
    repeats: int,
) -> dict[str, float]:
    """Median ms per image of each runtime, timed round-robin on the same batches.

    Round-robin (one call of each runtime per repeat, same images) spreads any background load
    evenly over the runtimes, so the ratios stay fair on a busy machine.
    """
    batches = [
        np.take(images, range(start, start + batch_size), axis=0, mode="wrap")
        for start in range(0, max(len(images), batch_size * repeats), batch_size)
    ]
    for call in callers.values():  # warm-up: graph tracing, allocation, caches
        for batch in batches[:3]:
            call(batch)
    times: dict[str, list[float]] = {name: [] for name in callers}
    for repeat in range(repeats):
        batch = batches[repeat % len(batches)]
        for name, call in callers.items():
            started = time.perf_counter()
            call(batch)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) * 1000 / batch_size for name, values in times.items()}


def measure(
    model: Any, images: np.ndarray, train_images: np.ndarray, repeats: int, name: str
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        keras_path = Path(directory) / "model.keras"
        model.save(keras_path)
        keras_bytes = keras_path.stat().st_size
    float_bytes = convert_float32(model)
    int8_bytes = convert_int8(model, train_images[:200])
    keras_probs = keras_predict(model, images)
    float_probs = tflite_predict(float_bytes, images)
    int8_probs = tflite_predict(int8_bytes, images)
    result = {
        "model": name,
        "images": len(images),
        "bytes": {
            "keras": keras_bytes,
            "tflite_f32": len(float_bytes),
            "tflite_int8": len(int8_bytes),
        },
        "agreement": {
            "f32_vs_keras": top1_agreement(keras_probs, float_probs),
            "int8_vs_f32": top1_agreement(float_probs, int8_probs),
            "max_top1_prob_f32": float(float_probs.max(axis=1).mean()),
        },
    }
    latency = {}
    for batch_size, key in ((1, "batch1_ms"), (10, "batch10_per_image_ms")):
        callers = {
            **keras_callers(model),
            "tflite_f32": litert_caller(float_bytes, batch_size),
            "tflite_int8": litert_caller(int8_bytes, batch_size),
        }
        latency[key] = interleaved_latency(callers, images, batch_size, repeats)
    result["keras"] = {
        "predict_batch1_ms": latency["batch1_ms"]["keras_predict"],
        "predict_batch10_per_image_ms": latency["batch10_per_image_ms"]["keras_predict"],
        "function_batch1_ms": latency["batch1_ms"]["keras_function"],
        "function_batch10_per_image_ms": latency["batch10_per_image_ms"]["keras_function"],
    }
    for runtime in ("tflite_f32", "tflite_int8"):
        result[runtime] = {key: latency[key][runtime] for key in latency}
    keras, f32, int8 = result["keras"], result["tflite_f32"], result["tflite_int8"]
    result["ratios"] = {
        "f32_vs_keras_predict_batch1": keras["predict_batch1_ms"] / f32["batch1_ms"],
        "f32_vs_keras_function_batch1": keras["function_batch1_ms"] / f32["batch1_ms"],
        "f32_vs_keras_function_batch10": keras["function_batch10_per_image_ms"]
        / f32["batch10_per_image_ms"],
        "int8_vs_f32_batch1": f32["batch1_ms"] / int8["batch1_ms"],
        "int8_vs_f32_batch10": f32["batch10_per_image_ms"] / int8["batch10_per_image_ms"],
        "f32_size_vs_int8": len(float_bytes) / len(int8_bytes),
    }
    return result


def print_result(result: dict[str, Any]) -> None:
    keras, f32, int8 = result["keras"], result["tflite_f32"], result["tflite_int8"]
    sizes, ratios, agreement = result["bytes"], result["ratios"], result["agreement"]
    print(f"\n== {result['model']} ({result['images']} images)")
    print(f"{'runtime':<30} {'batch 1 ms/img':>15} {'batch 10 ms/img':>16} {'size MB':>9}")
    print(
        f"{'Keras predict()':<30} {keras['predict_batch1_ms']:>15.2f} "
        f"{keras['predict_batch10_per_image_ms']:>16.2f} {sizes['keras'] / 1e6:>9.2f}"
    )
    print(
        f"{'Keras tf.function':<30} {keras['function_batch1_ms']:>15.2f} "
        f"{keras['function_batch10_per_image_ms']:>16.2f} {'':>9}"
    )
    print(
        f"{'TFLite float32 (LiteRT)':<30} {f32['batch1_ms']:>15.2f} "
        f"{f32['batch10_per_image_ms']:>16.2f} {sizes['tflite_f32'] / 1e6:>9.2f}"
    )
    print(
        f"{'TFLite int8 (LiteRT)':<30} {int8['batch1_ms']:>15.2f} "
        f"{int8['batch10_per_image_ms']:>16.2f} {sizes['tflite_int8'] / 1e6:>9.2f}"
    )
    print(
        f"ratios: f32 vs Keras predict {ratios['f32_vs_keras_predict_batch1']:.1f}× (batch 1), "
        f"vs Keras tf.function {ratios['f32_vs_keras_function_batch1']:.1f}× (batch 1) / "
        f"{ratios['f32_vs_keras_function_batch10']:.1f}× (batch 10); "
        f"int8 vs f32 {ratios['int8_vs_f32_batch1']:.2f}× (batch 1) / "
        f"{ratios['int8_vs_f32_batch10']:.2f}× (batch 10); "
        f"size f32/int8 {ratios['f32_size_vs_int8']:.2f}×"
    )
    print(
        f"top-1 agreement: f32 vs Keras {agreement['f32_vs_keras']:.2%}, "
        f"int8 vs f32 {agreement['int8_vs_f32']:.2%} "
        f"(mean top-1 probability {agreement['max_top1_prob_f32']:.2f})"
    )


def _imagenet_cached() -> bool:
    models = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    return any(models.glob("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top*.h5"))


def _default_trained() -> Path | None:
    latest = REPOSITORY_ROOT / "artifacts" / "latest.json"
    if latest.is_file():
        version = json.loads(latest.read_text())["version"]
        if (REPOSITORY_ROOT / "artifacts" / version / "model.keras").is_file():
            return REPOSITORY_ROOT / "artifacts" / version
    runs = sorted((REPOSITORY_ROOT / "runs").glob("*/model.keras"), key=os.path.getmtime)
    return runs[-1].parent if runs else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.model_runtimes", description=__doc__)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--trained", type=Path, default=None, help="folder with model.keras")
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it
    import tensorflow as tf  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it

    from model_build.training.model import build_model  # noqa: PLC0415 — model_build.training.model loads TensorFlow; this module stays light without it

    images, train_images = sample_images(args.images)
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "processor": platform.processor() or platform.machine(),
        }
    }
    print(f"{os.cpu_count()} CPUs, TensorFlow {tf.__version__}, {len(images)} images")
    if not args.skip_reference:
        weights = "imagenet" if _imagenet_cached() else None
        keras.utils.set_random_seed(0)
        model = build_model("mobilenet_v2", num_classes=LABEL_COUNT, weights=weights)
        name = f"reference MobileNetV2 + head, weights={'imagenet' if weights else 'None (random)'}"
        result = measure(model, images, train_images, args.repeats, name)
        result["weights"] = weights or "random"
        if not weights:
            result["agreement"]["note"] = "random weights: int8 agreement is not meaningful"
        print_result(result)
        results["reference"] = result
    trained_dir = args.trained or _default_trained()
    if trained_dir is not None:
        model = keras.models.load_model(trained_dir / "model.keras", compile=False)
        result = measure(model, images, train_images, args.repeats, f"trained: {trained_dir}")
        print_result(result)
        results["trained"] = result
    else:
        print("\nno trained model found (run `python -m model_build.train` first or --trained)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten {RESULTS.relative_to(REPOSITORY_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

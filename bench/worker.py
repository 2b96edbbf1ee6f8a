"""Benchmark: the Lambda worker on LiteRT (float32, int8) vs the same pipeline on Keras/TensorFlow.

``python -m bench.worker [--uploads 1000] [--repeats 3] [--skip-stack]``

The model is the **real architecture**: ``model_build.training.model.build_model("mobilenet_v2",
weights=None)`` (MobileNetV2 + the reference head, 14 labels, random weights; latency, memory and
size do not depend on the weight values), exported with ``model_build.release.export`` to TFLite
float32
and int8 and published with ``model_build.release.publish`` like a training run. Built once, in a
subprocess, and cached under ``.cache/bench-worker/``.

For each variant — ``litert-f32`` and ``litert-int8`` (this worker: ``handler.cold_start`` loads
the published artifact, LiteRT runs it) and ``tensorflow`` (the same handler, the same image
function and calibration, but the ``.keras`` model under full TensorFlow) — it measures:

* **cold start**: a fresh Python process per repeat; from spawning it to the first prediction
  (imports of ``handler.app``, loading and verifying the model, decoding one photo, one
  inference). The in-process part (after the interpreter started) is printed too.
* **warm per-image time** for a 12-megapixel (4032×3024) and a 1-megapixel (1152×864) phone
  JPEG: decode with ``contracts.image.decode_image`` + one inference at batch 1; median.
* **per image in a batch of 10**: ten such photos decoded in the worker's fetch pool and one
  inference for all ten, as an SQS batch is processed; total ÷ 10.
* **peak RSS** of that process (``VmHWM``).
* **GB-seconds per 1,000 images, compute only**: that peak RSS × the per-image time in a batch
  of ten 1 MP photos × 1,000 (what the function costs without the AWS round trips).
* **local stack throughput**: ``--uploads`` JPEGs (about 1 MP each) uploaded to a moto server
  (in this parent process), S3 → SQS notifications, drained in a fresh worker process through
  ``handler.app.lambda_handler`` in batches of 10: images/s over the drain, and GB-seconds per
  1,000 images = peak RSS of the worker process × time spent inside the handler.

* **the decoders' isolation** (issue 17), litert-f32 only, each mode in a fresh process: the
  worker's decoder processes (:class:`handler.decode_pool.DecodePool`) against decoding in the
  function's own process (``contracts.image.decode_image``, as before issue 17): added cold start
  (starting the decoder processes), warm time per 12 MP photo, per photo in a batch of ten
  distinct 12 MP photos (fetch threads + one inference), and the function's peak memory for
  that batch (this process's VmHWM plus, with isolation, each decoder's peak: an upper bound, as
  the peaks need not coincide). Ratios isolation ÷ in-process.

Prints a table with the ratios and targets and writes ``bench/results/worker.json``.
``--isolation-only`` measures only the last part.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import boto3
import numpy as np
from PIL import Image

from contracts.artifact import RUNTIME_FILES, load_artifact
from contracts.image import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    decode_image,
    image_to_tensor,
)
from handler import app
from handler.classifier import calibrate, predictions
from handler.cold_start import CLIENT_CONFIG, load_model
from handler.decode_pool import DecodePool
from handler.settings import load_settings
from handler.worker import IO_THREADS, Worker
from local_stack.resources import LocalNames, create_local_resources
from local_stack.stack import LocalContext, drain_queue, moto_server
from model_build.release.export import convert_float32, convert_int8
from model_build.release.publish import publish_run
from sample_data.photos import LABELS, draw_sample_image

REPOSITORY_ROOT: Final[Path] = Path(__file__).resolve().parent.parent
CACHE: Final[Path] = REPOSITORY_ROOT / ".cache" / "bench-worker"
RESULTS: Final[Path] = REPOSITORY_ROOT / "bench" / "results" / "worker.json"
VARIANTS: Final[tuple[str, ...]] = ("litert-f32", "litert-int8", "tensorflow")
PHOTO_SIZES: Final[dict[str, tuple[int, int]]] = {"12mp": (4032, 3024), "1mp": (1152, 864)}
STACK_PHOTO_SIZE: Final[tuple[int, int]] = (1152, 864)
STACK_DISTINCT_PHOTOS: Final[int] = 40
WARM_REPEATS: Final[int] = 15
TARGETS: Final[dict[str, str]] = {
    "cold_start_s": "≤ 0.8 s and ≥ 6× faster than TensorFlow",
    "peak_rss_mb": "≤ 250 MB",
    "warm_12mp_ms": "≤ 30 ms",
    "warm_1mp_ms": "≤ 10 ms",
    "gb_seconds_per_1000": "≥ 5× fewer than TensorFlow",
}


# ------------------------------------------------------------------------------ preparation ---


def phone_jpeg(size: tuple[int, int], seed: int, label_index: int = 0) -> bytes:
    """A phone-like JPEG: a sample product photo upscaled to ``size`` with sensor noise."""
    rng = np.random.default_rng(seed)
    drawn = draw_sample_image(LABELS[label_index % len(LABELS)], rng, size=768)
    pixels = np.asarray(drawn.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * 3.0
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _build_model(out_dir: Path) -> None:
    """Subprocess: the reference architecture, exported and published (imports TensorFlow)."""
    import keras  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it

    from model_build.training.model import build_model  # noqa: PLC0415 — model_build.training.model loads TensorFlow; this module stays light without it

    keras.utils.set_random_seed(0)
    model = build_model("mobilenet_v2", num_classes=len(LABELS), weights=None)
    representative = np.stack(
        [image_to_tensor(phone_jpeg((640, 480), seed, seed)) for seed in range(32)]
    )
    run_dir = out_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "model.tflite").write_bytes(convert_float32(model))
    (run_dir / "model_int8.tflite").write_bytes(convert_int8(model, representative))
    model.save(run_dir / "model.keras")
    (run_dir / "labels.json").write_text(json.dumps(list(LABELS)))
    calibration = {
        "temperature": 1.0,
        "review_threshold": 0.5,
        "target_precision": 0.98,
        "coverage": 0.5,
    }
    note = "bench/worker.py: MobileNetV2 architecture, weights=None (untrained)"
    (run_dir / "metrics.json").write_text(
        json.dumps({"accuracy": None, "note": note, "calibration": calibration})
    )
    (run_dir / "export.json").write_text(json.dumps({"int8_published": True}))
    (run_dir / "config.json").write_text(json.dumps({"model": "mobilenet_v2", "weights": None}))
    (run_dir / "report").mkdir(exist_ok=True)
    (run_dir / "report" / "index.html").write_text(f"<html><body>{note}</body></html>")
    publish_run(run_dir, str(out_dir / "artifacts"), log=lambda _message: None)


def prepare() -> Path:
    """The cached bench folder: ``artifacts/`` (published model) and ``photos/``."""
    marker = CACHE / "ready.json"
    if marker.is_file():
        return CACHE
    CACHE.mkdir(parents=True, exist_ok=True)
    print("bench: building MobileNetV2 (weights=None) and exporting it (once) ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "bench.worker", "--build-model", str(CACHE)],
        cwd=REPOSITORY_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
        check=True,
    )
    photos = CACHE / "photos"
    photos.mkdir(exist_ok=True)
    for name, size in PHOTO_SIZES.items():
        (photos / f"{name}.jpg").write_bytes(phone_jpeg(size, seed=11))
    marker.write_text(json.dumps({"photos": list(PHOTO_SIZES)}))
    return CACHE


# ----------------------------------------------------------------------- variant processes ---


class KerasClassifier:
    """The worker's classifier interface over a Keras model on TensorFlow (the comparison)."""

    def __init__(self, model_path: Path, labels: list[str], temperature: float) -> None:
        import keras  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it

        self.model = keras.models.load_model(model_path, compile=False)
        self.labels = labels
        self.temperature = temperature

    def predict(self, pixels: np.ndarray) -> list[Any]:
        if len(pixels) == 0:
            return []
        probabilities = np.asarray(self.model.predict_on_batch(pixels))
        return predictions(calibrate(probabilities, self.temperature), self.labels)


def _load_classifier(variant: str) -> tuple[Any, Any]:
    """What the worker's cold start does for ``variant``: (classifier, artifact)."""
    settings = load_settings()
    if variant != "tensorflow":
        return load_model(settings)

    artifact = load_artifact(settings.model_uri, only=(*RUNTIME_FILES, "model.keras"))
    classifier = KerasClassifier(
        artifact.files["model.keras"], artifact.labels, artifact.calibration.temperature
    )
    return classifier, artifact


def _child_latency(variant: str, spawned_at: float, photos: Path) -> dict[str, Any]:
    started = time.perf_counter()

    classifier, _artifact = _load_classifier(variant)
    first = (photos / "1mp.jpg").read_bytes()
    classifier.predict(decode_image(first).pixels[None])
    cold_in_process = time.perf_counter() - started
    cold_total = time.time() - spawned_at
    result: dict[str, Any] = {"cold_start_s": cold_total, "cold_in_process_s": cold_in_process}
    for name in PHOTO_SIZES:
        data = (photos / f"{name}.jpg").read_bytes()
        totals, decodes, inferences = [], [], []
        for _ in range(WARM_REPEATS):
            t0 = time.perf_counter()
            pixels = decode_image(data).pixels[None]
            t1 = time.perf_counter()
            classifier.predict(pixels)
            t2 = time.perf_counter()
            totals.append(t2 - t0)
            decodes.append(t1 - t0)
            inferences.append(t2 - t1)
        result[f"warm_{name}_ms"] = statistics.median(totals) * 1000
        result[f"decode_{name}_ms"] = statistics.median(decodes) * 1000
        result[f"inference_{name}_ms"] = statistics.median(inferences) * 1000
        result[f"batch10_{name}_ms"] = _per_image_in_a_batch(classifier, data) * 1000
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _per_image_in_a_batch(classifier: Any, data: bytes, size: int = 10) -> float:
    """Seconds per image when ``size`` photos go through the worker's path: decoded in the
    worker's fetch pool (``IO_THREADS``), then one inference for all of them."""
    timings = []
    with ThreadPoolExecutor(IO_THREADS) as pool:
        for _ in range(WARM_REPEATS // 3 + 1):
            started = time.perf_counter()
            decoded = list(pool.map(lambda raw: decode_image(raw).pixels, [data] * size))
            classifier.predict(np.stack(decoded))
            timings.append((time.perf_counter() - started) / size)
    return statistics.median(timings)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ``ru_maxrss``: Linux carries the parent's
    peak across fork + exec into it, which would charge the parent's memory to the child."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_stack(variant: str, queue_url: str) -> dict[str, Any]:
    """Drain the local stack's queue through the real handler; time and memory of this process."""
    if variant == "tensorflow":
        # Same worker, Keras classifier instead of LiteRT (the container has TensorFlow here).

        settings = load_settings()
        classifier, artifact = _load_classifier(variant)
        app._worker = Worker(
            classifier=classifier,
            model_version=artifact.version,
            review_threshold=artifact.calibration.review_threshold,
            table=settings.catalogue_table,
            s3_client=boto3.client("s3", config=CLIENT_CONFIG),
            dynamodb_client=boto3.client("dynamodb", config=CLIENT_CONFIG),
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
        )
    handler_seconds = 0.0

    def timed_handler(event: dict[str, Any]) -> dict[str, Any]:
        nonlocal handler_seconds
        started = time.perf_counter()
        try:
            return app.lambda_handler(event, LocalContext())
        finally:
            handler_seconds += time.perf_counter() - started

    stats = drain_queue(boto3.client("sqs"), queue_url, timed_handler, max_seconds=1800)
    return {
        "drain_s": stats.seconds,
        "handler_s": handler_seconds,
        "batches": stats.batches,
        "received": stats.received,
        "returned": stats.returned,
        "peak_rss_mb": peak_rss_mb(),
    }


def _variant_environment(variant: str, artifacts: Path) -> dict[str, str]:
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPOSITORY_ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
        "MODEL_URI": str(artifacts),
        "MODEL_VARIANT": "int8" if variant == "litert-int8" else "float32",
        "CATALOGUE_TABLE": os.environ.get("CATALOGUE_TABLE", "bench-table"),
        "LOG_LEVEL": "ERROR",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    environment.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
    return environment


def _run_child(arguments: list[str], environment: dict[str, str]) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.worker", *arguments],
        cwd=REPOSITORY_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"bench child {arguments} failed:\n{completed.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


# ----------------------------------------------------------------------------- measurements ---


def measure_latency(folder: Path, repeats: int) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        runs = []
        for _ in range(repeats):
            environment = _variant_environment(variant, folder / "artifacts")
            arguments = ["--child-latency", variant, str(time.time()), str(folder / "photos")]
            runs.append(_run_child(arguments, environment))
        merged = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
        merged["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
        # Compute alone (no S3, SQS or DynamoDB latency): peak memory × per-image time of a
        # batch of ten 1 MP photos, for 1,000 images.
        merged["compute_gb_seconds_per_1000"] = (
            merged["peak_rss_mb"] / 1024 * merged["batch10_1mp_ms"] / 1000 * 1000
        )
        results[variant] = merged
        print(
            f"  {variant:12s} cold {merged['cold_start_s']:.2f} s, "
            f"warm 12MP {merged['warm_12mp_ms']:.1f} ms, 1MP {merged['warm_1mp_ms']:.1f} ms, "
            f"peak RSS {merged['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    return results


def measure_stack(folder: Path, uploads: int) -> dict[str, dict[str, Any]]:
    photos = [
        phone_jpeg(STACK_PHOTO_SIZE, seed=100 + i, label_index=i)
        for i in range(STACK_DISTINCT_PHOTOS)
    ]
    results: dict[str, dict[str, Any]] = {}
    with moto_server() as endpoint:
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="eu-west-1"
        )
        s3, sqs, dynamodb = (
            session.client(name, endpoint_url=endpoint) for name in ("s3", "sqs", "dynamodb")
        )
        for variant in VARIANTS:
            suffix = variant.replace("-", "")
            names = LocalNames(
                bucket=f"bench-uploads-{suffix}",
                queue=f"bench-queue-{suffix}",
                dead_letter_queue=f"bench-dlq-{suffix}",
                table=f"bench-catalogue-{suffix}",
            )
            resources = create_local_resources(
                s3_client=s3, sqs_client=sqs, dynamodb_client=dynamodb, names=names
            )
            for index in range(uploads):
                s3.put_object(
                    Bucket=resources.bucket,
                    Key=f"uploads/bench/{index:05d}.jpg",
                    Body=photos[index % len(photos)],
                )
            environment = _variant_environment(variant, folder / "artifacts")
            environment.update(
                {
                    "AWS_ENDPOINT_URL": endpoint,
                    "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "eu-west-1",
                    "CATALOGUE_TABLE": resources.table_name,
                }
            )
            result = _run_child(["--child-stack", variant, resources.queue_url], environment)
            catalogued = dynamodb.scan(TableName=resources.table_name, Select="COUNT")["Count"]
            result["catalogued"] = catalogued
            result["images_per_s"] = uploads / result["drain_s"]
            result["gb_seconds_per_1000"] = (
                result["peak_rss_mb"] / 1024 * result["handler_s"] * 1000 / uploads
            )
            results[variant] = result
            print(
                f"  {variant:12s} {uploads} uploads: {result['images_per_s']:.1f} images/s, "
                f"{result['gb_seconds_per_1000']:.2f} GB-s per 1,000, catalogued {catalogued}",
                flush=True,
            )
    return results


def _batch_photos(photos: Path, count: int = 10) -> list[Path]:
    """``count`` distinct 12 MP phone JPEGs, made once and cached beside the others."""
    paths = []
    for index in range(count):
        path = photos / f"12mp-batch-{index}.jpg"
        if not path.is_file():
            path.write_bytes(phone_jpeg(PHOTO_SIZES["12mp"], seed=200 + index, label_index=index))
        paths.append(path)
    return paths


def _child_isolation(mode: str, photos: Path) -> dict[str, Any]:
    """One mode of the isolation measurement: ``in-process`` or ``decoder-processes``."""
    classifier, _artifact = _load_classifier("litert-f32")
    limits = {"max_bytes": DEFAULT_MAX_IMAGE_BYTES, "max_pixels": DEFAULT_MAX_IMAGE_PIXELS}
    decoder_peaks: dict[int, int] = {}
    started = time.perf_counter()
    if mode == "decoder-processes":
        pool = DecodePool(function_memory_mb=1024)
        pool.start()

        def decode(data: bytes) -> np.ndarray:
            attempt = pool.decode(data, **limits)
            if attempt.decoded is None:
                raise RuntimeError(f"decode failed: {attempt.status} {attempt.detail}")
            slot = threading.get_ident()
            decoder_peaks[slot] = max(decoder_peaks.get(slot, 0), attempt.peak_rss_bytes or 0)
            return attempt.decoded.pixels

    else:

        def decode(data: bytes) -> np.ndarray:
            return decode_image(data, **limits).pixels

    added_cold_start = time.perf_counter() - started
    single = (photos / "12mp.jpg").read_bytes()
    decode(single)  # warm
    timings = []
    for _ in range(WARM_REPEATS):
        t0 = time.perf_counter()
        classifier.predict(decode(single)[None])
        timings.append(time.perf_counter() - t0)
    batch = [path.read_bytes() for path in _batch_photos(photos)]
    batch_timings = []
    with ThreadPoolExecutor(max_workers=IO_THREADS) as threads:
        for _ in range(3):
            t0 = time.perf_counter()
            pixels = list(threads.map(decode, batch))
            classifier.predict(np.stack(pixels))
            batch_timings.append((time.perf_counter() - t0) / len(batch))
    # At most DECODE_PROCESSES decoders run at once; their peaks (per decode) are summed.
    decoders_mb = sum(sorted(decoder_peaks.values())[-2:]) / 2**20
    return {
        "added_cold_start_s": added_cold_start,
        "warm_12mp_ms": statistics.median(timings) * 1000,
        "batch10_12mp_ms": statistics.median(batch_timings) * 1000,
        "function_peak_mb": peak_rss_mb() + decoders_mb,
        "decoders_peak_mb": decoders_mb,
    }


def measure_isolation(folder: Path) -> dict[str, Any]:
    photos = folder / "photos"
    _batch_photos(photos)
    results: dict[str, Any] = {}
    for mode in ("in-process", "decoder-processes"):
        environment = _variant_environment("litert-f32", folder / "artifacts")
        results[mode] = _run_child(["--child-isolation", mode, str(photos)], environment)
        result = results[mode]
        print(
            f"  {mode:18s} added cold start {result['added_cold_start_s']:.2f} s, "
            f"warm 12MP {result['warm_12mp_ms']:.1f} ms, "
            f"batch of ten 12MP {result['batch10_12mp_ms']:.1f} ms/photo, "
            f"function peak {result['function_peak_mb']:.0f} MB",
            flush=True,
        )
    isolated, plain = results["decoder-processes"], results["in-process"]
    results["ratio"] = {
        name: isolated[name] / plain[name]
        for name in ("warm_12mp_ms", "batch10_12mp_ms", "function_peak_mb")
    }
    return results


def print_isolation(isolation: dict[str, Any]) -> None:
    plain, isolated, ratio = (
        isolation["in-process"],
        isolation["decoder-processes"],
        isolation["ratio"],
    )
    print("\nisolation of decoding (issue 17), litert-f32: decoder processes vs in-process")
    print(f"{'':42s}{'in-process':>14s}{'decoders':>14s}{'ratio':>10s}")
    rows = [
        ("added cold start, s", "added_cold_start_s", "{:.2f}"),
        ("warm 12 MP (decode + infer), ms", "warm_12mp_ms", "{:.1f}"),
        ("per photo, batch of ten 12 MP, ms", "batch10_12mp_ms", "{:.1f}"),
        ("function peak memory, MB", "function_peak_mb", "{:.0f}"),
    ]
    for title, name, fmt in rows:
        cell = f"{ratio[name]:.2f}×" if name in ratio else ""
        print(
            f"{title:42s}{fmt.format(plain[name]):>14s}{fmt.format(isolated[name]):>14s}{cell:>10s}"
        )


def print_report(report: dict[str, Any]) -> None:
    latency, stack = report["latency"], report.get("stack", {})
    rows = [
        ("cold start (spawn → 1st prediction), s", "cold_start_s", latency, "{:.2f}"),
        ("  of which in-process, s", "cold_in_process_s", latency, "{:.2f}"),
        ("warm 12 MP JPEG (decode + infer), ms", "warm_12mp_ms", latency, "{:.1f}"),
        ("  decode / inference, ms", ("decode_12mp_ms", "inference_12mp_ms"), latency, None),
        ("  per image in a batch of 10, ms", "batch10_12mp_ms", latency, "{:.1f}"),
        ("warm 1 MP JPEG (decode + infer), ms", "warm_1mp_ms", latency, "{:.1f}"),
        ("  decode / inference, ms", ("decode_1mp_ms", "inference_1mp_ms"), latency, None),
        ("  per image in a batch of 10, ms", "batch10_1mp_ms", latency, "{:.1f}"),
        ("peak RSS (cold + warm), MB", "peak_rss_mb", latency, "{:.0f}"),
        ("GB-s per 1,000 (compute only, 1 MP)", "compute_gb_seconds_per_1000", latency, "{:.2f}"),
    ]
    if stack:
        rows += [
            ("stack throughput, images/s", "images_per_s", stack, "{:.1f}"),
            ("stack worker peak RSS, MB", "peak_rss_mb", stack, "{:.0f}"),
            ("time in handler, s", "handler_s", stack, "{:.1f}"),
            ("GB-seconds per 1,000 images", "gb_seconds_per_1000", stack, "{:.2f}"),
        ]
    print(f"\n{'':42s}" + "".join(f"{v:>14s}" for v in VARIANTS))
    for title, field, table, fmt in rows:
        cells = []
        for variant in VARIANTS:
            values = table[variant]
            if isinstance(field, tuple):
                cells.append(f"{values[field[0]]:.1f} / {values[field[1]]:.1f}")
            else:
                cells.append(fmt.format(values[field]))
        print(f"{title:42s}" + "".join(f"{cell:>14s}" for cell in cells))
    print("\nratios (TensorFlow ÷ LiteRT; > 1 means LiteRT is better):")
    tf = latency["tensorflow"]
    for variant in ("litert-f32", "litert-int8"):
        ours = latency[variant]
        parts = [
            f"cold start {tf['cold_start_s'] / ours['cold_start_s']:.1f}×",
            f"warm 12 MP {tf['warm_12mp_ms'] / ours['warm_12mp_ms']:.1f}×",
            f"warm 1 MP {tf['warm_1mp_ms'] / ours['warm_1mp_ms']:.1f}×",
            f"peak RSS {tf['peak_rss_mb'] / ours['peak_rss_mb']:.1f}×",
            "GB-s/1,000 compute only "
            f"{tf['compute_gb_seconds_per_1000'] / ours['compute_gb_seconds_per_1000']:.1f}×",
        ]
        if stack:
            s_tf, s_ours = stack["tensorflow"], stack[variant]
            parts.append(f"throughput {s_ours['images_per_s'] / s_tf['images_per_s']:.1f}×")
            parts.append(
                f"GB-s/1,000 {s_tf['gb_seconds_per_1000'] / s_ours['gb_seconds_per_1000']:.1f}×"
            )
        print(f"  {variant:12s} " + ", ".join(parts))
    print("\ntargets (2 cores): " + "; ".join(f"{k} {v}" for k, v in TARGETS.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__)
    parser.add_argument("--uploads", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per cold start")
    parser.add_argument("--skip-stack", action="store_true")
    parser.add_argument(
        "--isolation-only", action="store_true", help="measure only the decoders' isolation"
    )
    parser.add_argument("--build-model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-latency", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--child-stack", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--child-isolation", nargs=2, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)

    if arguments.build_model:
        _build_model(arguments.build_model)
        return 0
    if arguments.child_latency:
        variant, spawned_at, photos = arguments.child_latency
        result = _child_latency(variant, float(spawned_at), Path(photos))
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    if arguments.child_stack:
        variant, queue_url = arguments.child_stack
        print("RESULT " + json.dumps(_child_stack(variant, queue_url)), flush=True)
        return 0
    if arguments.child_isolation:
        mode, photos = arguments.child_isolation
        print("RESULT " + json.dumps(_child_isolation(mode, Path(photos))), flush=True)
        return 0

    folder = prepare()
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "model": "MobileNetV2 + reference head, weights=None, 14 labels",
        "uploads": arguments.uploads,
    }
    if not arguments.isolation_only:
        print(f"bench: latency and memory ({arguments.repeats} fresh processes per variant)")
        report["latency"] = measure_latency(folder, arguments.repeats)
        if not arguments.skip_stack:
            print(f"bench: local stack, {arguments.uploads} uploads per variant")
            report["stack"] = measure_stack(folder, arguments.uploads)
        print_report(report)
    print("bench: isolation of decoding (decoder processes vs in-process)")
    report["isolation"] = measure_isolation(folder)
    print_isolation(report["isolation"])
    if arguments.isolation_only and RESULTS.is_file():
        # Keep the other measurements of an earlier full run beside the new isolation figures.
        report = json.loads(RESULTS.read_text()) | {"isolation": report["isolation"]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {RESULTS.relative_to(REPOSITORY_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

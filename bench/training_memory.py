"""Benchmark: peak memory of one training run per mode, measured by ``/usr/bin/time -v``.

    python -m bench.training_memory [--scale 1.0] [--modes plain,k1,k5] [--epochs 1]

Generates (once) the reference-scale dataset — 14 × 1,200 train + 14 × 300 val JPEGs of about
500 px, 16,800 + 4,200 images (``--scale`` shrinks the counts) — and runs, for each mode, one
``python -m model_build.train`` in its own process under ``/usr/bin/time -v``:

* ``plain`` — training on the fly (``--feature-cache-views 0``);
* ``kN`` — the frozen-feature mode with ``--feature-cache-views N``.

Every run trains the reference model (MobileNetV2 + head) with random weights (a random no-top
weights file written once: the weights do not change memory or time) for ``--epochs`` epochs,
then evaluates and exports as usual, with ``--publish none``. The decode cache is shared and warmed
by a first run, so every mode measures training, not JPEG decoding; feature caches start empty
(``--fresh-features``, default) so the feature computation is inside the measurement.

``--synthetic`` measures the data path alone at the full reference scale, without a model (so it
runs in minutes on two cores): it writes the files training reads — the train and val pixel files
(16,803 + 4,205 images, 3.2 GB) and five views of train features plus val's (float16
7×7×1280, 11 GB) — and runs, each in its own process under ``/usr/bin/time -v``, one augmented
training epoch and one val pass through :func:`model_build.data.pipeline.train_dataset` /
``eval_dataset`` (``pixels``), and one epoch of
:func:`model_build.training.feature_cache.head_train_dataset`
over the five per-view files plus a val pass (``features``), consuming every batch.

Printed per mode: the peak resident set size (``Maximum resident set size``: every page the
process touched and still held, the memory-mapped pixels and features included) and the wall
time. Results go to ``bench/results/training_memory.json``. Not in CI: at full scale one mode takes
tens of minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from model_build.data.rowfile import RowFile, RowWriter
from model_build.quiet import tensorflow_quietly
from sample_data.photos import generate_dataset

REFERENCE_TRAIN_PER_LABEL = 1200
REFERENCE_VAL_PER_LABEL = 300


def random_weights(path: Path) -> Path:
    """A MobileNetV2 no-top weights file with Keras' random initialisation (no download)."""
    if path.is_file():
        return path
    code = (
        "import sys, keras\n"
        "m = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False,"
        " weights=None)\n"
        "m.save_weights(sys.argv[1])\n"
    )
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=environment)
    return path


def measure(command: list[str], log: Path) -> dict:
    """Run ``command`` under ``/usr/bin/time -v``; its peak RSS and wall time."""
    started = time.monotonic()
    with log.open("w") as stream:
        completed = subprocess.run(
            ["/usr/bin/time", "-v", *command],
            stdout=stream,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            check=False,
        )
    text = log.read_text()
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {
        "exit_status": completed.returncode,
        "peak_rss_bytes": int(match.group(1)) * 1024 if match else None,
        "wall_s": time.monotonic() - started,
        "log": str(log),
    }


FULL_TRAIN, FULL_VAL, FEATURE_SHAPE = 16_803, 4_205, (7, 7, 1280)


def _write_synthetic(work: Path, views: int) -> None:
    def fill(path: Path, shape: tuple[int, ...], dtype) -> None:
        if path.is_file():
            return
        partial = path.with_suffix(".partial")
        with RowWriter(partial, shape, dtype) as writer:
            for start in range(0, shape[0], 256):
                count = min(256, shape[0] - start)
                rows = np.empty((count, *shape[1:]), dtype=dtype)
                rows[...] = np.arange(count).reshape(-1, *([1] * (len(shape) - 1))) % 251
                writer.write(start, rows)
        partial.replace(path)

    work.mkdir(parents=True, exist_ok=True)
    fill(work / "train_pixels.npy", (FULL_TRAIN, 224, 224, 3), np.uint8)
    fill(work / "val_pixels.npy", (FULL_VAL, 224, 224, 3), np.uint8)
    for view in range(views):
        fill(work / f"train_features_{view}.npy", (FULL_TRAIN, *FEATURE_SHAPE), np.float16)
    fill(work / "val_features.npy", (FULL_VAL, *FEATURE_SHAPE), np.float16)


def _data_path(phase: str, work: Path, views: int) -> None:
    """One phase of ``--synthetic``, in this process (run under /usr/bin/time by the parent)."""
    tensorflow_quietly()

    labels = np.arange(FULL_TRAIN) % 14
    val_labels = np.arange(FULL_VAL) % 14
    seen = 0
    if phase == "pixels":
        from model_build.data.pipeline import EpochRandomness, eval_dataset, train_dataset  # noqa: PLC0415 — model_build.data.pipeline loads TensorFlow; this module stays light without it

        randomness = EpochRandomness(0)
        train = train_dataset(
            RowFile(work / "train_pixels.npy"),
            labels,
            batch_size=32,
            seed=0,
            randomness=randomness,
        )
        randomness.set_epoch(0)
        for images, _ in train:
            seen += int(images.shape[0])
        for images, _ in eval_dataset(RowFile(work / "val_pixels.npy"), val_labels, batch_size=32):
            seen += int(images.shape[0])
    else:
        from model_build.training.feature_cache import head_eval_dataset, head_train_dataset  # noqa: PLC0415 — model_build.training.feature_cache loads TensorFlow; this module stays light without it

        parts = [RowFile(work / f"train_features_{view}.npy") for view in range(views)]
        train, steps = head_train_dataset(parts, labels, views=views, batch_size=32, seed=0)
        for features, _ in train.take(steps):
            seen += int(features.shape[0])
        val = head_eval_dataset(RowFile(work / "val_features.npy"), val_labels, batch_size=32)
        for features, _ in val:
            seen += int(features.shape[0])
    print(f"{phase}: {seen} rows through the pipeline")


def synthetic(work: Path, views: int) -> dict:
    print(f"writing the full-scale files into {work} (once)", flush=True)
    _write_synthetic(work, views)
    results = {"train_images": FULL_TRAIN, "val_images": FULL_VAL, "views": views, "phases": {}}
    for phase in ("pixels", "features"):
        command = [sys.executable, "-m", "bench.training_memory", "--phase", phase]
        command += ["--work", str(work), "--views", str(views)]
        result = measure(command, work / f"{phase}.log")
        results["phases"][phase] = result
        print(
            f"{phase:>9}: peak RSS {result['peak_rss_bytes'] / 2**30:.2f} GiB, "
            f"{result['wall_s'] / 60:.1f} min, exit {result['exit_status']}",
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.training_memory")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the reference counts")
    parser.add_argument("--image-size", type=int, default=500)
    parser.add_argument("--modes", default="plain,k1,k5")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--work", type=Path, default=Path("bench/results/memory"))
    parser.add_argument("--keep-features", action="store_true", help="reuse cached features")
    parser.add_argument("--synthetic", action="store_true", help="full-scale data path only")
    parser.add_argument("--views", type=int, default=5, help="views for --synthetic")
    parser.add_argument("--phase", choices=("pixels", "features"), help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.phase:
        _data_path(arguments.phase, arguments.work, arguments.views)
        return 0
    if arguments.synthetic:
        results = synthetic(arguments.work, arguments.views)
        path = arguments.work / "training_memory_synthetic.json"
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {path}")
        return 0

    train_per_label = max(2, round(REFERENCE_TRAIN_PER_LABEL * arguments.scale))
    val_per_label = max(2, round(REFERENCE_VAL_PER_LABEL * arguments.scale))
    work = arguments.work
    data = work / f"data_{train_per_label}_{val_per_label}_{arguments.image_size}"
    print(f"dataset: 14 × {train_per_label} train + 14 × {val_per_label} val in {data}", flush=True)
    generate_dataset(
        data,
        train_per_label=train_per_label,
        val_per_label=val_per_label,
        image_size=arguments.image_size,
        workers=arguments.workers,
    )
    weights = random_weights(work / "random_mobilenet_v2_no_top.weights.h5")
    cache = work / "cache"
    results: dict = {
        "train_images": 14 * train_per_label,
        "val_images": 14 * val_per_label,
        "scale": arguments.scale,
        "epochs": arguments.epochs,
        "cpus": os.cpu_count(),
        "modes": {},
    }
    # Warm the decode cache once (the audit is the decode step), outside the measurements.
    audit = [sys.executable, "-m", "model_build.audit", str(data), "--cache-dir", str(cache)]
    audit += ["--out", str(work / "audit")]
    if arguments.workers:
        audit += ["--workers", str(arguments.workers)]
    results["decode"] = measure(audit, work / f"decode_{train_per_label}.log")
    print(f"decode (warm-up, not a mode): {results['decode']['wall_s'] / 60:.1f} min", flush=True)
    for mode in arguments.modes.split(","):
        views = 0 if mode == "plain" else int(mode.lstrip("k"))
        if not arguments.keep_features:
            shutil.rmtree(cache / "features", ignore_errors=True)
        out = work / f"run_{mode}_{train_per_label}"
        shutil.rmtree(out, ignore_errors=True)
        command = [
            sys.executable, "-m", "model_build.train", "--data", str(data),
            "--model", "mobilenet_v2", "--weights", str(weights), "--epochs",
            str(arguments.epochs), "--feature-cache-views", str(views), "--out", str(out),
            "--cache-dir", str(cache), "--publish", "none",
        ]  # fmt: skip
        if arguments.workers:
            command += ["--workers", str(arguments.workers)]
        result = measure(command, work / f"{mode}_{train_per_label}.log")
        results["modes"][mode] = result
        peak = result["peak_rss_bytes"]
        print(
            f"{mode:>6}: peak RSS {peak / 2**30:.2f} GiB, {result['wall_s'] / 60:.1f} min, "
            f"exit {result['exit_status']}"
            if peak
            else f"{mode}: no measurement (exit {result['exit_status']}, see {result['log']})",
            flush=True,
        )
    path = work / f"training_memory_{train_per_label}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

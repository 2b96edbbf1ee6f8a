"""Fine-tuned recipes for ``python -m bench.real_photos``: the whole training command, measured.

A frozen recipe in the benchmark is a head trained on cached features. A fine-tuned recipe changes
the backbone, so it is measured as a user runs it: ``python -m model_build.train --data … --weights
… --fine-tune-from BLOCK …`` (the decode cache and the activation cache are reused across runs, as
they are for a user who reruns), under ``/usr/bin/time -v`` for the wall time and the peak
resident set. The run's ``model.keras`` then gives the probabilities on the same role splits as
the frozen rows (selection, calibration, held-out), so the rows are computed by the same code, and
its ``model.tflite`` is timed against the frozen models' TFLite files (batch 1, the worker's
loop): the worker latency ratio.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench.training_memory import measure

# name -> the flags of python -m model_build.train that make the recipe (chosen on selection).
FINE_TUNE_RECIPES: Final[dict[str, tuple[str, ...]]] = {
    "ft_gap_block13": (
        "--head", "gap", "--fine-tune-from", "block_13_expand", "--epochs", "20",
        "--fine-tune-epochs", "8", "--fine-tune-learning-rate", "1e-4",
        "--fine-tune-head-learning-rate", "1e-3",
    ),
}  # fmt: skip
LATENCY_IMAGES: Final[int] = 24


def train_recipe(
    recipe: str, *, data: Path, weights: Path, runs: Path, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Run the recipe's training command into a new run folder; wall time and peak RSS."""
    run_dir = runs / f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "model_build.train", "--data", str(data), "--weights", str(weights),
        *FINE_TUNE_RECIPES[recipe], "--out", str(run_dir), "--publish", "none",
    ]  # fmt: skip
    if cache_dir is not None:
        command += ["--cache-dir", str(cache_dir)]
    print(f"{recipe}: {' '.join(command[1:])}", flush=True)
    measured = measure(command, run_dir.parent / f"{run_dir.name}.log")
    if measured["exit_status"] != 0:
        raise RuntimeError(f"{recipe}: training failed, see {measured['log']}")
    return {**measured, "run_dir": str(run_dir), "flags": list(FINE_TUNE_RECIPES[recipe])}


def probabilities(run_dir: Path, splits: dict[str, Any]) -> dict[str, np.ndarray]:
    """The run's model's probabilities on each of ``splits`` (prepared role splits)."""
    import keras

    from model_build.data.pipeline import predict

    model = keras.models.load_model(Path(run_dir) / "model.keras", compile=False)
    return {name: predict(model, split.pixels).astype(np.float64) for name, split in splits.items()}


def frozen_tflite(backbone_model, head) -> bytes:
    """The frozen backbone (as published today) with ``head``, as float32 TFLite."""
    import keras

    from model_build.release.export import convert_float32
    from model_build.training.model import parts_of

    parts = parts_of(backbone_model)
    inputs = backbone_model.inputs[0]
    full = keras.Model(inputs, head(parts.backbone(parts.scaling(inputs), training=False)))
    return convert_float32(full)


def worker_latency(model: bytes | str | Path, images: np.ndarray, repeats: int = 2) -> float:
    """Median seconds per photo of the worker's LiteRT loop at batch 1 (the best of ``repeats``
    passes over ``images``, after one warm-up invocation)."""
    from contracts.litert import BatchRunner, open_interpreter

    runner = BatchRunner(open_interpreter(model))
    runner.invoke(images[:1])
    best = float("inf")
    for _ in range(repeats):
        times = []
        for image in images:
            started = time.perf_counter()
            runner.invoke(image[np.newaxis])
            times.append(time.perf_counter() - started)
        best = min(best, float(np.median(times)))
    return best


def architecture(run_dir: Path) -> dict[str, Any]:
    """Parameter count and TFLite sizes of the run's exported model."""
    import keras

    run = Path(run_dir)
    model = keras.models.load_model(run / "model.keras", compile=False)
    return {
        "parameters": int(model.count_params()),
        "tflite_bytes": (run / "model.tflite").stat().st_size,
        "int8_tflite_bytes": next(
            (
                (run / name).stat().st_size
                for name in ("model_int8.tflite", "model_int8.rejected.tflite")
                if (run / name).is_file()
            ),
            None,
        ),
    }

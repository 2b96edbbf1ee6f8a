"""Running a TFLite file under LiteRT: resize the batch dimension, allocate, invoke (contract 4).

The exported models have a dynamic batch dimension (``[-1, 224, 224, 3]`` uint8). The one loop
both halves use — export's checks (:mod:`model_build.release.export`) and the worker
(:mod:`handler.classifier`) — resizes the input to the batch at hand, reallocates only when that
size changes, invokes once per batch and dequantises an integer output. A model exported with
pooled backbone features (the unfamiliarity score) has two outputs, told apart by their last
dimension: the probabilities are the narrower. No TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def open_interpreter(model: bytes | str | Path, *, num_threads: int | None = None) -> Any:
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 — the LiteRT runtime loads only when a model is opened

    if isinstance(model, bytes):
        return Interpreter(model_content=model, num_threads=num_threads)
    return Interpreter(model_path=str(model), num_threads=num_threads)


class BatchRunner:
    """One interpreter; :meth:`invoke` a uint8 batch of any size, then read :meth:`output`."""

    def __init__(self, interpreter: Any) -> None:
        self.interpreter = interpreter
        self.input = interpreter.get_input_details()[0]
        self.batch_size: int | None = None

    @property
    def outputs(self) -> list[dict]:
        return list(self.interpreter.get_output_details())

    def output_index(self, which: str = "probabilities", width: int | None = None) -> int:
        """The probabilities output (the one ``width`` wide, else the narrowest) or the
        ``"features"`` output (the widest) of a model with two."""
        details = sorted(self.outputs, key=lambda d: int(d["shape"][-1]))
        if which == "features":
            return details[-1]["index"]
        matching = [d for d in details if width is not None and int(d["shape"][-1]) == width]
        return (matching or details)[0]["index"]

    def resize(self, shape: tuple[int, ...]) -> None:
        if shape[0] == self.batch_size:
            return
        self.interpreter.resize_tensor_input(self.input["index"], list(shape))
        self.interpreter.allocate_tensors()
        self.batch_size = shape[0]

    def invoke(self, batch: np.ndarray) -> None:
        batch = np.ascontiguousarray(batch, dtype=np.uint8)
        self.resize(batch.shape)
        self.interpreter.set_tensor(self.input["index"], batch)
        self.interpreter.invoke()

    def output(self, index: int) -> np.ndarray:
        """Output ``index`` of the last invocation, dequantised, as float64."""
        details = next(d for d in self.outputs if d["index"] == index)
        return dequantise(self.interpreter.get_tensor(index), details)


def dequantise(output: np.ndarray, details: dict) -> np.ndarray:
    scale, zero_point = details.get("quantization", (0.0, 0))
    if np.issubdtype(output.dtype, np.integer) and scale:
        return (output.astype(np.float64) - zero_point) * scale
    return output.astype(np.float64)


def predict(
    model: bytes | str | Path,
    images: np.ndarray,
    batch_size: int = 32,
    *,
    output: str = "probabilities",
) -> np.ndarray:
    """An output of a TFLite model for ``images``, ``batch_size`` at a time (float32)."""
    runner = BatchRunner(open_interpreter(model))
    index = runner.output_index(output)
    outputs = []
    for start in range(0, len(images), batch_size):
        runner.invoke(images[start : start + batch_size])
        outputs.append(runner.output(index))
    return np.concatenate(outputs).astype(np.float32)

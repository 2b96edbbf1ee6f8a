"""The exported model on LiteRT: one batched inference per invocation, calibrated scores.

Loaded once per container (see :mod:`handler.app`). Everything the worker needs to interpret the
model's output comes from the artifact's manifest (contract 4): label order, the temperature that
calibrates the scores and the review threshold. TensorFlow is never imported; the interpreter is
``ai_edge_litert``.

Batching choice: the input tensor is resized to exactly the number of images of the invocation
and reallocated only when that number changes from the previous call. Padding to fixed bucket
sizes would avoid some reallocations (a few milliseconds each) but costs a full inference per
padded slot (tens of milliseconds), so exact sizes are cheaper for SQS batches of 1 to 10.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from contracts.catalogue import LabelScore
from contracts.image import CHANNELS, IMAGE_SIZE
from contracts.unfamiliarity import UnfamiliarityScorer

TOP_K: Final[int] = 3
_PROBABILITY_FLOOR: Final[float] = 1e-12
# Softmax outputs of a quantised model sum to 1 only up to the quantisation step.
_PROBABILITY_SUM_TOLERANCE: Final[float] = 0.05


@dataclass(frozen=True)
class Prediction:
    category: str
    confidence: float  # calibrated probability of ``category``
    top3: tuple[LabelScore, ...]
    unfamiliarity: float | None = None  # contracts.unfamiliarity score, when the model ships one
    unfamiliar: bool = False  # above the shipped threshold: NEEDS_REVIEW, reason "unfamiliar"


class Classifier:
    """A LiteRT interpreter over one ``.tflite`` file with uint8 ``[N, 224, 224, 3]`` input."""

    def __init__(
        self,
        model_path: Path | str,
        labels: Sequence[str],
        *,
        temperature: float = 1.0,
        num_threads: int | None = None,
        unfamiliarity: UnfamiliarityScorer | None = None,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"the calibration temperature must be positive, not {temperature}")
        self.labels = tuple(labels)
        self.temperature = float(temperature)
        self._interpreter = Interpreter(
            model_path=str(model_path), num_threads=num_threads or os.cpu_count() or 1
        )
        self._input = self._interpreter.get_input_details()[0]
        # Probabilities are the output with one value per label; a model exported with pooled
        # backbone features (for the unfamiliarity score) has them as a second, wider output.
        outputs = self._interpreter.get_output_details()
        by_labels = [d for d in outputs if int(d["shape"][-1]) == len(self.labels)]
        chosen = by_labels[0] if by_labels else outputs[0]
        self._output_index = chosen["index"]
        others = [d for d in outputs if d["index"] != chosen["index"]]
        self._features_index = others[0]["index"] if others else None
        self.unfamiliarity = unfamiliarity
        if unfamiliarity is not None and (
            self._features_index is None or int(others[0]["shape"][-1]) != unfamiliarity.dimensions
        ):
            raise ValueError(
                "the artifact ships an unfamiliarity score but the model has no "
                f"{unfamiliarity.dimensions}-wide features output"
            )
        expected = (IMAGE_SIZE, IMAGE_SIZE, CHANNELS)
        if self._input["dtype"] != np.uint8 or tuple(self._input["shape"][1:]) != expected:
            raise ValueError(
                f"the model's input is {self._input['dtype'].__name__}{list(self._input['shape'])},"
                f" not uint8[N, {IMAGE_SIZE}, {IMAGE_SIZE}, {CHANNELS}] (contract 1)"
            )
        self._batch_size: int | None = None
        self._resize(1)
        classes = int(chosen["shape"][-1])
        if classes != len(self.labels):
            raise ValueError(
                f"the model has {classes} outputs but the manifest lists {len(labels)} labels"
            )

    def predict(self, pixels: np.ndarray) -> list[Prediction]:
        """One inference for all images in ``pixels`` (uint8 ``[N, 224, 224, 3]``)."""
        if len(pixels) == 0:
            return []
        self._resize(len(pixels))
        self._interpreter.set_tensor(self._input["index"], np.ascontiguousarray(pixels))
        self._interpreter.invoke()
        output = self._dequantised(self._interpreter.get_tensor(self._output_index))
        result = predictions(calibrate(output, self.temperature), self.labels)
        if self.unfamiliarity is None or self._features_index is None:
            return result
        features = self._interpreter.get_tensor(self._features_index).astype(np.float32)
        scores = self.unfamiliarity.score(features)
        return [
            replace(p, unfamiliarity=float(s), unfamiliar=bool(s > self.unfamiliarity.threshold))
            for p, s in zip(result, scores, strict=True)
        ]

    def _resize(self, batch_size: int) -> None:
        if batch_size == self._batch_size:
            return
        self._interpreter.resize_tensor_input(
            self._input["index"], [batch_size, IMAGE_SIZE, IMAGE_SIZE, CHANNELS]
        )
        self._interpreter.allocate_tensors()
        self._batch_size = batch_size

    def _dequantised(self, output: np.ndarray) -> np.ndarray:
        details = next(
            d for d in self._interpreter.get_output_details() if d["index"] == self._output_index
        )
        scale, zero_point = details.get("quantization", (0.0, 0))
        if np.issubdtype(output.dtype, np.integer) and scale:
            return (output.astype(np.float64) - zero_point) * scale
        return output.astype(np.float64)


def calibrate(output: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling on log-probabilities: ``softmax(log p / T)``.

    ``output`` may be probabilities (the model ends in softmax) or logits; for logits
    ``log_softmax`` comes first, which gives the same result as ``softmax(logits / T)``.
    """
    output = np.asarray(output, dtype=np.float64)
    sums = output.sum(axis=-1)
    if np.all(output >= 0) and np.all(np.abs(sums - 1.0) <= _PROBABILITY_SUM_TOLERANCE):
        log_probabilities = np.log(np.maximum(output / sums[..., None], _PROBABILITY_FLOOR))
    else:
        shifted = output - output.max(axis=-1, keepdims=True)
        log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    scaled = log_probabilities / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exponentials = np.exp(scaled)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def predictions(probabilities: np.ndarray, labels: Sequence[str]) -> list[Prediction]:
    """The top three labels of each row of calibrated probabilities."""
    result = []
    for row in probabilities:
        best = np.argsort(row)[::-1][:TOP_K]
        top = tuple(LabelScore(labels[i], round(float(row[i]), 6)) for i in best)
        result.append(Prediction(category=top[0].label, confidence=top[0].score, top3=top))
    return result

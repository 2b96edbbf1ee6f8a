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

from contracts.catalogue import LabelScore
from contracts.image import CHANNELS, IMAGE_SIZE
from contracts.litert import BatchRunner, open_interpreter
from contracts.scoring import apply_temperature, top_k
from contracts.unfamiliarity import UnfamiliarityScorer

TOP_K: Final[int] = 3


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
        self._interpreter = open_interpreter(model_path, num_threads=num_threads or os.cpu_count())
        self._runner = BatchRunner(self._interpreter)  # the resize-allocate-invoke loop
        self._input = self._runner.input
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
        self._runner.resize((1, IMAGE_SIZE, IMAGE_SIZE, CHANNELS))
        classes = int(chosen["shape"][-1])
        if classes != len(self.labels):
            raise ValueError(
                f"the model has {classes} outputs but the manifest lists {len(labels)} labels"
            )

    def predict(self, pixels: np.ndarray) -> list[Prediction]:
        """One inference for all images in ``pixels`` (uint8 ``[N, 224, 224, 3]``)."""
        if len(pixels) == 0:
            return []
        self._runner.invoke(pixels)
        output = self._runner.output(self._output_index)
        result = predictions(calibrate(output, self.temperature), self.labels)
        if self.unfamiliarity is None or self._features_index is None:
            return result
        features = self._interpreter.get_tensor(self._features_index).astype(np.float32)
        scores = self.unfamiliarity.score(features)
        return [
            replace(p, unfamiliarity=float(s), unfamiliar=bool(s > self.unfamiliarity.threshold))
            for p, s in zip(result, scores, strict=True)
        ]


def calibrate(output: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling on log-probabilities: ``softmax(log p / T)`` (contracts.scoring).

    ``output`` may be probabilities (the model ends in softmax) or logits; for logits
    ``log_softmax`` comes first, which gives the same result as ``softmax(logits / T)``.
    """
    return apply_temperature(output, temperature)


def predictions(probabilities: np.ndarray, labels: Sequence[str]) -> list[Prediction]:
    """The top three labels of each row of calibrated probabilities."""
    result = []
    for row, best in zip(probabilities, top_k(probabilities, TOP_K), strict=True):
        top = tuple(LabelScore(labels[i], round(float(row[i]), 6)) for i in best)
        result.append(Prediction(category=top[0].label, confidence=top[0].score, top3=top))
    return result

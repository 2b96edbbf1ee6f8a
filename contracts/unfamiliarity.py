"""The unfamiliarity score the worker computes: "is this photo like anything we trained on?"

Fitted at training time (:mod:`model_build.evaluation.unfamiliarity`), shipped in the artifact as
``unfamiliarity.npz`` and described in the manifest's ``unfamiliarity`` block; the worker scores
every photo with the same function and marks it ``NEEDS_REVIEW`` with reason ``unfamiliar`` when
the score is above the shipped threshold, however confident the classifier is.

The score is the smallest squared **Mahalanobis distance** (Lee et al. 2018) of the photo's
pooled backbone features (global average of MobileNetV2's last feature map, 1,280 numbers, a
second output of the exported TFLite model) to the training photos' label means, under one
covariance shared by all labels (shrunk towards its average variance). Measured on real photos
against the free scores from the classifier's output it separates unfamiliar photos far better
(``bench/real_photos.py``, docs/evaluation.md "On real photos"). Cost in the worker: one
``[N, 1280] × [1280, 1280]`` product per batch — well under a millisecond per photo next to tens of
milliseconds for the backbone; the file is about 6.6 MB (float32 precision matrix plus means).

numpy only: the worker's image has no TensorFlow and no scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from contracts.artifact import UNFAMILIARITY_FILE

__all__ = ["METHOD", "REASON_UNFAMILIAR", "UNFAMILIARITY_FILE", "UnfamiliarityScorer"]

REASON_UNFAMILIAR: Final[str] = "unfamiliar"
METHOD: Final[str] = "mahalanobis"


@dataclass(frozen=True)
class UnfamiliarityScorer:
    means: np.ndarray  # float32 [labels, D]
    precision: np.ndarray  # float32 [D, D], symmetric
    threshold: float  # scores above it are unfamiliar
    # Features L2-normalised before the distance (the means and precision were fitted on
    # normalised features). Over leave-labels-out folds on real photos this separated far
    # unfamiliar photos better at no cost on near ones (docs/evaluation.md).
    normalised: bool = False

    @property
    def dimensions(self) -> int:
        return int(self.precision.shape[0])

    def score(self, features: np.ndarray) -> np.ndarray:
        """Smallest squared Mahalanobis distance to a label mean, per row of ``features``."""
        features = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
        if self.normalised:
            norms = np.linalg.norm(features, axis=1, keepdims=True)
            features = features / np.maximum(norms, 1e-12)
        projected = features @ self.precision
        means_projected = self.means @ self.precision
        distance = (
            (projected * features).sum(axis=1)[:, None]
            - 2.0 * features @ means_projected.T
            + (means_projected * self.means).sum(axis=1)[None, :]
        )
        return distance.min(axis=1).astype(np.float64)

    def unfamiliar(self, features: np.ndarray) -> np.ndarray:
        return self.score(features) > self.threshold

    def save(self, path: Path) -> None:
        with path.open("wb") as stream:
            np.savez(
                stream,
                method=np.array(METHOD),
                means=self.means.astype(np.float32),
                precision=self.precision.astype(np.float32),
                threshold=np.array(self.threshold, dtype=np.float64),
                normalised=np.array(self.normalised),
            )

    @classmethod
    def load(cls, path: Path | str) -> UnfamiliarityScorer:
        with np.load(path, allow_pickle=False) as arrays:
            method = str(arrays["method"])
            if method != METHOD:
                raise ValueError(f"{path}: unfamiliarity method {method!r}, expected {METHOD!r}")
            means = arrays["means"].astype(np.float32)
            precision = arrays["precision"].astype(np.float32)
            threshold = float(arrays["threshold"])
            # Files written before the option existed score raw features.
            normalised = bool(arrays["normalised"]) if "normalised" in arrays.files else False
        if precision.ndim != 2 or precision.shape[0] != precision.shape[1]:
            raise ValueError(f"{path}: precision matrix has shape {precision.shape}")
        if means.ndim != 2 or means.shape[1] != precision.shape[0]:
            raise ValueError(f"{path}: means {means.shape} do not match {precision.shape}")
        return cls(means=means, precision=precision, threshold=threshold, normalised=normalised)

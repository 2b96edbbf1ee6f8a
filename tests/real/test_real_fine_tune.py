"""The real tier for ``--fine-tune-from``: ImageNet MobileNetV2 + real grocery photos.

A short fine-tune (six packaged-dairy labels that the frozen ImageNet features confuse, 40
training photos each, two augmented views) through ``python -m model_build.train``: on the run's
95 val photos (calibration and held-out together: no weight, checkpoint or argmax depends on
them) it must beat the frozen head of the same kind trained on the same photos — by
:data:`MARGIN` over the mean of three head initialisations, and never fall below the best one;
its float32 TFLite must agree with Keras; and the published artifact must be catalogued by the
worker on the local stack.

Measured (2 quiet cores, 2 min): fine-tuned 0.663, frozen head 0.642, 0.558 and 0.589 for seeds
0–2 (mean 0.596): +6.7 points over the mean, +2.1 over the best initialisation. The margin of 3
points leaves three photos either way. On the held-out half alone (46 photos) the difference
was within noise (0.696 against 0.61–0.67), which is why the test uses all of val. On the whole
grocery set the difference is +5.1 to +8.0 points (docs/evaluation.md).

Skips, with one line, when ``../shared/real`` (weights + photos) is not beside the repository.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest

from bench.real_material import WEIGHTS, real_material_missing
from contracts.catalogue import Status
from local_stack.stack import run_local_stack
from model_build import train
from model_build.data.pipeline import predict
from model_build.data.prepare import run_split
from model_build.run_folder import RunFolder
from model_build.training.feature_cache import compute_features
from model_build.training.model import build_classifier
from tests.support.grocery_subset import grocery_subset

pytestmark = [
    pytest.mark.real,
    # About 4 minutes of two cores: run by `make test-real` and `make test-all`, not `make test`,
    # which must stay under 8 minutes (the frozen real-tier test stays in it).
    pytest.mark.slow,
    pytest.mark.skipif(real_material_missing() is not None, reason=str(real_material_missing())),
]
LABELS = ("Juice", "Milk", "Oatghurt", "Sour-Cream", "Soyghurt", "Yoghurt")
TRAIN_PER_LABEL = 40
MARGIN = 0.03  # over the frozen initialisations' mean; measured: see the module docstring
FROZEN_SEEDS = (0, 1, 2)
VAL_PHOTOS = 95  # the val photos of these six labels: calibration and held-out


def _subset(root: Path) -> Path:
    return grocery_subset(root, LABELS, TRAIN_PER_LABEL)


def test_a_short_fine_tune_beats_the_frozen_head_and_catalogues(tmp_path: Path) -> None:
    """One run (so parallel test workers never train it twice), then the checks below."""

    data = _subset(tmp_path / "data")
    run_dir, artifacts = tmp_path / "run", tmp_path / "artifacts"
    arguments = [
        "--data", str(data), "--weights", str(WEIGHTS), "--head", "gap",
        "--fine-tune-from", "block_13_expand", "--feature-cache-views", "2",
        "--epochs", "15", "--fine-tune-epochs", "6", "--fine-tune-learning-rate", "1e-4",
        "--fine-tune-head-learning-rate", "1e-3", "--out", str(run_dir),
        "--publish", str(artifacts), "--cache-dir", str(tmp_path / "cache"), "--workers", "2",
    ]  # fmt: skip
    assert train.main(arguments) == 0

    fine_tuned, frozen = _accuracies_on_val(run_dir)
    print(f"on {VAL_PHOTOS} val photos: fine-tuned {fine_tuned:.3f}, frozen head {frozen}")
    assert fine_tuned >= float(np.mean(frozen)) + MARGIN, (fine_tuned, frozen)
    assert fine_tuned >= max(frozen), (fine_tuned, frozen)
    export = json.loads((run_dir / "export.json").read_text())
    assert export["float32_disagreements"] == 0
    _catalogued_on_the_local_stack(data, artifacts, tmp_path / "uploads")


def _accuracies_on_val(run_dir: Path) -> tuple[float, list[float]]:
    """The fine-tuned model's accuracy and the frozen head's (one per initialisation) on the
    run's val photos: calibration and held-out together, which nothing was fitted or chosen
    on (the temperature the calibration photos fit does not move an argmax).

    The frozen head is the same gap head on the frozen ImageNet backbone, trained on the run's
    own train photos (two augmented views, as the fine-tune), its epoch chosen on the run's
    selection photos."""

    run = RunFolder(run_dir)
    splits = {
        name: run_split(run, name) for name in ("train", "selection", "calibration", "held_out")
    }
    val_pixels = np.concatenate([splits["calibration"].pixels, splits["held_out"].pixels])
    val_labels = np.concatenate(
        [splits["calibration"].label_indices, splits["held_out"].label_indices]
    )
    assert len(val_labels) == VAL_PHOTOS
    fine_tuned_model = keras.models.load_model(run_dir / "model.keras", compile=False)
    fine_tuned = float(np.mean(predict(fine_tuned_model, val_pixels).argmax(1) == val_labels))

    classifier = build_classifier(
        "mobilenet_v2", num_classes=len(LABELS), weights=str(WEIGHTS), head="gap"
    )
    pixels = {"train": splits["train"].pixels, "selection": splits["selection"].pixels,
              "val": val_pixels}  # fmt: skip
    features = {
        name: np.asarray(
            compute_features(
                classifier.model, images, run_dir / f"frozen_{name}.npy",
                views=2 if name == "train" else 0, seed=0, batch_size=32,
            ),
            np.float32,
        )
        for name, images in pixels.items()
    }  # fmt: skip
    frozen = []
    for seed in FROZEN_SEEDS:
        keras.utils.set_random_seed(seed)
        head = keras.models.clone_model(classifier.head)
        frozen.append(_best_on_selection(head, features, splits, val_labels))
    return fine_tuned, frozen


def _best_on_selection(head, features: dict, splits: dict, val_labels: np.ndarray) -> float:
    """Train ``head`` on the train features for 15 epochs; its val accuracy at the epoch with the
    best selection accuracy."""
    head.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    best = {"selection": -1.0, "val": 0.0}

    class KeepBest(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            selection = _accuracy(head, features["selection"], splits["selection"].label_indices)
            if selection > best["selection"]:
                best.update(selection=selection, val=_accuracy(head, features["val"], val_labels))

    head.fit(
        features["train"],
        np.tile(splits["train"].label_indices, 2),
        epochs=15,
        verbose=0,
        callbacks=[KeepBest()],
    )
    return best["val"]


def _accuracy(head, features: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(head(features, training=False)).argmax(1) == labels))


def _catalogued_on_the_local_stack(data: Path, artifacts: Path, uploads: Path) -> None:

    uploads.mkdir()
    photos = {}
    for label in LABELS:  # one photo per label: the first val photo
        source = sorted((data / "val" / label).iterdir())[0]
        (uploads / f"{label}.jpg").write_bytes(source.resolve().read_bytes())
        photos[f"uploads/{label}.jpg"] = label
    environment = dict(os.environ)
    items, _, uploaded, dead = run_local_stack(uploads, str(artifacts), None)
    assert dict(os.environ) == environment  # the stack's settings left with it
    by_key = {item.key: item for item in items}
    assert uploaded == len(LABELS)
    assert dead == 0
    assert all(by_key[key].status in (Status.CATALOGUED, Status.NEEDS_REVIEW) for key in photos)
    assert sum(by_key[key].category == label for key, label in photos.items()) >= len(LABELS) - 1

"""The real tier for ``--fine-tune-from``: ImageNet MobileNetV2 + real grocery photos.

A short fine-tune (six packaged-dairy labels that the frozen ImageNet features confuse, 40
training photos each, two augmented views) through ``python -m model_build.train``: it must be at
least as accurate as the frozen head of the same kind trained on the same photos, on the same 46
held-out photos (:data:`MARGIN`); its float32 TFLite must agree with Keras; and the published
artifact must be catalogued by the worker on the local stack.

The margin is 0 because that is what the measurements support: the fine-tuned run scored 0.696,
the frozen head 0.61–0.67 (three trainings, different head initialisations; its epochs range over
0.63–0.72), a difference of 1–4 photos of 46 — within noise. On the whole grocery set the
difference is +5.8 to +8.0 points (docs/evaluation.md).

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
MARGIN = 0.0  # measured: see the module docstring


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

    metrics = json.loads((run_dir / "metrics.json").read_text())
    frozen = _frozen_head_accuracy(run_dir)
    print(f"fine-tuned held-out accuracy {metrics['accuracy']:.3f}, frozen head {frozen:.3f}")
    assert metrics["accuracy"] >= frozen + MARGIN, (metrics["accuracy"], frozen)
    export = json.loads((run_dir / "export.json").read_text())
    assert export["float32_disagreements"] == 0
    _catalogued_on_the_local_stack(data, artifacts, tmp_path / "uploads")


def _frozen_head_accuracy(run_dir: Path) -> float:
    """The same gap head on the frozen ImageNet backbone, trained on the run's own train photos
    (two augmented views, as the fine-tune), the epoch chosen on the run's selection photos;
    accuracy on the run's held-out photos."""

    keras.utils.set_random_seed(0)
    classifier = build_classifier(
        "mobilenet_v2", num_classes=len(LABELS), weights=str(WEIGHTS), head="gap"
    )
    run = RunFolder(run_dir)
    splits = {name: run_split(run, name) for name in ("train", "selection", "held_out")}
    features = {
        name: np.asarray(
            compute_features(
                classifier.model, split.pixels, run_dir / f"frozen_{name}.npy",
                views=2 if name == "train" else 0, seed=0, batch_size=32,
            ),
            np.float32,
        )
        for name, split in splits.items()
    }  # fmt: skip
    head = classifier.head
    head.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    best = {"selection": -1.0, "held_out": 0.0}

    class KeepBest(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            selection = _accuracy(head, features["selection"], splits["selection"].label_indices)
            if selection > best["selection"]:
                held_out = _accuracy(head, features["held_out"], splits["held_out"].label_indices)
                best.update(selection=selection, held_out=held_out)

    head.fit(
        features["train"],
        np.tile(splits["train"].label_indices, 2),
        epochs=15,
        verbose=0,
        callbacks=[KeepBest()],
    )
    return best["held_out"]


def _accuracy(head, features: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(head(features, training=False)).argmax(1) == labels))


def _catalogued_on_the_local_stack(data: Path, artifacts: Path, uploads: Path) -> None:

    uploads.mkdir()
    photos = {}
    for label in LABELS:  # one photo per label: the first val photo
        source = sorted((data / "val" / label).iterdir())[0]
        (uploads / f"{label}.jpg").write_bytes(source.resolve().read_bytes())
        photos[f"uploads/{label}.jpg"] = label
    saved = dict(os.environ)
    try:
        items, _, uploaded, dead = run_local_stack(uploads, str(artifacts), None)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    by_key = {item.key: item for item in items}
    assert uploaded == len(LABELS)
    assert dead == 0
    assert all(by_key[key].status in (Status.CATALOGUED, Status.NEEDS_REVIEW) for key in photos)
    assert sum(by_key[key].category == label for key, label in photos.items()) >= len(LABELS) - 1

"""The real tier: ImageNet MobileNetV2 + real grocery photos through the project's own commands.

Fast variant for CI (5 labels, 24 training photos each, one augmented view, 6 epochs): training
with the real weights must be far above the ``--weights none`` control (chance: a frozen random
backbone), float32 TFLite must agree with Keras, the published artifact must be catalogued by
the worker on the local stack — and a generated drawing (not a grocery photo) must go to review
as ``unfamiliar``. The full table is ``make test-real`` (``bench/real_photos.py``).

Skips, with one line, when ``../shared/real`` (weights + photos) is not beside the repository.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from bench.real_material import WEIGHTS, real_material_missing
from contracts.artifact import load_artifact
from contracts.catalogue import Status
from contracts.unfamiliarity import METHOD
from local_stack.stack import run_local_stack
from model_build import train
from model_build.data.prepare import run_split
from model_build.run_folder import RunFolder
from sample_data.photos import draw_sample_image
from tests.support.grocery_subset import grocery_subset

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(real_material_missing() is not None, reason=str(real_material_missing())),
]
LABELS = ("Banana", "Carrots", "Juice", "Milk", "Tomato")
TRAIN_PER_LABEL = 24


def _subset(root: Path) -> Path:
    return grocery_subset(root, LABELS, TRAIN_PER_LABEL)


@pytest.mark.heavy
def test_real_photos_train_export_publish_and_catalogue(tmp_path: Path) -> None:
    """One training run (one test, so parallel test workers never train it twice), then:"""
    real_run = _train(tmp_path)
    _real_weights_learn_far_above_the_random_backbone_control(real_run)
    _float32_tflite_agrees_with_keras_and_the_artifact_records_its_evaluation(real_run)
    _the_published_model_catalogues_real_photos_on_the_local_stack(real_run, tmp_path)


def _train(base: Path) -> tuple[Path, Path, Path]:
    data = _subset(base / "data")
    arguments = [
        "--data", str(data), "--weights", str(WEIGHTS), "--feature-cache-views", "1",
        "--epochs", "6", "--out", str(base / "run"), "--publish", str(base / "artifacts"),
        "--cache-dir", str(base / "cache"), "--workers", "2",
    ]  # fmt: skip
    assert train.main(arguments) == 0
    return data, base / "run", base / "artifacts"


def _real_weights_learn_far_above_the_random_backbone_control(real_run) -> None:
    import keras  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it

    from model_build.training.feature_cache import compute_features  # noqa: PLC0415 — model_build.training.feature_cache loads TensorFlow; this module stays light without it
    from model_build.training.model import build_head, build_model  # noqa: PLC0415 — model_build.training.model loads TensorFlow; this module stays light without it

    _, run_dir, _ = real_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["evaluation"]["split"] == "held_out"  # numbers on photos nothing was fitted on
    assert metrics["evaluation"]["images"] >= 20

    # The control: the same head on a frozen MobileNetV2 with random weights (what --weights none
    # without fine-tuning trained; now refused by the command itself).
    keras.utils.set_random_seed(0)
    control = build_model("mobilenet_v2", num_classes=len(LABELS), weights=None)

    run = RunFolder(run_dir)
    train_split, held_split = (run_split(run, name) for name in ("train", "held_out"))
    train_images, train_labels = train_split.pixels, train_split.label_indices
    held_images, held_labels = held_split.pixels, held_split.label_indices
    features = compute_features(
        control, train_images, run_dir / "c.npy", views=0, seed=0, batch_size=32
    )
    held = compute_features(control, held_images, run_dir / "h.npy", views=0, seed=0, batch_size=32)
    head = build_head(tuple(features.shape[1:]), len(LABELS))
    head.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    head.fit(np.asarray(features), train_labels, epochs=6, verbose=0)
    control_accuracy = float(np.mean(np.asarray(head(np.asarray(held))).argmax(1) == held_labels))

    majority = max(v["support"] for v in metrics["per_label"].values()) / metrics["images"]
    # Measured 0.778 (35 of 45 held-out photos) once the checkpoint is chosen on the selection slice
    # of train (issue 19's roles) rather than on val; 0.83 before, when val both chose and reported.
    # The floor leaves room for a few photos either way; the control below is the real test.
    assert metrics["accuracy"] >= 0.7, metrics["accuracy"]
    assert control_accuracy <= majority + 0.1, (control_accuracy, majority)
    assert metrics["accuracy"] >= control_accuracy + 0.3


def _float32_tflite_agrees_with_keras_and_the_artifact_records_its_evaluation(real_run) -> None:
    _, run_dir, artifacts = real_run
    export = json.loads((run_dir / "export.json").read_text())
    assert export["float32_agreement"] == 1.0
    assert export["float32_disagreements"] == 0
    artifact = load_artifact(artifacts)
    assert artifact.manifest.evaluation["data_sha256"]
    # "mahalanobis (L2-normalised features)" since issue 19: the score named, then its features.
    assert artifact.manifest.unfamiliarity["method"].startswith(METHOD)
    assert artifact.unfamiliarity_path is not None
    assert "int8_gate" in artifact.manifest.int8


def _the_published_model_catalogues_real_photos_on_the_local_stack(
    real_run, tmp_path: Path
) -> None:
    data, _, artifacts = real_run
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    photos = {}
    for label in LABELS:  # one held-out-looking photo per label: the first val photo
        source = sorted((data / "val" / label).iterdir())[0]
        (uploads / f"{label}.jpg").write_bytes(source.resolve().read_bytes())
        photos[f"uploads/{label}.jpg"] = label
    drawing = draw_sample_image("stroller", np.random.default_rng(0), 256)
    drawing.save(uploads / "drawing.jpg", format="JPEG")

    environment = dict(os.environ)
    items, _, uploaded, dead = run_local_stack(uploads, str(artifacts), None)
    # The stack pointed boto3 and the worker at its moto server only while it ran.
    assert dict(os.environ) == environment
    by_key = {item.key: item for item in items}
    assert uploaded == len(LABELS) + 1
    assert dead == 0
    right = sum(by_key[key].category == label for key, label in photos.items())
    assert right >= len(LABELS) - 1
    assert all(by_key[key].status in (Status.CATALOGUED, Status.NEEDS_REVIEW) for key in photos)
    drawing_item = by_key["uploads/drawing.jpg"]
    assert drawing_item.status is Status.NEEDS_REVIEW
    assert drawing_item.reason == "unfamiliar"

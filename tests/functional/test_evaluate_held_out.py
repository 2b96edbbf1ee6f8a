"""Reported numbers come from photos nothing was fitted on: ``test/`` when the dataset has one,
else the held-out half of val (issue 11: test/ was discovered but never evaluated)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from model_build.data.dataset import discover
from model_build.data.splits import assign_roles
from model_build.evaluation.evaluate import evaluate_run
from model_build.run_folder import RunFolder
from sample_data.photos import generate_dataset

pytestmark = pytest.mark.functional
LABELS = ("bathtub", "carrier", "stroller")


@pytest.fixture(scope="module")
def data_and_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    keras = pytest.importorskip("keras")
    from keras import layers  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it

    base = tmp_path_factory.mktemp("held-out")
    common = {"image_size": 64, "labels": LABELS, "workers": 1}
    data = generate_dataset(base / "data", train_per_label=4, val_per_label=6, **common)
    other = generate_dataset(base / "other", train_per_label=1, val_per_label=3, seed=9, **common)
    shutil.copytree(other / "val", data / "test")  # different photos, same labels
    keras.utils.set_random_seed(0)
    inputs = keras.Input((224, 224, 3), name="image")
    x = layers.AveragePooling2D(16)(layers.Rescaling(1 / 127.5, offset=-1.0)(inputs))
    outputs = layers.Dense(len(LABELS), activation="softmax")(layers.Flatten()(x))
    model = base / "model.keras"
    keras.Model(inputs, outputs).save(model)
    return data, model


def _run(base: Path, data: Path, model: Path, dataset) -> Path:
    run_dir = base / "run"
    run_dir.mkdir()
    shutil.copy(model, run_dir / "model.keras")
    (run_dir / "labels.json").write_text(json.dumps(list(LABELS)))
    config = {"data": str(data), "seed": 0, "cache_dir": str(base / "cache"), "model": "tiny"}
    (run_dir / "config.json").write_text(json.dumps(config))
    RunFolder(run_dir).write_data(dataset)
    return run_dir


def test_test_folder_is_evaluated_and_val_only_fits(data_and_model, tmp_path: Path) -> None:
    data, model = data_and_model
    run_dir = _run(tmp_path, data, model, assign_roles(discover(data)))
    metrics = evaluate_run(run_dir, target_precision=0.9)
    evaluation = metrics["evaluation"]
    assert evaluation["split"] == "held_out"
    assert metrics["images"] == evaluation["images"] == 3 * len(LABELS)
    assert evaluation["fit_images"] == 6 * len(LABELS)  # all of val fits: nothing held out
    assert evaluation["data_sha256"] != evaluation["fit_data_sha256"]
    assert metrics["calibration"]["evaluated_on"] == "held_out"
    assert "held_out" in (run_dir / "report" / "index.html").read_text()


def test_without_test_the_held_out_half_of_val_is_evaluated(data_and_model, tmp_path) -> None:
    data, model = data_and_model
    dataset = discover(data)
    dataset.splits.pop("test")
    run_dir = _run(tmp_path, data, model, assign_roles(dataset))
    metrics = evaluate_run(run_dir, target_precision=0.9)
    assert metrics["evaluation"]["split"] == "held_out"
    assert metrics["images"] == 3 * len(LABELS)  # half of the 6 val photos per label
    assert metrics["evaluation"]["fit_images"] == 3 * len(LABELS)

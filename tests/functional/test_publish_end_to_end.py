"""A tiny run folder through evaluate → export → publish → load_artifact, on real JPEG files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from contracts.artifact import load_artifact
from model_build.data.dataset import discover
from model_build.data.prepare import run_split
from model_build.evaluation.evaluate import evaluate_run
from model_build.release.export import export_run, keras_predict
from model_build.release.publish import PublishError, publish_run
from model_build.run_folder import RunFolder
from sample_data.photos import generate_dataset

pytestmark = pytest.mark.functional
LABELS = ("bathtub", "carrier", "stroller")
VAL_PER_LABEL = 4


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keras = pytest.importorskip("keras")
    from keras import layers  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it

    base = tmp_path_factory.mktemp("e2e")
    data = generate_dataset(
        base / "data",
        train_per_label=6,
        val_per_label=VAL_PER_LABEL,
        image_size=64,
        labels=LABELS,
        workers=1,
    )
    run_dir = base / "run"
    run_dir.mkdir()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((224, 224, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = layers.AveragePooling2D(8)(x)
    x = layers.Conv2D(8, 3, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(len(LABELS), activation="softmax")(x)
    keras.Model(inputs, outputs).save(run_dir / "model.keras")
    (run_dir / "labels.json").write_text(json.dumps(list(LABELS)))
    (run_dir / "history.csv").write_text(
        "epoch,accuracy,loss,val_accuracy,val_loss\n0,0.4,1.1,0.3,1.2\n1,0.5,1.0,0.4,1.1\n"
    )
    config = {"data": None, "seed": 0, "cache_dir": str(base / "cache"), "model": "tiny"}
    (run_dir / "config.json").write_text(json.dumps(config))
    RunFolder(run_dir).write_data(discover(data))  # the splits' content hashes, as training does
    return run_dir


def test_evaluate_export_publish_load(tiny_run: Path, tmp_path: Path) -> None:
    import keras  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it

    metrics = evaluate_run(tiny_run, target_precision=0.9)

    # The report's numbers are scikit-learn's on the same predictions; support = image counts.
    val = run_split(RunFolder(tiny_run), "val")
    images, y_true = val.pixels, val.label_indices
    assert len(images) == VAL_PER_LABEL * len(LABELS)
    model = keras.models.load_model(tiny_run / "model.keras", compile=False)
    y_pred = keras_predict(model, images).argmax(1)
    expected = skm.classification_report(
        y_true,
        y_pred,
        labels=range(len(LABELS)),
        target_names=LABELS,
        output_dict=True,
        zero_division=0,
    )
    for label in LABELS:
        assert metrics["per_label"][label]["support"] == VAL_PER_LABEL
        for key in ("precision", "recall", "f1-score"):
            assert metrics["per_label"][label][key] == pytest.approx(expected[label][key])
    assert metrics["accuracy"] == pytest.approx(expected["accuracy"])
    assert metrics["macro_avg"]["f1-score"] == pytest.approx(expected["macro avg"]["f1-score"])
    assert np.array(metrics["confusion_matrix"]).sum() == len(images)

    dest = tmp_path / "artifacts"
    # Publishing publishes, nothing else: an unexported run is refused with the command to run.
    with pytest.raises(PublishError, match=r"python -m model_build\.export"):
        publish_run(tiny_run, str(dest), force=True)
    export_run(tiny_run)
    # The tiny model is untrained (near chance): the quality gate refuses it unless forced.
    version = publish_run(tiny_run, str(dest), force=True)
    export = json.loads((tiny_run / "export.json").read_text())
    assert export["float32_agreement"] == 1.0
    assert export["int8_agreement"] is not None  # recorded whether or not it was published

    artifact = load_artifact(dest)
    assert artifact.version == version
    assert artifact.labels == list(LABELS)
    assert (artifact.int8_model_path is not None) == export["int8_published"]
    assert artifact.manifest.metrics["accuracy"] == pytest.approx(metrics["accuracy"])
    assert artifact.calibration.target_precision == 0.9
    # The guarantee travels with its assumptions and intervals; --force is recorded.
    assert artifact.calibration.calibration_images == VAL_PER_LABEL * len(LABELS)
    assert artifact.calibration.coverage_interval is not None
    assert "same photo source" in artifact.calibration.assumption
    assert artifact.manifest.publish_gate["forced"] is True
    assert artifact.manifest.publish_gate["refused_because"]
    assert artifact.manifest.int8["int8_agreement"] == export["int8_agreement"]
    assert artifact.manifest.evaluation["split"] == "val"  # this run held nothing out
    assert len(artifact.manifest.evaluation["data_sha256"]) == 64
    assert "int8_gate" in artifact.manifest.int8  # judged on accuracy and precision
    if export["int8_published"]:
        assert artifact.manifest.int8_calibration is not None
    for name in ("report/index.html", "report/reliability.png", "report/predictions_grid.png"):
        assert name in artifact.files

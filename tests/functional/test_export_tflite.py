"""Export: float32 agrees with Keras on every val image, int8 is gated on its agreement, and
both files run under LiteRT in a process that never imports TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from model_build.release.export import export_model
from model_build.run_folder import MODEL_INT8_REJECTED_FILE
from tests.support.tiny_artifact import REPOSITORY_ROOT

pytestmark = pytest.mark.functional


def _colour_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy pictures whose dominant channel (R, G or B) is the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    images = rng.integers(0, 90, (count, 224, 224, 3)).astype(np.int16)
    for row, label in enumerate(labels):
        images[row, ..., label] += rng.integers(80, 160)
    return images.clip(0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def trained_model() -> tuple[object, np.ndarray, np.ndarray]:
    keras = pytest.importorskip("keras")
    from keras import layers  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it

    keras.utils.set_random_seed(1)
    inputs = keras.Input((224, 224, 3), dtype="uint8")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = layers.AveragePooling2D(8)(x)
    x = layers.Conv2D(8, 3, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    train_images, train_labels = _colour_images(96, seed=0)
    model.fit(train_images, train_labels, epochs=15, batch_size=32, verbose=0)
    val_images, _ = _colour_images(40, seed=1)
    return model, train_images, val_images


def test_float32_agrees_and_int8_is_gated(trained_model, tmp_path: Path) -> None:
    model, train_images, val_images = trained_model
    unlabelled = SimpleNamespace(pixels=val_images, label_indices=None)  # bare arrays
    report = export_model(
        model,
        tmp_path / "ok",
        calibration_split=unlabelled,
        representative_images=train_images,
        log=print,
    )
    assert report.images_checked == len(val_images)
    assert report.float32_agreement == 1.0
    assert report.int8_agreement is not None
    assert report.int8_agreement >= 0.99
    assert report.int8_published
    assert (tmp_path / "ok" / "model_int8.tflite").is_file()
    recorded = json.loads((tmp_path / "ok" / "export.json").read_text())
    assert recorded["int8_published"] is True
    assert recorded["int8_agreement"] == report.int8_agreement

    rejected = export_model(
        model,
        tmp_path / "strict",
        calibration_split=unlabelled,
        representative_images=train_images,
        min_int8_agreement=1.01,  # impossible: the gate must say no and record the figure
        log=print,
    )
    assert not rejected.int8_published
    assert rejected.int8_agreement == report.int8_agreement
    assert not (tmp_path / "strict" / "model_int8.tflite").exists()
    assert (tmp_path / "strict" / MODEL_INT8_REJECTED_FILE).is_file()
    assert json.loads((tmp_path / "strict" / "export.json").read_text())["int8_published"] is False

    np.save(tmp_path / "ok" / "val.npy", val_images[:7])
    np.save(tmp_path / "ok" / "keras.npy", np.asarray(model(val_images[:7].astype("float32"))))
    _run_without_tensorflow(tmp_path / "ok")


def _run_without_tensorflow(folder: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter

        folder = Path(sys.argv[1])
        images = np.load(folder / "val.npy")
        expected = np.load(folder / "keras.npy").argmax(axis=1)
        for name in ("model.tflite", "model_int8.tflite"):
            interpreter = Interpreter(model_path=str(folder / name))
            detail = interpreter.get_input_details()[0]
            assert detail["dtype"] == np.uint8, detail["dtype"]
            assert list(detail["shape_signature"]) == [-1, 224, 224, 3], detail
            for batch in (1, 3, len(images)):
                interpreter.resize_tensor_input(detail["index"], [batch, 224, 224, 3])
                interpreter.allocate_tensors()
                interpreter.set_tensor(detail["index"], images[:batch])
                interpreter.invoke()
                out = interpreter.get_output_details()[0]
                probabilities = interpreter.get_tensor(out["index"])
                assert probabilities.shape == (batch, 3), probabilities.shape
                assert probabilities.dtype == np.float32
                assert np.allclose(probabilities.sum(axis=1), 1.0, atol=0.02)
                if name == "model.tflite":
                    assert (probabilities.argmax(axis=1) == expected[:batch]).all()
        assert "tensorflow" not in sys.modules, "LiteRT pulled in TensorFlow"
        assert "keras" not in sys.modules
        print("ok")
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().endswith("ok")

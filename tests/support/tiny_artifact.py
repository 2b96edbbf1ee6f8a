"""A real, tiny model artifact for tests: ``publish_tiny_artifact(dest) -> version``.

It publishes through the real code path (:func:`model_build.release.publish.publish_run`) a version
whose ``model.tflite`` / ``model_int8.tflite`` take uint8 ``[N, 224, 224, 3]`` (batch resizable)
and return float32 probabilities over ``labels``, exactly like a trained model's, so worker tests
can run real LiteRT inference in milliseconds::

    from tests.support.tiny_artifact import publish_tiny_artifact

    @pytest.fixture(scope="session")
    def model_dir(tmp_path_factory):
        root = tmp_path_factory.mktemp("models")
        publish_tiny_artifact(root)            # root/latest.json -> root/<version>/...
        return root

``dest`` may also be ``s3://bucket/prefix`` (pass ``s3_client=`` for a moto client).

The Keras model (Rescaling inside → 8× average pool → two small convolutions → softmax, about
5,500 parameters, fixed seed) is built and converted **in a subprocess**, so the calling test
process never imports TensorFlow, and the converted bytes are cached under
``.cache/tiny-model/<key>/`` (key = this file's source, the number of labels and the TensorFlow
version); later calls, in any process, only copy files and publish (well under a second). The
first build takes about 10 s. Its predictions are deterministic but meaningless; the manifest's
calibration (``temperature``, ``review_threshold``) is whatever the caller passes.

``unfamiliarity=True`` publishes the files a real MobileNetV2 version has: the model is built as
the trainer builds a backbone model (scaling layer → a sub-model named like the MobileNetV2
backbone → a sub-model named ``head``) and exported, float32 and int8, with the pooled backbone
features as a second output, and the version carries an ``unfamiliarity.npz`` whose width matches
those features (label means at zero, identity precision: a valid file, not a fitted one).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import numpy as np

from contracts.unfamiliarity import METHOD, UNFAMILIARITY_FILE, UnfamiliarityScorer
from model_build.release.export import convert_float32, convert_int8
from model_build.release.publish import publish_run
from sample_data.photos import LABELS

REPOSITORY_ROOT: Final[Path] = Path(__file__).resolve().parents[2]
CACHE_DIR: Final[Path] = REPOSITORY_ROOT / ".cache" / "tiny-model"
MODEL_FILES: Final[tuple[str, ...]] = ("model.tflite", "model_int8.tflite", "model.keras")
IMAGE_SIZE: Final[int] = 224

FEATURE_WIDTH: Final[int] = 32  # the pooled features of the MobileNetV2-shaped model

_memory_cache: dict[tuple[int, bool], dict[str, bytes]] = {}


def _cache_key(label_count: int, features: bool) -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    try:
        tensorflow_version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        tensorflow_version = "none"
    digest.update(f"{label_count}:{features}:{tensorflow_version}".encode())
    return digest.hexdigest()[:16]


def tiny_model_files(label_count: int = len(LABELS), features: bool = False) -> dict[str, bytes]:
    """``{file name: bytes}`` of the tiny model, built once (in a subprocess) and cached.

    ``features=True``: the MobileNetV2-shaped model, exported with its pooled features output.
    """
    if (label_count, features) in _memory_cache:
        return _memory_cache[(label_count, features)]
    folder = CACHE_DIR / _cache_key(label_count, features)
    if not all((folder / name).is_file() for name in MODEL_FILES):
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
        environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.support.tiny_artifact",
                str(staging),
                str(label_count),
                "features" if features else "plain",
            ],
            cwd=REPOSITORY_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"building the tiny model failed:\n{completed.stderr[-4000:]}")
        try:
            os.rename(staging, folder)
        except OSError:  # another process (pytest-xdist worker) finished first: use its copy
            for path in staging.iterdir():
                path.unlink()
            staging.rmdir()
    files = {name: (folder / name).read_bytes() for name in MODEL_FILES}
    _memory_cache[(label_count, features)] = files
    return files


def publish_tiny_artifact(
    dest: str | Path,
    *,
    labels: Sequence[str] = LABELS,
    version: str | None = None,
    review_threshold: float = 0.5,
    temperature: float = 1.0,
    target_precision: float = 0.98,
    coverage: float = 0.5,
    include_int8: bool = True,
    unfamiliarity: bool = False,
    s3_client: Any = None,
) -> str:
    """Publish a tiny real model to ``dest`` (folder or ``s3://``) and return its version.

    Without ``version`` a unique one is made (UTC time + random hex), so repeated calls into the
    same ``dest`` never collide; ``latest.json`` points at the new version afterwards.
    """
    if version is None:
        version = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="tiny-run-") as directory:
        run_dir = write_tiny_run(
            Path(directory),
            labels=labels,
            review_threshold=review_threshold,
            temperature=temperature,
            target_precision=target_precision,
            coverage=coverage,
            include_int8=include_int8,
            unfamiliarity=unfamiliarity,
        )
        return publish_run(run_dir, str(dest), version=version, s3_client=s3_client, log=_quiet)


def write_tiny_run(
    run_dir: Path,
    *,
    labels: Sequence[str] = LABELS,
    review_threshold: float = 0.5,
    temperature: float = 1.0,
    target_precision: float = 0.98,
    coverage: float = 0.5,
    include_int8: bool = True,
    unfamiliarity: bool = False,
) -> Path:
    """Write a finished run folder (exported, evaluated) that ``publish_run`` accepts as is."""
    labels = list(labels)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, payload in tiny_model_files(len(labels), features=unfamiliarity).items():
        if name != "model_int8.tflite" or include_int8:
            (run_dir / name).write_bytes(payload)
    (run_dir / "labels.json").write_text(json.dumps(labels))
    metrics = {
        "accuracy": None,
        "note": "tiny test model from tests/support/tiny_artifact.py; not trained",
        "calibration": {
            "temperature": temperature,
            "review_threshold": review_threshold,
            "target_precision": target_precision,
            "coverage": coverage,
        },
    }
    if unfamiliarity:
        scorer = UnfamiliarityScorer(
            means=np.zeros((len(labels), FEATURE_WIDTH), np.float32),
            precision=np.eye(FEATURE_WIDTH, dtype=np.float32),
            threshold=1e9,  # nothing is unfamiliar: the file is valid, not fitted
        )
        scorer.save(run_dir / UNFAMILIARITY_FILE)
        metrics["unfamiliarity"] = {
            "method": METHOD,
            "file": UNFAMILIARITY_FILE,
            "threshold": scorer.threshold,
        }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "export.json").write_text(
        json.dumps({"int8_published": include_int8, "int8_agreement": None})
    )
    (run_dir / "config.json").write_text(json.dumps({"model": "tiny-test", "labels": labels}))
    (run_dir / "report").mkdir(exist_ok=True)
    (run_dir / "report" / "index.html").write_text("<html><body>tiny test model</body></html>")
    return run_dir


def _quiet(_message: str) -> None:
    return None


def _build(out_dir: Path, label_count: int, features: bool) -> None:
    """Build, convert and save the tiny model (runs in the subprocess; imports TensorFlow)."""
    import keras  # noqa: PLC0415 — TensorFlow takes seconds to load; only the subprocess that builds pays for it
    from keras import layers  # noqa: PLC0415 — TensorFlow takes seconds to load; only the subprocess that builds pays for it

    from model_build.training.backbones import BACKBONES  # noqa: PLC0415 — TensorFlow takes seconds to load; only the subprocess that builds pays for it
    from model_build.training.model import SCALING_NAME  # noqa: PLC0415 — TensorFlow takes seconds to load; only the subprocess that builds pays for it

    keras.utils.set_random_seed(0)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), dtype="uint8", name="image")
    if features:
        # Shaped as the trainer's backbone models are, so export adds the pooled features output.
        backbone_in = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
        maps = layers.AveragePooling2D(8)(backbone_in)
        maps = layers.Conv2D(16, 3, strides=2, activation="relu")(maps)
        maps = layers.Conv2D(FEATURE_WIDTH, 3, activation="relu")(maps)
        backbone = keras.Model(backbone_in, maps, name=BACKBONES["mobilenet_v2"].layer_name)
        head_in = keras.Input(tuple(backbone.outputs[0].shape[1:]))
        pooled = layers.GlobalAveragePooling2D()(head_in)
        head = keras.Model(
            head_in, layers.Dense(label_count, activation="softmax")(pooled), name="head"
        )
        scaled = layers.Rescaling(1 / 127.5, offset=-1.0, name=SCALING_NAME)(inputs)
        model = keras.Model(inputs, head(backbone(scaled)), name="tiny_mobilenet_shaped_model")
    else:
        x = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
        x = layers.AveragePooling2D(8)(x)  # 28×28: the model stays tiny and fast
        x = layers.Conv2D(16, 3, strides=2, activation="relu")(x)
        x = layers.Conv2D(32, 3, activation="relu")(x)
        x = layers.GlobalAveragePooling2D()(x)
        outputs = layers.Dense(label_count, activation="softmax")(x)
        model = keras.Model(inputs, outputs, name="tiny_test_model")
    representative = np.random.default_rng(0).integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.tflite").write_bytes(convert_float32(model, features=features))
    (out_dir / "model_int8.tflite").write_bytes(
        convert_int8(model, representative, features=features)
    )
    model.save(out_dir / "model.keras")


if __name__ == "__main__":
    _build(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "features")

"""contracts.artifact.load_artifact on a folder: latest or pinned, every sha256 checked."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.artifact import (
    LATEST_FILE,
    MODEL_FILE,
    RUNTIME_FILES,
    UNFAMILIARITY_FILE,
    ArtifactError,
    Manifest,
    load_artifact,
)
from sample_data.photos import LABELS
from tests.support.tiny_artifact import REPOSITORY_ROOT, publish_tiny_artifact


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    root = tmp_path_factory.mktemp("models")
    first = publish_tiny_artifact(root, review_threshold=0.4)
    second = publish_tiny_artifact(root, review_threshold=0.7, temperature=1.3)
    return root, first, second


@pytest.fixture
def copy_of(published: tuple[Path, str, str], tmp_path: Path) -> tuple[Path, str]:
    root, _, second = published
    target = tmp_path / "models"
    shutil.copytree(root, target)
    return target, second


def test_latest_is_loaded_with_its_manifest(published: tuple[Path, str, str]) -> None:
    root, _, second = published
    artifact = load_artifact(root)
    assert artifact.version == second
    assert isinstance(artifact.manifest, Manifest)
    assert artifact.labels == list(LABELS)
    assert artifact.calibration.review_threshold == pytest.approx(0.7)
    assert artifact.calibration.temperature == pytest.approx(1.3)
    assert artifact.model_path == root / second / MODEL_FILE
    assert artifact.int8_model_path is not None
    assert artifact.manifest.input.dtype == "uint8"
    assert artifact.manifest.input.shape == [None, 224, 224, 3]
    assert "report/index.html" in artifact.files


def test_pinned_version_wins_over_latest(published: tuple[Path, str, str]) -> None:
    root, first, _ = published
    artifact = load_artifact(str(root), version=first)
    assert artifact.version == first
    assert artifact.calibration.review_threshold == pytest.approx(0.4)


def test_only_runtime_files(published: tuple[Path, str, str]) -> None:
    root, _, _ = published
    artifact = load_artifact(root, only=RUNTIME_FILES)
    # The tiny model ships no unfamiliarity score (optional, like the int8 model).
    assert set(artifact.files) == set(RUNTIME_FILES) - {UNFAMILIARITY_FILE}


def test_loader_runs_without_tensorflow(published: tuple[Path, str, str]) -> None:
    # The worker reuses the loader in an image that has no TensorFlow.
    root, _, second = published
    script = (
        "import sys; from contracts.artifact import load_artifact; "
        f"assert load_artifact({str(root)!r}).version == {second!r}; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; print('ok')"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=REPOSITORY_ROOT, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "ok"


def test_sha256_mismatch_is_a_clear_error(copy_of: tuple[Path, str]) -> None:
    root, version = copy_of
    model = root / version / MODEL_FILE
    payload = bytearray(model.read_bytes())
    payload[len(payload) // 2] ^= 0xFF  # same size, different content
    model.write_bytes(bytes(payload))
    with pytest.raises(ArtifactError, match=r"sha256 mismatch for model\.tflite"):
        load_artifact(root)


def test_truncated_file_is_reported(copy_of: tuple[Path, str]) -> None:
    root, version = copy_of
    model = root / version / MODEL_FILE
    model.write_bytes(model.read_bytes()[:100])
    with pytest.raises(ArtifactError, match=r"model\.tflite has 100 bytes"):
        load_artifact(root)


def test_missing_file_is_reported(copy_of: tuple[Path, str]) -> None:
    root, version = copy_of
    (root / version / "model_int8.tflite").unlink()
    with pytest.raises(ArtifactError, match=r"model_int8\.tflite .* missing"):
        load_artifact(root)


def test_labels_must_match_the_manifest(copy_of: tuple[Path, str]) -> None:
    root, version = copy_of
    manifest_path = root / version / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["labels"] = list(reversed(manifest["labels"]))
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="labels"):
        load_artifact(root)


def test_nothing_published(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="nothing has been published"):
        load_artifact(tmp_path)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "absent")


@pytest.mark.parametrize("version", ["../../etc", "latest", "", "20261124T014800Z-XYZ"])
def test_latest_pointing_outside_is_refused(copy_of: tuple[Path, str], version: str) -> None:
    root, _ = copy_of
    (root / LATEST_FILE).write_text(json.dumps({"version": version}))
    with pytest.raises(ArtifactError, match="invalid model version"):
        load_artifact(root)


def test_malformed_latest_and_manifest(copy_of: tuple[Path, str]) -> None:
    root, version = copy_of
    (root / version / "manifest.json").write_text('{"version": 1}')
    with pytest.raises(ArtifactError, match="not a valid manifest"):
        load_artifact(root)
    (root / LATEST_FILE).write_text("not json")
    with pytest.raises(ArtifactError, match=r"latest\.json"):
        load_artifact(root)


def test_unknown_pinned_version(published: tuple[Path, str, str]) -> None:
    root, _, _ = published
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(root, version="20000101T000000Z-abcdef12")


def test_unsupported_scheme() -> None:
    with pytest.raises(ArtifactError, match="unsupported"):
        load_artifact("https://example.com/models")

"""`python -m local_stack` end to end: a moto server on 127.0.0.1, the template's resources,
uploads announced by S3 on SQS, the real handler, the catalogue printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from local_stack.stack import write_sample_images
from sample_data.photos import LABELS
from tests.conftest import REPOSITORY_ROOT
from tests.support.tiny_artifact import publish_tiny_artifact

pytestmark = pytest.mark.e2e


def run_local(*arguments: str, cwd: Path = REPOSITORY_ROOT) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY_ROOT)}
    environment.pop("AWS_ENDPOINT_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "local_stack", *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    publish_tiny_artifact(root, review_threshold=0.01)
    return root


def test_images_folder_to_json_catalogue(model_dir: Path, tmp_path: Path) -> None:
    images = write_sample_images(tmp_path / "images", per_label=1)
    completed = run_local("--images", str(images), "--model", str(model_dir), "--json")
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = [json.loads(line) for line in completed.stdout.splitlines()]
    by_key = {line["key"]: line for line in lines}
    uploaded = {
        "uploads/" + path.relative_to(images).as_posix()
        for path in images.rglob("*")
        if path.is_file()
    }
    assert set(by_key) == uploaded
    version = json.loads((model_dir / "latest.json").read_text())["version"]
    for key, line in by_key.items():
        assert {
            "bucket",
            "key",
            "status",
            "category",
            "confidence",
            "top3",
            "model_version",
        } <= set(line)
        assert line["bucket"] == "momee-uploads-local"
        assert line["model_version"] == version
        if key.startswith("uploads/hostile/"):
            assert line["status"] == "REJECTED"
            assert line["category"] is None
        else:
            assert line["status"] == "CATALOGUED"
            assert line["category"] in LABELS
            assert len(line["top3"]) == 3
    assert by_key["uploads/hostile/not-a-photo.jpg"]["reason"] == "not_an_image"
    assert by_key["uploads/hostile/truncated.jpg"]["reason"] == "corrupt"
    assert by_key["uploads/hostile/empty.jpg"]["reason"] == "empty"
    # A key with a space, a plus and an accent came through S3's URL encoding intact.
    assert f"uploads/{LABELS[0]}/photo 0+{LABELS[0]} é.jpg" in by_key


@pytest.mark.heavy
def test_default_run_prints_a_table(model_dir: Path) -> None:
    completed = run_local("--model", str(model_dir))
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    assert lines[0].split()[:4] == ["STATUS", "CATEGORY", "CONF", "REASON"]
    summary = lines[-1]
    uploaded = 2 * len(LABELS) + 3
    assert summary.startswith(f"{uploaded} uploaded, {uploaded} catalogued items")
    assert "0 in the DLQ" in summary


def test_without_a_model_says_how_to_publish_one(tmp_path: Path) -> None:
    completed = run_local(cwd=tmp_path)
    assert completed.returncode == 2
    assert "make sample-model" in completed.stderr
    assert "python -m model_build.train" in completed.stderr

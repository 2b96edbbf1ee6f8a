"""Publishing a run: folder and moto S3, never overwritten, atomic when interrupted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from contracts.artifact import LATEST_FILE, ArtifactError, load_artifact
from model_build.release import publish
from model_build.release.publish import PublishError, publish_run
from tests.support.tiny_artifact import REPOSITORY_ROOT, write_tiny_run

pytestmark = pytest.mark.functional
BUCKET = "momee-models"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_tiny_run(tmp_path / "run", review_threshold=0.6, temperature=1.2)


@pytest.fixture
def s3() -> Any:
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        yield client


def _quiet(_message: str) -> None:
    return None


def test_publish_to_folder_writes_contract_4(run_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "artifacts"
    version = publish_run(run_dir, str(dest), log=_quiet)
    assert json.loads((dest / LATEST_FILE).read_text()) == {"version": version}
    names = {p.relative_to(dest / version).as_posix() for p in (dest / version).rglob("*")}
    assert {
        "model.tflite",
        "model_int8.tflite",
        "model.keras",
        "labels.json",
        "manifest.json",
        "report/index.html",
    } <= names
    manifest = json.loads((dest / version / "manifest.json").read_text())
    assert manifest["version"] == version
    assert manifest["calibration"]["review_threshold"] == 0.6
    assert set(manifest["files"]["model.tflite"]) == {"sha256", "bytes"}
    assert "numpy" in manifest["library_versions"]
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no staging left behind
    artifact = load_artifact(dest)
    assert artifact.version == version


def test_version_is_time_and_content_hash(run_dir: Path, tmp_path: Path) -> None:
    version = publish_run(run_dir, str(tmp_path / "a"), log=_quiet)
    stamp, digest = version.split("-")
    assert len(stamp) == len("20261124T014800Z")
    assert stamp.endswith("Z")
    assert len(digest) == 8
    (run_dir / "labels.json").write_text(
        json.dumps(list(reversed(json.loads((run_dir / "labels.json").read_text()))))
    )
    assert publish_run(run_dir, str(tmp_path / "b"), log=_quiet).split("-")[1] != digest


def test_int8_left_out_when_export_rejected_it(tmp_path: Path) -> None:
    run_dir = write_tiny_run(tmp_path / "run")
    (run_dir / "export.json").write_text(json.dumps({"int8_published": False}))
    version = publish_run(run_dir, str(tmp_path / "dest"), log=_quiet)
    assert load_artifact(tmp_path / "dest").int8_model_path is None
    assert not (tmp_path / "dest" / version / "model_int8.tflite").exists()


def test_existing_version_is_never_overwritten(run_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "artifacts"
    version = publish_run(run_dir, str(dest), log=_quiet)
    before = (dest / version / "manifest.json").read_bytes()
    with pytest.raises(PublishError, match="already exists"):
        publish_run(run_dir, str(dest), version=version, log=_quiet)
    assert (dest / version / "manifest.json").read_bytes() == before


def test_cli_refusal_is_one_line_and_exit_2(run_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "artifacts"
    command = [sys.executable, "-m", "model_build.publish", str(run_dir), "--to", str(dest)]
    first = subprocess.run(command, cwd=REPOSITORY_ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    version = first.stdout.strip().splitlines()[-1]
    again = subprocess.run(
        [*command, "--version", version], cwd=REPOSITORY_ROOT, capture_output=True, text=True
    )
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert "Traceback" not in again.stderr


def test_crash_mid_publish_leaves_latest_on_a_complete_version(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "artifacts"
    good = publish_run(run_dir, str(dest), log=_quiet)
    calls = {"n": 0}
    real_copy = shutil.copyfile

    def copy_then_die(source: Any, target: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated crash mid-publish")
        return real_copy(source, target)

    monkeypatch.setattr(publish.shutil, "copyfile", copy_then_die)
    with pytest.raises(KeyboardInterrupt):
        publish_run(run_dir, str(dest), version="20990101T000000Z-0000beef", log=_quiet)
    assert json.loads((dest / LATEST_FILE).read_text())["version"] == good
    assert load_artifact(dest).version == good
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == [
        good,
        LATEST_FILE,
    ]


def test_publish_to_moto_s3_and_load(run_dir: Path, tmp_path: Path, s3: Any) -> None:
    dest = f"s3://{BUCKET}/models/cataloguer"
    version = publish_run(run_dir, dest, s3_client=s3, log=_quiet)
    latest = s3.get_object(Bucket=BUCKET, Key="models/cataloguer/latest.json")["Body"].read()
    assert json.loads(latest) == {"version": version}
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert f"models/cataloguer/{version}/model.tflite" in keys
    assert f"models/cataloguer/{version}/report/index.html" in keys

    cache = tmp_path / "cache"
    artifact = load_artifact(dest, cache_dir=cache, s3_client=s3)
    assert artifact.version == version
    assert artifact.model_path.is_file()
    assert cache in artifact.model_path.parents
    assert artifact.calibration.temperature == pytest.approx(1.2)

    # A damaged cached file is fetched again; a damaged object in S3 is an error.
    artifact.model_path.write_bytes(b"junk")
    assert load_artifact(dest, cache_dir=cache, s3_client=s3).model_path.read_bytes() != b"junk"
    s3.put_object(Bucket=BUCKET, Key=f"models/cataloguer/{version}/model.tflite", Body=b"junk")
    with pytest.raises(ArtifactError, match=r"model\.tflite"):
        load_artifact(dest, cache_dir=tmp_path / "fresh", s3_client=s3)


def test_s3_existing_version_refused(run_dir: Path, s3: Any) -> None:
    dest = f"s3://{BUCKET}/models"
    version = publish_run(run_dir, dest, s3_client=s3, log=_quiet)
    with pytest.raises(PublishError, match="already exists"):
        publish_run(run_dir, dest, version=version, s3_client=s3, log=_quiet)


class _DiesAfter:
    """An S3 client that stops (as a killed process would) after ``uploads`` uploads."""

    def __init__(self, client: Any, uploads: int) -> None:
        self._client = client
        self._left = uploads

    def upload_file(self, *args: Any, **kwargs: Any) -> None:
        if self._left == 0:
            raise KeyboardInterrupt("simulated crash mid-upload")
        self._left -= 1
        self._client.upload_file(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_s3_crash_mid_publish_keeps_latest_complete(run_dir: Path, tmp_path: Path, s3: Any) -> None:
    dest = f"s3://{BUCKET}/models"
    good = publish_run(run_dir, dest, s3_client=s3, log=_quiet)
    with pytest.raises(KeyboardInterrupt):
        publish_run(
            run_dir,
            dest,
            version="20990101T000000Z-0000beef",
            s3_client=_DiesAfter(s3, uploads=2),
            log=_quiet,
        )
    artifact = load_artifact(dest, cache_dir=tmp_path / "cache", s3_client=s3)
    assert artifact.version == good
    # The partial version exists in the bucket, but nothing points at it.
    partial = {o["Key"].split("/")[1] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert partial - {good, LATEST_FILE} == {"20990101T000000Z-0000beef"}

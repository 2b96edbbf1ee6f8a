"""Issue 6, item 4: killing publish at any step leaves ``latest.json`` on a complete version.

Publishing runs in a child process that SIGKILLs itself at its N-th write — a file copy, a write,
an fsync, a rename or replace for a folder; a PutObject for S3 (against a moto server, whose state
outlives the child) — for every N until a publish completes. After each kill the loader, which
checks every sha256, must find a complete version through ``latest.json``: the previous one, or
the new one once ``latest.json`` was replaced. Nothing of the production code is patched in the
test process; the child wraps the standard library and botocore calls it makes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from contracts.artifact import load_artifact
from local_stack.stack import moto_server
from model_build.release.publish import publish_run
from tests.support.tiny_artifact import REPOSITORY_ROOT, write_tiny_run

pytestmark = pytest.mark.functional

NEW_VERSION = "20991231T000000Z-0000cafe"

CHILD = r"""
import os, pathlib, shutil, signal, sys

from model_build.release.publish import publish_run

run_dir, dest, version, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
calls = 0


def step() -> None:
    global calls
    calls += 1
    if calls == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


def killing(function):
    def wrapper(*arguments, **keywords):
        step()
        return function(*arguments, **keywords)

    return wrapper


if dest.startswith("s3://"):
    import boto3

    boto3.setup_default_session()
    boto3.DEFAULT_SESSION._session.register(
        "before-send.s3.PutObject", lambda **_: step()
    )
else:
    shutil.copyfile = killing(shutil.copyfile)
    pathlib.Path.write_bytes = killing(pathlib.Path.write_bytes)
    os.fsync = killing(os.fsync)
    os.rename = killing(os.rename)
    os.replace = killing(os.replace)

publish_run(pathlib.Path(run_dir), dest, version=version, log=lambda _: None)
print("completed")
"""


def _publish_killed_at(run_dir: Path, dest: str, kill_at: int, environment: dict) -> bool:
    """Run a publish that dies at its ``kill_at``-th write; True when it completed instead."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(run_dir), dest, NEW_VERSION, str(kill_at)],
        cwd=REPOSITORY_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode == 0:
        assert "completed" in result.stdout
        return True
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    return False


def _kill_at_every_step(run_dir, make_dest, load, environment) -> int:
    """Returns how many distinct kill points were tried before a publish completed."""
    for kill_at in range(1, 100):
        dest, good = make_dest(kill_at)
        completed = _publish_killed_at(run_dir, dest, kill_at, environment)
        artifact = load(dest)  # verifies every sha256 of the version latest.json names
        if completed:
            assert artifact.version == NEW_VERSION
            return kill_at - 1
        assert artifact.version in (good, NEW_VERSION), kill_at
    raise AssertionError("publish never completed")


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_tiny_run(tmp_path / "run", review_threshold=0.6, temperature=1.2)


def test_killing_a_folder_publish_at_each_step(run_dir, tmp_path):
    def make_dest(kill_at: int) -> tuple[str, str]:
        dest = tmp_path / f"artifacts-{kill_at}"
        return str(dest), publish_run(run_dir, str(dest), log=lambda _: None)

    def load(dest: str):
        return load_artifact(dest)

    steps = _kill_at_every_step(run_dir, make_dest, load, dict(os.environ))
    # Copies of every file, the manifest write, fsyncs, the rename and latest.json's replace.
    assert steps >= 8


def test_killing_an_s3_publish_at_each_step(run_dir, tmp_path):
    with moto_server() as endpoint_url:
        s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name="eu-west-1")
        environment = {**os.environ, "AWS_ENDPOINT_URL": endpoint_url}

        def make_dest(kill_at: int) -> tuple[str, str]:
            bucket = f"models-{kill_at}"
            s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
            )
            dest = f"s3://{bucket}/momee"
            return dest, publish_run(run_dir, dest, s3_client=s3, log=lambda _: None)

        def load(dest: str):
            cache = tmp_path / "cache" / dest.removeprefix("s3://").replace("/", "-")
            return load_artifact(dest, cache_dir=cache, s3_client=s3)

        steps = _kill_at_every_step(run_dir, make_dest, load, environment)
    # Every file, then the manifest, then latest.json.
    assert steps >= 4

"""The documented two-terminal flow: ``python -m local_stack --serve`` keeps the stack up and writes
its state file; ``python -m review`` with no arguments finds it and serves the queue; stopping the
stack removes the state file."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from local_stack.state import read_state
from tests.conftest import REPOSITORY_ROOT
from tests.support.tiny_artifact import publish_tiny_artifact

pytestmark = pytest.mark.e2e


def start(module: str, *arguments: str, environment: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-u", "-m", module, *arguments],
        cwd=REPOSITORY_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.heavy
def test_serve_then_review_without_arguments(tmp_path: Path) -> None:
    models = tmp_path / "models"
    publish_tiny_artifact(models, review_threshold=0.99)  # every decodable photo needs review
    state_file = tmp_path / "local-stack.json"
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPOSITORY_ROOT),
        "MOMEE_LOCAL_STACK_STATE": str(state_file),
    }
    environment.pop("AWS_ENDPOINT_URL", None)
    stack = start("local_stack", "--serve", "--model", str(models), environment=environment)
    review = None
    try:
        deadline = time.monotonic() + 240
        while read_state(state_file) is None:
            assert stack.poll() is None, "the local stack stopped"
            assert time.monotonic() < deadline, "no state file"
            time.sleep(0.2)
        state = read_state(state_file)
        assert state is not None
        assert state.pid == stack.pid

        review = start("review", "--port", "0", "--reviewer", "e2e", environment=environment)
        assert review.stdout is not None
        banner = review.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", banner)
        assert url, banner
        assert state.table in banner
        with urllib.request.urlopen(url.group(0) + "api/queue", timeout=10) as response:
            queue = json.load(response)
        assert queue["remaining"] > 0
        assert queue["reviewer"] == "e2e"
        assert all(item["key"].startswith("uploads/") for item in queue["items"])
        # The page's photo is the console's own JPEG preview of a photo it holds.
        with urllib.request.urlopen(url.group(0) + queue["items"][0]["photo"][1:], timeout=30) as r:
            assert (r.headers["Content-Type"], r.read(2)) == ("image/jpeg", b"\xff\xd8")
    finally:
        if review is not None:
            stop(review)
        stop(stack)
    assert not state_file.exists()

"""Shared fixtures. Test tiers: tests/unit (no network, fast), tests/functional (moto, generated
images), tests/e2e (the local stack: a moto server on 127.0.0.1)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
EVENTS_DIR = REPOSITORY_ROOT / "events"

# No test may reach AWS: fake credentials and a region are set before boto3 is first used.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_SESSION_TOKEN", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The heavy tests first, the rest in their usual order.

    With several test processes (``make test``: ``-n 3 --dist load --maxschedchunk 2``) each
    process takes the next tests when it is free, so starting with the longest ones and ending
    with the short ones lets all processes finish together (longest-first scheduling) instead
    of one heavy test, started last, holding the run while the other cores idle.
    """
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


def load_event(name: str) -> dict:
    """A real event payload from events/, as Lambda would deliver it."""
    return json.loads((EVENTS_DIR / name).read_text())


def _resident_mb() -> int:
    """This test process's resident memory in MiB (``/proc/self/statm``, second field)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20


@pytest.fixture(autouse=True)
def function_memory_on_top_of_the_test_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process tests get the function's 1024 MB on top of what this pytest process holds.

    The worker budgets decodes from the memory its own process holds (handler/decode_pool.py),
    and a pytest worker may already hold TensorFlow from an earlier test (1 GB and more), which a
    Lambda process never does. The real 1024 MB limit is tested where the process is as clean as
    Lambda's: the cgroup-capped harness (tests/support/lambda_container.py, capped_process.py),
    which sets the variable itself. A test may still set its own value after this fixture.
    """
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", str(_resident_mb() + 1024))


@pytest.fixture(autouse=True)
def environment_of_each_test_restored() -> Iterator[None]:
    """Whatever a test (or the code it calls) sets in ``os.environ`` leaves with it.

    The next test in the same pytest process is the second actor: when a local stack pointed
    boto3 at its moto server and the variable outlived the server, a later test's boto3
    clients (even under ``mock_aws``) went to the closed port.
    """
    with mock.patch.dict(os.environ):
        yield


@pytest.fixture
def repository_root() -> Path:
    return REPOSITORY_ROOT

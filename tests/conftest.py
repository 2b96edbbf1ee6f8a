"""Shared fixtures. Test tiers: tests/unit (no network, fast), tests/functional (moto, generated
images), tests/e2e (the local stack: a moto server on 127.0.0.1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
EVENTS_DIR = REPOSITORY_ROOT / "events"

# No test may reach AWS: fake credentials and a region are set before boto3 is first used.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_SESSION_TOKEN", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_event(name: str) -> dict:
    """A real event payload from events/, as Lambda would deliver it."""
    return json.loads((EVENTS_DIR / name).read_text())


@pytest.fixture
def repository_root() -> Path:
    return REPOSITORY_ROOT

"""Issue 6, item 1: nothing is lost under load, faults, duplicates and out-of-order delivery.

The scenario and its end-state checks are in :mod:`bench.load_with_faults`; CI runs a small
variant, the full 2,000-photo run is marked slow (``make test-all`` or
``python -m bench.load_with_faults``).
"""

from __future__ import annotations

import os

import pytest

from bench.load_with_faults import PEAK_RSS_LIMIT_MB, LoadConfig, run_load
from tests.support.tiny_artifact import publish_tiny_artifact

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def model_uri(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("load-model")
    publish_tiny_artifact(root, review_threshold=0.08)
    return str(root)


def _assert_nothing_lost(report, config: LoadConfig) -> None:
    assert report.problems == []
    assert report.lost == 0
    assert report.wrong_version == 0
    assert report.items_for_deleted == 0
    assert report.not_final == 0
    # Every surviving object has exactly one item, except the ones made to fail on purpose,
    # whose messages (and only those) are in the DLQ.
    assert report.items == report.surviving_objects - len(report.permanent_keys)
    assert report.dead_letter_keys == report.permanent_keys
    assert report.catalogued + report.needs_review + report.rejected == report.items
    # The faults really happened, so the run proves something.
    assert {"throttling", "server_error", "timeout", "permanent"} <= set(report.injected)
    assert report.retried > 0
    assert report.duplicates_sent > 0
    assert report.out_of_order_sent == report.overwritten > 0
    assert report.deleted > 0
    assert report.rejected > 0  # the hostile files
    assert report.peak_rss_mb < PEAK_RSS_LIMIT_MB
    assert report.uploaded == config.images


@pytest.mark.heavy
def test_small_load_with_faults_loses_nothing(model_uri):
    # GIVEN 150 uploads (some hostile), 10% transient AWS faults, duplicates, overwrites, deletes
    config = LoadConfig(images=150, workers=2, permanent_failures=3, seed=1, max_seconds=300)
    # WHEN two worker processes drain the queue through the real handler
    environment = dict(os.environ)
    report = run_load(config, model_uri, log=lambda _: None)
    # THEN every object has exactly one final item and the DLQ holds only the planned failures
    _assert_nothing_lost(report, config)
    # and the stopped moto server's endpoint did not stay in this process's environment, where
    # the next caller's boto3 clients would find it
    assert dict(os.environ) == environment


@pytest.mark.slow
def test_full_load_with_faults_loses_nothing(model_uri):
    config = LoadConfig(images=2000, workers=4, seed=2)
    report = run_load(config, model_uri, log=print)
    print(report.summary())
    _assert_nothing_lost(report, config)

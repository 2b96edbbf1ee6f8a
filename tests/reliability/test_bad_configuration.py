"""Issue 6, item 5: a badly configured worker fails at cold start with one clear message, and
no message is deleted: nothing is written with a broken model or to the wrong place. (Each failed
receive counts towards the DLQ: tests/functional/test_handler_worker.py follows them there and
back.)"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from moto import mock_aws

from contracts.catalogue_table import scan_items
from handler import app
from handler.settings import ConfigurationError
from local_stack.resources import create_local_resources
from local_stack.stack import LocalContext, drain_queue, queue_depth
from sample_data.photos import draw_sample_image
from tests.support.tiny_artifact import publish_tiny_artifact

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("good-model")
    return root, publish_tiny_artifact(root)


def _broken_copy(published: tuple[Path, str], tmp_path: Path) -> tuple[Path, Path]:
    root, version = published
    copy = tmp_path / "model"
    shutil.copytree(root, copy)
    return copy, copy / version


def _without_labels(published, tmp_path, monkeypatch) -> str:
    root, directory = _broken_copy(published, tmp_path)
    manifest = json.loads((directory / "manifest.json").read_text())
    del manifest["labels"]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("MODEL_URI", str(root))
    return "labels"


def _unreadable_model(published, tmp_path, monkeypatch) -> str:
    root, directory = _broken_copy(published, tmp_path)
    (directory / "model.tflite").chmod(0)
    # Running as root ignores file modes; damaging the bytes is the portable way to be unreadable.
    (directory / "model.tflite").chmod(0o644)
    (directory / "model.tflite").write_bytes(b"\0" * 64)
    monkeypatch.setenv("MODEL_URI", str(root))
    return "model.tflite"


def _wrong_model_uri(published, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("MODEL_URI", str(tmp_path / "no-model-here"))
    return "MODEL_URI="


def _missing_table(published, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("CATALOGUE_TABLE", "no-such-table")
    return "CATALOGUE_TABLE=no-such-table"


BREAKAGES: dict[str, Callable[..., str]] = {
    "missing table": _missing_table,
    "wrong model URI": _wrong_model_uri,
    "missing labels in the manifest": _without_labels,
    "unreadable model file": _unreadable_model,
}


@pytest.fixture
def stack(published, monkeypatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        clients = {name: boto3.client(name) for name in ("s3", "sqs", "dynamodb")}
        resources = create_local_resources(
            s3_client=clients["s3"], sqs_client=clients["sqs"], dynamodb_client=clients["dynamodb"]
        )
        monkeypatch.setenv("CATALOGUE_TABLE", resources.table_name)
        monkeypatch.setenv("MODEL_URI", str(published[0]))
        app.reset_worker()
        yield {**clients, "resources": resources}
        app.reset_worker()


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_bad_configuration_fails_at_cold_start_and_keeps_the_messages(
    breakage, stack, published, tmp_path, monkeypatch
):
    # GIVEN photos waiting in the queue
    resources = stack["resources"]
    for index in range(3):
        buffer = io.BytesIO()
        draw_sample_image("stroller", np.random.default_rng(index), 128).save(buffer, "JPEG")
        stack["s3"].put_object(
            Bucket=resources.bucket, Key=f"uploads/photo {index}.jpg", Body=buffer.getvalue()
        )
    waiting = queue_depth(stack["sqs"], resources.queue_url)
    assert waiting >= 3
    # (Messages a failed invocation received come back at once, instead of after 12 minutes.)
    stack["sqs"].set_queue_attributes(
        QueueUrl=resources.queue_url, Attributes={"VisibilityTimeout": "0"}
    )
    # AND a worker configured wrongly
    named = BREAKAGES[breakage](published, tmp_path, monkeypatch)

    # WHEN Lambda's poller hands it a batch
    def invoke(event):
        return app.lambda_handler(event, LocalContext())

    with pytest.raises(ConfigurationError) as failure:
        drain_queue(stack["sqs"], resources.queue_url, invoke, max_seconds=60)

    # THEN the error is one line that names what to fix
    message = str(failure.value)
    assert "\n" not in message
    assert named in message
    # AND nothing was catalogued and no message was deleted
    assert scan_items(stack["dynamodb"], resources.table_name) == []
    assert queue_depth(stack["sqs"], resources.queue_url) == waiting

    # AND once the configuration is fixed, the same messages are catalogued
    monkeypatch.setenv("CATALOGUE_TABLE", resources.table_name)
    monkeypatch.setenv("MODEL_URI", str(published[0]))
    app.reset_worker()
    drain_queue(stack["sqs"], resources.queue_url, invoke, max_seconds=60)
    keys = {item.key for item in scan_items(stack["dynamodb"], resources.table_name)}
    assert keys == {f"uploads/photo {index}.jpg" for index in range(3)}

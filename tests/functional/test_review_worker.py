"""The worker never overwrites a person's decision on the same object version — not on a duplicate
delivery, not on a backfill with a newer model — while a new upload of the key starts over.

The real handler on moto (in-process), with a tiny published model whose review threshold sends
every photo to NEEDS_REVIEW, and the review console's own decision function."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from moto import mock_aws

from contracts.catalogue import CatalogueItem, CategorySource, ReviewOutcome, Status
from contracts.catalogue_table import read_item
from handler import app
from local_stack.resources import LocalResources, create_local_resources
from local_stack.stack import LocalContext, drain_queue, sqs_event
from operations.backfill import backfill
from review.decisions import decide
from review.leases import claim_one
from sample_data.photos import LABELS, draw_sample_image
from tests.support.tiny_artifact import publish_tiny_artifact

pytestmark = pytest.mark.functional
KEY = "uploads/review/worker.jpg"


def jpeg(label: str, seed: int) -> bytes:
    buffer = io.BytesIO()
    draw_sample_image(label, np.random.default_rng(seed), size=160).save(buffer, format="JPEG")
    return buffer.getvalue()


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    return app.lambda_handler(event, LocalContext())


@dataclass
class Stack:
    s3: Any
    sqs: Any
    dynamodb: Any
    resources: LocalResources

    def item(self) -> CatalogueItem | None:
        return read_item(self.dynamodb, self.resources.table_name, self.resources.bucket, KEY)

    def deliver_once(self) -> dict[str, Any]:
        """Hand what S3 announced to the handler, delete it, and return the event (to replay)."""
        url = self.resources.queue_url
        messages = self.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]
        ).get("Messages", [])
        event = sqs_event(messages, self.resources.queue_arn)
        assert invoke(event)["batchItemFailures"] == []
        for message in messages:
            self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return event


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    # The tiny model's confidences are about 1/14: everything waits for a person.
    publish_tiny_artifact(tmp_path, review_threshold=0.99)
    with mock_aws():
        s3, sqs, dynamodb = (boto3.client(name) for name in ("s3", "sqs", "dynamodb"))
        resources = create_local_resources(s3_client=s3, sqs_client=sqs, dynamodb_client=dynamodb)
        monkeypatch.setenv("CATALOGUE_TABLE", resources.table_name)
        monkeypatch.setenv("MODEL_URI", str(tmp_path))
        app.reset_worker()
        drain_queue(sqs, resources.queue_url, invoke)  # S3's TestEvent
        yield Stack(s3, sqs, dynamodb, resources)
        app.reset_worker()


def test_human_decision_survives_duplicates_and_backfill_until_a_new_upload(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, table = stack.resources.bucket, stack.resources.table_name
    stack.s3.put_object(Bucket=bucket, Key=KEY, Body=jpeg("bathtub", 1))
    event = stack.deliver_once()
    shown = stack.item()
    assert shown is not None
    assert shown.status is Status.NEEDS_REVIEW
    choice = next(label for label in LABELS if label != shown.category)
    held = claim_one(stack.dynamodb, table, shown, "ana#1", now=0, until=2_000_000_000)
    assert held is not None
    decided = decide(
        stack.dynamodb, table, held, choice, reviewer="ana", holder="ana#1", labels=set(LABELS)
    )
    assert decided is not None
    assert decided.review_outcome is ReviewOutcome.CORRECTED

    # 1. The same S3 event delivered again (SQS is at-least-once).
    assert invoke(event)["batchItemFailures"] == []
    assert stack.item() == decided

    # ... and again once a newer model is deployed (a rollout re-processing the same event
    # would otherwise replace the item: same event order, another model version).
    new_version = publish_tiny_artifact(tmp_path, review_threshold=0.99)
    monkeypatch.setenv("MODEL_URI", str(tmp_path))
    app.reset_worker()
    assert invoke(event)["batchItemFailures"] == []
    assert stack.item() == decided

    # 2. A backfill with the newer model version: re-enqueued, processed, and refused.
    backfill(
        s3_client=stack.s3,
        sqs_client=stack.sqs,
        bucket=bucket,
        queue_url=stack.resources.queue_url,
    )
    assert drain_queue(stack.sqs, stack.resources.queue_url, invoke).received == 1
    assert stack.item() == decided
    assert decided.model_version != new_version

    # 3. A new upload of the key is another object version: the model starts over.
    stack.s3.put_object(Bucket=bucket, Key=KEY, Body=jpeg("stroller", 2))
    stack.deliver_once()
    fresh = stack.item()
    assert fresh is not None
    assert (fresh.status, fresh.category_source, fresh.model_version) == (
        Status.NEEDS_REVIEW,
        CategorySource.MODEL,
        new_version,
    )
    assert (fresh.reviewed_by, fresh.reviewed_at, fresh.review_outcome) == (None, None, None)
    assert fresh.etag != decided.etag

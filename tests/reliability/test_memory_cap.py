"""Issue 9, item 1: one batch of large and hostile photos fits the function's 1024 MB.

The real handler (``handler.app.lambda_handler``, a tiny published model) runs in a child process
whose memory is capped at the template's ``FunctionMemorySize`` (a memory cgroup when this machine
allows one, as Lambda's sandbox does; see :mod:`tests.support.capped_process`). It gets ONE SQS
batch of 10 messages from the local stack's S3 → SQS notifications: the six files of the issue's
memory table (16-bit grey PNG, lossless RGBA WebP and RGBA PNG of 49 MP, float TIFF, progressive
50 MP JPEG, 48 MP HEIC), a JPEG with 25,000 scans and three ordinary phone photos. Before the
memory budget, four decodes at once needed 1.3-1.5 GB each and the process was killed: the batch
came back whole. Now every record gets its final item, the process survives, and its peak RSS is
printed.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from PIL import Image

from contracts.catalogue import Status
from contracts.catalogue_table import scan_items
from local_stack.resources import create_local_resources
from local_stack.stack import moto_server, sqs_event
from sample_data.photos import draw_sample_image
from tests.support.capped_process import run_capped
from tests.support.hostile_images import hostile_files, progressive_jpeg_with_scans
from tests.support.tiny_artifact import publish_tiny_artifact

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
FUNCTION_MEMORY_MB = 1024  # template.yaml FunctionMemorySize
REGION = "eu-west-1"

# What each file must end as: a reason for a rejection, None for a catalogued photo.
EXPECTED_REASONS = {
    "grey16-7071.png": None,
    "rgba-7000.webp": "too_much_memory",  # libwebp's canvas + Pillow's copies: ~0.8 GB alone
    "rgba-7000.png": None,
    "float-7071.tif": None,
    "progressive-50mp.jpg": None,
    "iphone-48mp.heic": None,
    "scans-25000.jpg": "too_many_scans",
    "phone-1.jpg": None,
    "phone-2.jpg": None,
    "phone-3.jpg": None,
}


def _phone_photo(seed: int) -> bytes:
    """An ordinary 12 MP phone JPEG (a drawn product photo, upscaled)."""
    drawn = draw_sample_image("stroller", np.random.default_rng(seed), size=512)
    buffer = io.BytesIO()
    drawn.resize((4032, 3024), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _uploads() -> dict[str, bytes]:
    files = dict(hostile_files())
    files["scans-25000.jpg"] = progressive_jpeg_with_scans(25_000)
    for seed in (1, 2, 3):
        files[f"phone-{seed}.jpg"] = _phone_photo(seed)
    assert set(files) == set(EXPECTED_REASONS)
    return files


def _receive_batch(sqs: Any, queue_url: str, count: int) -> list[dict[str, Any]]:
    """``count`` upload notifications (S3's own ``s3:TestEvent`` is dropped)."""
    messages: list[dict[str, Any]] = []
    for _ in range(50):
        received = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=count - len(messages),
            AttributeNames=["All"],
            WaitTimeSeconds=1,
        ).get("Messages", [])
        messages += [message for message in received if "s3:TestEvent" not in message["Body"]]
        if len(messages) == count:
            return messages
    raise AssertionError(f"only {len(messages)} of {count} notifications arrived")


@pytest.mark.heavy
def test_one_batch_of_hostile_photos_fits_1024_mb(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    publish_tiny_artifact(model_dir, review_threshold=0.01)
    uploads = _uploads()
    with moto_server() as endpoint:
        client_options: dict[str, Any] = {
            "endpoint_url": endpoint,
            "region_name": REGION,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        s3, sqs, dynamodb = (
            boto3.client(name, **client_options) for name in ("s3", "sqs", "dynamodb")
        )
        resources = create_local_resources(s3_client=s3, sqs_client=sqs, dynamodb_client=dynamodb)
        # GIVEN ten uploads, announced by S3 to the queue, received as ONE batch of 10 messages
        for name, data in uploads.items():
            s3.put_object(Bucket=resources.bucket, Key=f"uploads/{name}", Body=data)
        messages = _receive_batch(sqs, resources.queue_url, len(uploads))
        event_path = tmp_path / "event.json"
        event_path.write_text(json.dumps(sqs_event(messages, resources.queue_arn)))
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("AWS_")
        } | {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(FUNCTION_MEMORY_MB),
            "CATALOGUE_TABLE": resources.table_name,
            "MODEL_URI": str(model_dir),
            "POWERTOOLS_METRICS_DISABLED": "true",
            "LOG_LEVEL": "WARNING",
        }
        # WHEN the real handler processes that batch in a process capped at 1024 MB
        run = run_capped(
            [sys.executable, "-m", "tests.support.capped_process", str(event_path)],
            limit_mb=FUNCTION_MEMORY_MB,
            env=environment,
            cwd=REPOSITORY_ROOT,
            timeout=240,
        )
        items = {item.key: item for item in scan_items(dynamodb, resources.table_name)}

    # THEN the process survived, and reports its peak memory
    output = run.completed.stdout.strip().splitlines()
    assert run.completed.returncode == 0, (
        f"the handler died under the {run.mechanism} cap (exit {run.completed.returncode}, "
        f"OOM kills {run.oom_kills}):\n{run.completed.stderr[-3000:]}"
    )
    report = json.loads(output[-1])
    print(
        f"\n{run.mechanism} cap {FUNCTION_MEMORY_MB} MB: peak RSS {report['peak_rss_mb']:.0f} MB, "
        f"cgroup peak {run.cgroup_peak_mb or float('nan'):.0f} MB (RSS + page cache), "
        f"peak virtual {report['peak_virtual_mb']:.0f} MB"
    )
    # AND every record has its final item: no message comes back for a retry
    assert report["response"] == {"batchItemFailures": []}
    assert set(items) == {f"uploads/{name}" for name in uploads}
    for name, reason in EXPECTED_REASONS.items():
        item = items[f"uploads/{name}"]
        if reason is None:
            assert item.status in (Status.CATALOGUED, Status.NEEDS_REVIEW), (name, item)
        else:
            assert (item.status, item.reason) == (Status.REJECTED, reason), name
    assert report["peak_rss_mb"] < FUNCTION_MEMORY_MB


@pytest.fixture(autouse=True)
def _no_inherited_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)

"""Issue 17: a crafted upload can only ever fail itself, with the handler run like Lambda.

Each case is one batch: one crafted file of :mod:`tests.support.crafted_images` and two ordinary
12 MP phone photos, uploaded to the local stack (S3 → SQS, the template's redrive policy of 5
receives) and drained by a container of the real handler under a 1024 MB memory cgroup,
Lambda's CPU share for 1024 MB and the 60 s timeout (:mod:`tests.support.lambda_container`).
Before the decoder processes (the same test on the earlier worker), the strip-offsets TIFF was
OOM-killed with its container five times and took its photos into the DLQ, and the RLE bitmap
held its batch for 45 of the 60 s.

THEN, for every case: nothing reaches the DLQ, the photos are catalogued, the crafted file ends
as its class allows (REJECTED with one of its reasons, or catalogued when it is legitimate),
and no invocation timed out or died. The figures (peak memory of the group, CPU seconds,
outcome) are printed per case (``-s``).

The quick tier runs the cheapest file of each class with a per-file deadline of
:data:`QUICK_DECODE_SECONDS`; ``-m slow`` runs every file at the issue's size with the worker's
default deadline.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from PIL import Image

from contracts.catalogue import Status
from contracts.catalogue_table import scan_items
from handler.decode_pool import DECODE_SECONDS
from local_stack.resources import create_local_resources
from local_stack.stack import REGION, moto_server
from sample_data.photos import draw_sample_image
from tests.support.crafted_images import CRAFTED, crafted_file
from tests.support.lambda_container import LambdaLikeRun
from tests.support.tiny_artifact import publish_tiny_artifact

FUNCTION_MEMORY_MB = 1024  # template.yaml FunctionMemorySize
FUNCTION_TIMEOUT_S = 60  # template.yaml FunctionTimeout
QUICK_DECODE_SECONDS = 3.0
PHOTOS = 2

# The quick tier: name -> (scale, the outcomes it may have at QUICK_DECODE_SECONDS).
QUICK = {
    "tiff-huge-tile": (1.0, {"corrupt", "too_large_to_decode"}),
    "tiff-strip-offsets": (0.25, {"too_large_to_decode", "too_slow_to_decode"}),
    "jpeg-scan-per-component": (1.0, {"catalogued"}),
    "bmp-rle-lines": (1.0, {"too_slow_to_decode"}),
}


def _phone_photo(seed: int) -> bytes:
    drawn = draw_sample_image("stroller", np.random.default_rng(seed), size=512)
    buffer = io.BytesIO()
    drawn.resize((4032, 3024), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    publish_tiny_artifact(root, review_threshold=0.01)
    return root


def _run(
    name: str, scale: float, decode_seconds: float, model_dir: Path, allowed: set[str]
) -> None:
    uploads = {f"crafted-{name}": crafted_file(name, scale=scale)}
    uploads |= {f"phone-{seed}.jpg": _phone_photo(seed) for seed in range(PHOTOS)}
    with moto_server() as endpoint:
        options: dict[str, Any] = {
            "endpoint_url": endpoint,
            "region_name": REGION,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        s3, sqs, dynamodb = (boto3.client(n, **options) for n in ("s3", "sqs", "dynamodb"))
        resources = create_local_resources(s3_client=s3, sqs_client=sqs, dynamodb_client=dynamodb)
        # GIVEN one crafted file and ordinary phone photos, announced by S3 to the queue
        for key, data in uploads.items():
            s3.put_object(Bucket=resources.bucket, Key=f"uploads/{key}", Body=data)
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("AWS_")
        } | {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "CATALOGUE_TABLE": resources.table_name,
            "MODEL_URI": str(model_dir),
            "DECODE_SECONDS": str(decode_seconds),
            "POWERTOOLS_METRICS_NAMESPACE": "Momee/Cataloguer",
            "LOG_LEVEL": "WARNING",
        }
        # WHEN containers of the real handler drain the queue under Lambda's limits
        with LambdaLikeRun(
            environment, memory_mb=FUNCTION_MEMORY_MB, timeout_s=FUNCTION_TIMEOUT_S
        ) as run:
            report = run.drain(sqs, resources.queue_url, resources.dead_letter_queue_url)
            log = run.log
        items = {item.key: item for item in scan_items(dynamodb, resources.table_name)}

    crafted = items.get(f"uploads/crafted-{name}")
    outcome = "missing" if crafted is None else (crafted.reason or crafted.status.value.lower())
    print(
        f"\n{name} ({CRAFTED[name].description}, scale {scale}; {report.mechanism}): "
        f"{outcome}; {len(report.invocations)} invocations "
        f"[{', '.join(i.outcome for i in report.invocations)}], "
        f"peak {report.peak_mb:.0f} MB, CPU {report.cpu_seconds:.1f} s, "
        f"wall {sum(i.wall_seconds for i in report.invocations):.1f} s"
    )
    # THEN nothing reached the DLQ and no invocation timed out or died
    assert report.dead_letters == 0, log[-3000:]
    assert all(i.outcome in ("ok", "raised") for i in report.invocations), report
    # AND every photo is catalogued
    for seed in range(PHOTOS):
        photo = items[f"uploads/phone-{seed}.jpg"]
        assert photo.status in (Status.CATALOGUED, Status.NEEDS_REVIEW), photo
    # AND the crafted file ends as its class allows
    assert crafted is not None, log[-3000:]
    if crafted.status is Status.REJECTED:
        assert crafted.reason in allowed, (crafted.reason, allowed)
    else:
        assert "catalogued" in allowed, crafted
    # AND a kill is visible in the log at once, naming the file
    if crafted.reason in ("too_large_to_decode", "too_slow_to_decode"):
        kills = [
            line
            for line in log.splitlines()
            if '"decoder killed"' in line and f"uploads/crafted-{name}" in line
        ]
        assert kills, log[-3000:]
    assert report.peak_mb < FUNCTION_MEMORY_MB


@pytest.mark.parametrize("name", list(QUICK))
@pytest.mark.heavy
def test_crafted_file_fails_only_itself(name: str, model_dir: Path) -> None:
    scale, allowed = QUICK[name]
    _run(name, scale, QUICK_DECODE_SECONDS, model_dir, allowed)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_file_at_full_size_fails_only_itself(name: str, model_dir: Path) -> None:
    _run(name, 1.0, DECODE_SECONDS, model_dir, set(CRAFTED[name].outcomes))

"""Load with faults: every uploaded photo ends in the catalogue exactly once, whatever AWS does.

    python -m bench.load_with_faults [--images 2000] [--workers 4] [--model artifacts]

A moto server on 127.0.0.1 plays AWS, with the bucket, queue, DLQ, table and bucket notification
created from ``template.yaml``. Photos (mixed sizes and formats, some hostile) are uploaded while
several worker processes drain the queue through the real ``handler.app.lambda_handler``, as
Lambda's SQS poller would. Meanwhile:

* about 10% of S3 GetObject calls and DynamoDB writes fail transiently (throttling, 500,
  timeouts; see :mod:`bench.faults`);
* about 5% of messages are delivered twice (a copy is sent while the original is in flight);
* some objects are overwritten, and the *older* upload's notification is delivered again after the
  newer one (out of order); some objects are deleted;
* a handful of objects fail on every GetObject on purpose, so they must end in the DLQ.

SQS semantics are the queue's own: a message the handler reports in ``batchItemFailures`` comes
back after the visibility timeout, and moto's redrive policy moves it to the DLQ after
``maxReceiveCount`` receives. Only the timeout is shortened (to ``--visibility-timeout`` seconds)
so that a run takes minutes, not hours.

At the end the catalogue is checked against the bucket: one item per surviving object, each with
a final status and the ETag of the newest upload; no item for a deleted object; the DLQ holds
exactly the messages made to fail on purpose; nothing lost. The tests run a small variant
(tests/functional/test_reliability_load.py); the full 2,000-image run is marked slow.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import multiprocessing
import os
import random
import resource
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote_plus

import boto3
import numpy as np
from PIL import Image

from bench.faults import FaultInjector, FaultPlan, choose_permanent_keys
from contracts.catalogue_table import scan_items
from contracts.image import HEIF_SUPPORTED  # importing it registers Pillow's HEIF plugin
from handler.app import lambda_handler
from handler.events import records_from_sqs_body
from local_stack.resources import create_local_resources
from local_stack.stack import (
    LocalContext,
    drain_queue,
    environment_restored,
    moto_server,
    point_boto3_at,
    queue_depth,
)
from sample_data.photos import LABELS, draw_sample_image
from tests.support.tiny_artifact import publish_tiny_artifact

UPLOAD_PREFIX: Final[str] = "uploads/"
FINAL_STATUSES: Final[frozenset[str]] = frozenset({"CATALOGUED", "NEEDS_REVIEW", "REJECTED"})
# A worker process with LiteRT, Pillow and boto3 stays well under this; a leak or a decoder that
# allocates for a hostile header would not.
PEAK_RSS_LIMIT_MB: Final[int] = 600


@dataclass(frozen=True)
class LoadConfig:
    images: int = 2000
    workers: int = 4
    transient_rate: float = 0.10
    duplicate_rate: float = 0.05
    overwrite_rate: float = 0.04
    delete_rate: float = 0.03
    hostile_rate: float = 0.05
    permanent_failures: int = 5
    visibility_timeout: int = 2
    max_receive_count: int | None = None  # None: the template's
    seed: int = 0
    max_seconds: float = 1800.0


@dataclass
class WorkerReport:
    batches: int = 0
    received: int = 0
    deleted: int = 0
    returned: int = 0
    handler_errors: int = 0
    duplicates_sent: int = 0
    injected: dict[str, int] = field(default_factory=dict)
    peak_rss_mb: float = 0.0


@dataclass
class LoadReport:
    uploaded: int
    overwritten: int
    deleted: int
    out_of_order_sent: int
    duplicates_sent: int
    surviving_objects: int
    items: int
    catalogued: int
    needs_review: int
    rejected: int
    rejected_reasons: dict[str, int]
    retried: int
    dead_lettered: int
    dead_letter_keys: list[str]
    permanent_keys: list[str]
    lost: int
    wrong_version: int
    items_for_deleted: int
    not_final: int
    injected: dict[str, int]
    peak_rss_mb: float
    seconds: float
    images_per_second: float
    problems: list[str]

    def summary(self) -> str:
        return (
            f"uploaded={self.uploaded} overwritten={self.overwritten} deleted={self.deleted}"
            f" catalogued={self.catalogued} needs_review={self.needs_review}"
            f" rejected={self.rejected} retried={self.retried}"
            f" dead_lettered={self.dead_lettered} lost={self.lost}"
            f" duplicates={self.duplicates_sent} out_of_order={self.out_of_order_sent}"
            f" injected={dict(sorted(self.injected.items()))}"
            f" peak_rss_mb={self.peak_rss_mb:.0f}"
            f" throughput={self.images_per_second:.1f} images/s in {self.seconds:.1f} s"
        )


# ------------------------------------------------------------------------------ the photos ---


def make_photos(count: int, *, hostile_rate: float, seed: int) -> dict[str, bytes]:
    """``count`` uploads: drawn product photos in mixed sizes and formats, and some hostile files.

    Key names include spaces, ``+`` and non-ASCII characters, as sellers' file names do.
    """
    rng = np.random.default_rng(seed)
    chooser = random.Random(seed)
    photos: dict[str, bytes] = {}
    for index in range(count):
        label = LABELS[index % len(LABELS)]
        if chooser.random() < hostile_rate:
            name, data = _hostile_file(index, chooser)
        else:
            name, data = _photo(label, index, rng, chooser)
        photos[f"{UPLOAD_PREFIX}{label}/{name}"] = data
    return photos


def _photo(label: str, index: int, rng: np.random.Generator, chooser: random.Random):
    size = chooser.choice((96, 160, 256, 384, 640))
    image = draw_sample_image(label, rng, size)
    formats = [("JPEG", "jpg"), ("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp")]
    if HEIF_SUPPORTED:
        formats.append(("HEIF", "heic"))
    image_format, extension = chooser.choice(formats)
    if chooser.random() < 0.3:  # non-square pictures, as phones take them
        image = image.resize((size, max(32, int(size * chooser.uniform(0.5, 1.5)))))
    buffer = io.BytesIO()
    image.save(buffer, image_format, **({"quality": 85} if image_format != "PNG" else {}))
    name = chooser.choice((f"photo {index}.{extension}", f"foto+{index}.{extension}"))
    if chooser.random() < 0.1:
        name = f"kereta bayi é {index}.{extension}"
    return name, buffer.getvalue()


def _hostile_file(index: int, chooser: random.Random) -> tuple[str, bytes]:
    kind = chooser.choice(("html", "empty", "truncated", "bomb"))
    if kind == "html":
        return f"not-a-photo {index}.jpg", b"<html><body>seller page</body></html>"
    if kind == "empty":
        return f"empty {index}.jpg", b""
    if kind == "truncated":
        noise = np.random.default_rng(index).integers(0, 255, (200, 200, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noise).save(buffer, "JPEG")
        return f"truncated {index}.jpg", buffer.getvalue()[:3000]
    return f"bomb {index}.png", _png_bomb()


def _png_bomb() -> bytes:
    """A 20,000 x 20,000 PNG that compresses to a few hundred kilobytes: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * 20_000
    data = zlib.compress(row * 200, 9)  # only the first rows; the header is what matters
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------------------ the workers ---


def _worker_main(
    endpoint_url: str,
    environment: dict[str, str],
    queue_url: str,
    plan: FaultPlan,
    duplicate_rate: float,
    uploads_done: Any,
    results: Any,
    max_seconds: float,
) -> None:
    """One Lambda container: its own model, clients with faults, and the poller's loop."""
    os.environ.update(environment)
    # The handler's JSON logs and metrics would drown the harness's output; errors still show.
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    injector = FaultInjector(plan)
    injector.install()  # before the handler creates its clients, so they inherit the hooks

    # The harness's own queue client (sending duplicates, polling) has no faults: it stands for
    # SQS and the Lambda poller, not for the worker's calls.
    sqs = boto3.session.Session().client("sqs", endpoint_url=endpoint_url)
    chooser = random.Random(plan.seed + 1)
    report = WorkerReport()

    def handler(event: dict[str, Any]) -> dict[str, Any]:
        for record in event["Records"]:
            if chooser.random() < duplicate_rate:
                sqs.send_message(QueueUrl=queue_url, MessageBody=record["body"])
                report.duplicates_sent += 1
        return lambda_handler(event, LocalContext())

    started = time.monotonic()
    while time.monotonic() - started < max_seconds:
        stats = drain_queue(
            sqs,
            queue_url,
            handler,
            retry_after_seconds=None,  # the queue's own visibility timeout decides
            handler_errors_are_failures=True,
            max_seconds=max_seconds,
        )
        for name in ("batches", "received", "deleted", "returned", "handler_errors"):
            setattr(report, name, getattr(report, name) + getattr(stats, name))
        if uploads_done.is_set() and queue_depth(sqs, queue_url) == 0:
            break
        time.sleep(0.2)
    report.injected = dict(injector.injected)
    report.peak_rss_mb = _peak_rss_mb()
    results.put(asdict(report))


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). ``ru_maxrss`` would not do: Linux carries it across
    the exec of a spawned child, so it reports the parent's peak when the parent was larger."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


# ------------------------------------------------------------------------------ the run ---


def run_load(config: LoadConfig, model_uri: str, *, log=print) -> LoadReport:
    """Run the whole scenario on a fresh moto server and check the end state."""
    chooser = random.Random(config.seed)
    photos = make_photos(config.images, hostile_rate=config.hostile_rate, seed=config.seed)
    permanent = choose_permanent_keys(
        [key for key, data in photos.items() if data], config.permanent_failures, config.seed
    )
    with _serialised_moto_sqs(), environment_restored(), moto_server() as endpoint_url:
        point_boto3_at(endpoint_url)
        session = boto3.session.Session()
        s3, sqs, dynamodb = (
            session.client(name, endpoint_url=endpoint_url) for name in ("s3", "sqs", "dynamodb")
        )
        resources = create_local_resources(s3_client=s3, sqs_client=sqs, dynamodb_client=dynamodb)
        attributes = {"VisibilityTimeout": str(config.visibility_timeout)}
        if config.max_receive_count is not None:
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": resources.dead_letter_queue_arn,
                    "maxReceiveCount": config.max_receive_count,
                }
            )
        sqs.set_queue_attributes(QueueUrl=resources.queue_url, Attributes=attributes)
        environment = {
            "AWS_ENDPOINT_URL": endpoint_url,
            "CATALOGUE_TABLE": resources.table_name,
            "MODEL_URI": model_uri,
            "LOG_LEVEL": "ERROR",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "ERROR",
        }
        context = multiprocessing.get_context("spawn")
        uploads_done = context.Event()
        results = context.Queue()
        workers = [
            context.Process(
                target=_worker_main,
                args=(
                    endpoint_url,
                    environment,
                    resources.queue_url,
                    FaultPlan(config.transient_rate, permanent, config.seed * 100 + number),
                    config.duplicate_rate,
                    uploads_done,
                    results,
                    config.max_seconds,
                ),
            )
            for number in range(config.workers)
        ]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        log(f"uploading {len(photos)} photos with {config.workers} workers draining the queue")
        uploads = _upload_everything(s3, sqs, resources, photos, permanent, config, chooser)
        uploads_done.set()
        reports = [results.get(timeout=config.max_seconds + 60) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        seconds = time.perf_counter() - started
        return _check_end_state(
            s3, sqs, dynamodb, resources, photos, permanent, uploads, reports, seconds
        )


@contextmanager
def _serialised_moto_sqs() -> Iterator[None]:
    """Make moto's SQS safe for several pollers at once, as real SQS is.

    moto's threaded server runs requests concurrently, and two ReceiveMessage calls that both
    redrive the same message to the DLQ corrupt its in-memory queue (``list.remove`` fails). The
    harness tests the worker, not moto, so SQS calls are serialised inside the server.
    """
    from moto.sqs.models import SQSBackend  # noqa: PLC0415 — moto (the stand-in for AWS) loads only when a server or mock starts

    lock = threading.RLock()  # batch calls call the single-message methods
    originals = {name: getattr(SQSBackend, name) for name in _SQS_BACKEND_METHODS}

    def serialised(original):
        @functools.wraps(original)
        def call(*arguments, **keywords):
            with lock:
                return original(*arguments, **keywords)

        return call

    for name, original in originals.items():
        setattr(SQSBackend, name, serialised(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(SQSBackend, name, original)


_SQS_BACKEND_METHODS: Final[tuple[str, ...]] = (
    "receive_message",
    "send_message",
    "send_message_batch",
    "delete_message",
    "delete_message_batch",
    "change_message_visibility",
    "change_message_visibility_batch",
    "get_queue_attributes",
)


@dataclass
class _Uploads:
    overwritten: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    out_of_order_sent: int = 0


def _upload_everything(s3, sqs, resources, photos, permanent, config, chooser) -> _Uploads:
    bucket = resources.bucket
    keys = list(photos)
    outcome = _Uploads()
    first_upload: dict[str, tuple[str, str, int]] = {}  # key -> (etag, event time, size)

    def put(key: str) -> None:
        before = datetime.now(UTC)
        response = s3.put_object(Bucket=bucket, Key=key, Body=photos[key])
        first_upload[key] = (response["ETag"].strip('"'), _iso(before), len(photos[key]))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, keys))

    candidates = [key for key in keys if key not in permanent and photos[key]]
    chooser.shuffle(candidates)
    overwrite_count = int(len(keys) * config.overwrite_rate)
    delete_count = int(len(keys) * config.delete_rate)
    overwrite = candidates[:overwrite_count]
    delete = candidates[overwrite_count : overwrite_count + delete_count]
    time.sleep(0.01)  # event times are in milliseconds: keep the second upload strictly later
    for key in overwrite:
        photos[key] = _another_photo(key, chooser)
        s3.put_object(Bucket=bucket, Key=key, Body=photos[key])
        outcome.overwritten.add(key)
    for key in delete:
        s3.delete_object(Bucket=bucket, Key=key)
        outcome.deleted.add(key)
    # Out of order: the older upload's notification arrives again after the newer one.
    time.sleep(config.visibility_timeout)
    for key in overwrite:
        etag, event_time, size = first_upload[key]
        sqs.send_message(
            QueueUrl=resources.queue_url,
            MessageBody=json.dumps(_s3_event(bucket, key, etag, event_time, size)),
        )
        outcome.out_of_order_sent += 1
    return outcome


def _another_photo(key: str, chooser: random.Random) -> bytes:
    """The seller's second upload under the same name: another JPEG photo of the same label."""
    label = key.removeprefix(UPLOAD_PREFIX).split("/", 1)[0]
    image = draw_sample_image(label, np.random.default_rng(chooser.randrange(2**32)), 200)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def _iso(moment: datetime) -> str:
    # A millisecond before the request was sent: strictly older than the event S3 stamped for it.
    earlier = moment - timedelta(milliseconds=1)
    return earlier.strftime("%Y-%m-%dT%H:%M:%S.") + f"{earlier.microsecond // 1000:03d}Z"


def _s3_event(bucket: str, key: str, etag: str, event_time: str, size: int) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "eu-west-1",
                "eventTime": event_time,
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag},
                },
            }
        ]
    }


def _check_end_state(
    s3, sqs, dynamodb, resources, photos, permanent, uploads, reports, seconds
) -> LoadReport:
    problems: list[str] = []
    surviving = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=resources.bucket):
        for entry in page.get("Contents", []):
            surviving[entry["Key"]] = entry["ETag"].strip('"')
    items = {item.key: item for item in scan_items(dynamodb, resources.table_name)}
    dead_letters = _drain_dead_letters(sqs, resources.dead_letter_queue_url)
    dead_letter_keys = sorted({key for body in dead_letters for key in _keys_of(body)})

    expected = set(surviving) - set(permanent)
    # Lost: an object that exists but has neither a catalogue item nor a message in the DLQ.
    lost = sorted(set(surviving) - set(items) - set(dead_letter_keys))
    if lost:
        problems.append(f"{len(lost)} objects have no item and are not in the DLQ: {lost[:5]}")
    uncatalogued = sorted(expected - set(items) - set(lost))
    if uncatalogued:
        problems.append(f"objects dead-lettered instead of catalogued: {uncatalogued[:5]}")
    items_for_deleted = sorted(set(items) - set(surviving))
    if items_for_deleted:
        problems.append(f"items for deleted objects: {items_for_deleted[:5]}")
    wrong_version = sorted(k for k in expected & set(items) if items[k].etag != surviving[k])
    if wrong_version:
        problems.append(f"items that do not reflect the newest upload: {wrong_version[:5]}")
    not_final = sorted(k for k, item in items.items() if str(item.status) not in FINAL_STATUSES)
    if not_final:
        problems.append(f"items without a final status: {not_final[:5]}")
    unexpected_dead = sorted(set(dead_letter_keys) - set(permanent))
    if unexpected_dead:
        problems.append(f"DLQ holds messages that should have succeeded: {unexpected_dead[:5]}")
    missing_dead = sorted(set(permanent) - set(dead_letter_keys))
    if missing_dead:
        problems.append(f"permanent failures not in the DLQ: {missing_dead[:5]}")
    leftover = _queue_depth(sqs, resources.queue_url)
    if leftover:
        problems.append(f"{leftover} messages still in the queue")

    statuses = Counter(str(item.status) for item in items.values())
    reasons = Counter(item.reason for item in items.values() if item.reason)
    injected: Counter = Counter()
    for report in reports:
        injected.update(report["injected"])
    return LoadReport(
        uploaded=len(photos),
        overwritten=len(uploads.overwritten),
        deleted=len(uploads.deleted),
        out_of_order_sent=uploads.out_of_order_sent,
        duplicates_sent=sum(report["duplicates_sent"] for report in reports),
        surviving_objects=len(surviving),
        items=len(items),
        catalogued=statuses["CATALOGUED"],
        needs_review=statuses["NEEDS_REVIEW"],
        rejected=statuses["REJECTED"],
        rejected_reasons=dict(reasons),
        retried=sum(report["returned"] for report in reports),
        dead_lettered=len(dead_letters),
        dead_letter_keys=dead_letter_keys,
        permanent_keys=sorted(permanent),
        lost=len(lost),
        wrong_version=len(wrong_version),
        items_for_deleted=len(items_for_deleted),
        not_final=len(not_final),
        injected=dict(injected),
        peak_rss_mb=max(report["peak_rss_mb"] for report in reports),
        seconds=seconds,
        images_per_second=len(photos) / seconds,
        problems=problems,
    )


def _drain_dead_letters(sqs, queue_url: str) -> list[str]:
    bodies: list[str] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=300
        ).get("Messages", [])
        if not messages:
            return bodies
        bodies.extend(message["Body"] for message in messages)


def _keys_of(body: str) -> list[str]:
    return [record.key for record in records_from_sqs_body(body)]


def _queue_depth(sqs, queue_url: str) -> int:
    return queue_depth(sqs, queue_url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model",
        default=None,
        help="published model folder or s3:// URI (default: ./artifacts, else a tiny test model)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    arguments = parser.parse_args(argv)
    model_uri = arguments.model
    if model_uri is None:
        if Path("artifacts/latest.json").exists():
            model_uri = str(Path("artifacts").resolve())
        else:
            model_uri = tempfile.mkdtemp(prefix="load-model-")
            publish_tiny_artifact(model_uri)
    config = LoadConfig(images=arguments.images, workers=arguments.workers, seed=arguments.seed)
    report = run_load(config, model_uri)
    print(json.dumps(asdict(report), indent=2) if arguments.json else report.summary())
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    if report.peak_rss_mb > PEAK_RSS_LIMIT_MB:
        print(f"PROBLEM: peak RSS {report.peak_rss_mb:.0f} MB > {PEAK_RSS_LIMIT_MB} MB")
    return 1 if report.problems or report.peak_rss_mb > PEAK_RSS_LIMIT_MB else 0


if __name__ == "__main__":
    raise SystemExit(main())

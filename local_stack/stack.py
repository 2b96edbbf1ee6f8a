"""The local stack: the real handler on a moto server, end to end, on one machine.

    python -m local_stack [--images DIR] [--model DEST_OR_VERSION] [--json] [--serve]

1. Starts a moto server on 127.0.0.1 (a real HTTP endpoint; boto3 talks to it through
   ``AWS_ENDPOINT_URL``) and creates the bucket, queue, DLQ, table and bucket notification from
   ``template.yaml`` (:func:`local_stack.resources.create_local_resources`).
2. Uploads every file under DIR to ``uploads/<relative path>``; S3 announces each on the queue.
   Without ``--images``, sample photos are drawn (two per label, some with awkward key names)
   together with a few hostile files (HTML named .jpg, a truncated JPEG, an empty file).
3. Drains the queue into :func:`handler.app.lambda_handler` in SQS batches of up to 10, deleting
   only the messages the handler did not report in ``batchItemFailures`` (:func:`drain_queue`,
   which the reliability harness reuses with its own clients and handler).
4. Prints the catalogue as a table, or one JSON object per line with ``--json``.
5. With ``--serve``, keeps the moto server (and so the catalogue) up until Ctrl-C and writes where
   it is to ``.cache/local-stack.json`` (:mod:`local_stack.state`), so that ``python -m review``
   with no arguments opens the review console on this catalogue.

The model is the latest version published in ``./artifacts`` unless ``--model`` names a folder, a
version under ``./artifacts`` or an ``s3://`` location. Exit status: 0 when every message was
handled and the DLQ is empty, 1 otherwise, 2 when there is no model to run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import mimetypes
import os
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from unittest import mock

import boto3
import numpy as np
from PIL import Image

from contracts.catalogue import CatalogueItem
from contracts.catalogue_table import scan_items
from handler import app
from local_stack.atomic_dynamodb import serialise_dynamodb
from local_stack.resources import create_local_resources
from local_stack.state import LocalStackState, remove_state, write_state
from sample_data.photos import LABELS, draw_sample_image

DEFAULT_ARTIFACTS: Final[Path] = Path("artifacts")
UPLOAD_PREFIX: Final[str] = "uploads/"
REGION: Final[str] = "eu-west-1"
SQS_BATCH_SIZE: Final[int] = 10
PUBLISH_HINT: Final[str] = (
    "No published model in ./artifacts. Publish the sample model first: "
    "`make sample-model` (or `python -m model_build.train`)."
)

SqsHandler = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class LocalContext:
    """The attributes of a Lambda context object the handler and Powertools read."""

    function_name: str = "momee-cataloguer-local"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = (
        f"arn:aws:lambda:{REGION}:123456789012:function:momee-cataloguer-local"
    )
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/momee-cataloguer-local"
    log_stream_name: str = "local"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000


@dataclass
class DrainStats:
    batches: int = 0
    received: int = 0
    deleted: int = 0
    returned: int = 0  # reported in batchItemFailures (or the whole batch, when the handler raised)
    handler_errors: int = 0
    seconds: float = 0.0


# --------------------------------------------------------------------------------------- moto ---


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 on a free port, with nothing in it; yields its endpoint URL.

    moto keeps its state per process, not per server: a second server in the same process would
    see the first one's queues and tables (and refuse to create a queue again with other
    attributes). The server is reset when it starts, so every local stack begins empty.
    """
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 — moto (the stand-in for AWS) loads only when a server or mock starts

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    serialise_dynamodb()  # conditional writes atomic per item, as on DynamoDB
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(reset, timeout=30):
        pass
    try:
        yield endpoint
    finally:
        server.stop()


def environment_restored() -> contextlib.AbstractContextManager:
    """The process environment as it was before the block, whatever the block set
    (``unittest.mock.patch.dict``: keys added in the block are removed, changed ones restored).

    A local stack points boto3 and the in-process worker at its moto server through the
    environment; once the server has stopped, a later caller in the same process (a test, a
    benchmark's next step) must not be sent to its closed port.
    """
    return mock.patch.dict(os.environ)


def point_boto3_at(endpoint_url: str) -> None:
    """Make every boto3 client of this process (the handler's too) talk to ``endpoint_url``.

    Fake credentials are set unconditionally: nothing here may ever reach real AWS.
    """
    os.environ["AWS_ENDPOINT_URL"] = endpoint_url
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    os.environ["AWS_SESSION_TOKEN"] = "testing"
    os.environ["AWS_DEFAULT_REGION"] = REGION
    os.environ.pop("AWS_PROFILE", None)


def clients(endpoint_url: str | None = None) -> dict[str, Any]:
    return {
        name: boto3.client(name, endpoint_url=endpoint_url, region_name=REGION)
        for name in ("s3", "sqs", "dynamodb")
    }


# ------------------------------------------------------------------------------------ queue ---


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping delivers for ``messages`` (ReceiveMessage)."""
    region = queue_arn.split(":")[3]
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "binaryValue": value.get("BinaryValue"),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": value["DataType"],
                    }
                    for name, value in message.get("MessageAttributes", {}).items()
                },
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for message in messages
        ]
    }


def drain_queue(
    sqs_client: Any,
    queue_url: str,
    handler: SqsHandler,
    *,
    batch_size: int = SQS_BATCH_SIZE,
    retry_after_seconds: int | None = 0,
    handler_errors_are_failures: bool = False,
    max_seconds: float = 600.0,
) -> DrainStats:
    """Feed the queue to ``handler`` in SQS events until it is empty, as Lambda's poller does.

    Messages the handler does not report in ``batchItemFailures`` are deleted; the others are
    left for SQS to redeliver (after ``retry_after_seconds``, or the queue's visibility timeout
    when ``None``), and the queue's redrive policy moves them to the DLQ after its receive limit.
    A handler exception propagates (nothing is deleted) unless ``handler_errors_are_failures``,
    which treats it as the whole batch failing, as Lambda does.
    """
    queue_arn = sqs_client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    stats = DrainStats()
    started = time.perf_counter()
    while time.perf_counter() - started < max_seconds:
        messages = sqs_client.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=batch_size,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            WaitTimeSeconds=0,
        ).get("Messages", [])
        if not messages:
            if _queue_is_empty(sqs_client, queue_url):
                break
            time.sleep(0.05)  # messages in flight elsewhere, or waiting out a visibility timeout
            continue
        stats.batches += 1
        stats.received += len(messages)
        try:
            response = handler(sqs_event(messages, queue_arn))
            failed = {entry["itemIdentifier"] for entry in response.get("batchItemFailures", [])}
        except Exception:
            if not handler_errors_are_failures:
                raise
            stats.handler_errors += 1
            failed = {message["MessageId"] for message in messages}
        done = [message for message in messages if message["MessageId"] not in failed]
        returned = [message for message in messages if message["MessageId"] in failed]
        stats.deleted += _delete(sqs_client, queue_url, done)
        stats.returned += len(returned)
        if returned and retry_after_seconds is not None:
            _change_visibility(sqs_client, queue_url, returned, retry_after_seconds)
    stats.seconds = time.perf_counter() - started
    return stats


def queue_depth(sqs_client: Any, queue_url: str) -> int:
    attributes = sqs_client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def _queue_is_empty(sqs_client: Any, queue_url: str) -> bool:
    return queue_depth(sqs_client, queue_url) == 0


def _chunks(items: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), SQS_BATCH_SIZE):
        yield items[start : start + SQS_BATCH_SIZE]


def _delete(sqs_client: Any, queue_url: str, messages: list[dict[str, Any]]) -> int:
    deleted = 0
    for chunk in _chunks(messages):
        response = sqs_client.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
            ],
        )
        deleted += len(response.get("Successful", []))
    return deleted


def _change_visibility(
    sqs_client: Any, queue_url: str, messages: list[dict[str, Any]], seconds: int
) -> None:
    for chunk in _chunks(messages):
        sqs_client.change_message_visibility_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": seconds}
                for i, m in enumerate(chunk)
            ],
        )


# ---------------------------------------------------------------------------------- uploads ---


def upload_folder(s3_client: Any, bucket: str, folder: Path, prefix: str = UPLOAD_PREFIX) -> int:
    """Upload every file under ``folder`` to ``<prefix><relative path>``; returns the count."""
    count = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        s3_client.put_object(
            Bucket=bucket,
            Key=prefix + path.relative_to(folder).as_posix(),
            Body=path.read_bytes(),
            ContentType=content_type,
        )
        count += 1
    return count


def write_sample_images(folder: Path, *, per_label: int = 2, seed: int = 7) -> Path:
    """Sample product photos (``<label>/...jpg``) plus the hostile files sellers do upload."""
    rng = np.random.default_rng(seed)
    last = folder
    for label in LABELS:
        (folder / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_label):
            # Awkward names on purpose: S3 URL-encodes them in the event, the worker decodes.
            name = f"photo {index}+{label} é.jpg" if index == 0 else f"{label}-{index}.jpg"
            last = folder / label / name
            draw_sample_image(label, rng, size=640).save(last, quality=90)
    hostile = folder / "hostile"
    hostile.mkdir(parents=True, exist_ok=True)
    (hostile / "not-a-photo.jpg").write_text("<!doctype html><html><body>hello</body></html>")
    (hostile / "empty.jpg").write_bytes(b"")
    whole = last.read_bytes()
    (hostile / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    return folder


def write_unsure_images(folder: Path, *, count: int = 16, seed: int = 11) -> Path:
    """Photos a model is unsure of, for the review queue (``--serve``): half-and-half blends of
    two products, and photos of no product at all (noise, a plain wall)."""
    rng = np.random.default_rng(seed)
    target = folder / "unsure"
    target.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        first, second = rng.choice(len(LABELS), size=2, replace=False)
        a = draw_sample_image(LABELS[first], rng, size=480)
        b = draw_sample_image(LABELS[second], rng, size=480)
        name = f"{LABELS[first]} or {LABELS[second]} {index}.jpg"
        Image.blend(a, b, 0.5).save(target / name, quality=90)
    noise = rng.integers(0, 256, size=(480, 480, 3), dtype=np.uint8)
    Image.fromarray(noise).save(target / "z no product - noise.jpg", quality=90)
    Image.new("RGB", (480, 480), (200, 190, 170)).save(target / "z no product - wall.jpg")
    return folder


# ------------------------------------------------------------------------------------ model ---


def resolve_model(
    argument: str | None, artifacts: Path = DEFAULT_ARTIFACTS
) -> tuple[str, str | None] | None:
    """``(MODEL_URI, MODEL_VERSION)`` for ``--model``, or ``None`` when there is nothing to run.

    Accepts a publish destination (folder with ``latest.json``), a version folder (with
    ``manifest.json``), a version name under ``./artifacts``, or an ``s3://`` location.
    """
    if argument is None:
        return (str(artifacts), None) if (artifacts / "latest.json").is_file() else None
    if argument.startswith("s3://"):
        return argument, None
    path = Path(argument)
    if (path / "latest.json").is_file():
        return str(path), None
    if (path / "manifest.json").is_file():
        return str(path.parent), path.name
    if (artifacts / argument / "manifest.json").is_file():
        return str(artifacts), argument
    return None


# ------------------------------------------------------------------------------------- main ---


def run_local_stack(
    images: Path,
    model_uri: str,
    model_version: str | None,
    hold: Callable[[str, Any, list[CatalogueItem]], None] | None = None,
) -> tuple[list[CatalogueItem], DrainStats, int, int]:
    """Upload ``images`` through a fresh local stack and drain it; returns the catalogue, the
    drain statistics, the number of uploads and the DLQ's depth. ``hold(endpoint, resources,
    items)``, when given, runs before the moto server stops (``--serve`` waits there)."""
    with environment_restored(), moto_server() as endpoint:
        point_boto3_at(endpoint)
        local = clients(endpoint)
        resources = create_local_resources(
            s3_client=local["s3"], sqs_client=local["sqs"], dynamodb_client=local["dynamodb"]
        )
        os.environ["CATALOGUE_TABLE"] = resources.table_name
        os.environ["MODEL_URI"] = model_uri
        if model_version:
            os.environ["MODEL_VERSION"] = model_version
        else:
            os.environ.pop("MODEL_VERSION", None)
        app.reset_worker()
        uploaded = upload_folder(local["s3"], resources.bucket, images)
        stats = drain_queue(
            local["sqs"],
            resources.queue_url,
            lambda event: app.lambda_handler(event, LocalContext()),
        )
        items = scan_items(local["dynamodb"], resources.table_name)
        dead = queue_depth(local["sqs"], resources.dead_letter_queue_url)
        if hold is not None:
            hold(endpoint, resources, items)
    return items, stats, uploaded, dead


def format_table(items: list[CatalogueItem]) -> str:
    header = ("STATUS", "CATEGORY", "CONF", "REASON", "MODEL", "KEY")
    rows = [
        (
            item.status.value,
            item.category or "-",
            f"{item.confidence:.2f}" if item.confidence is not None else "-",
            item.reason or "-",
            item.model_version,
            item.key,
        )
        for item in items
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + "  "
        + row[-1]
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local_stack", description="The local stack: the handler on moto."
    )
    parser.add_argument("--images", type=Path, help="folder of photos (default: generated samples)")
    parser.add_argument(
        "--model",
        help="publish destination, version folder, version or s3:// (default: ./artifacts)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per catalogue item instead of the table (default: off)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="keep the stack up until Ctrl-C, for `python -m review`; see local_stack.state "
        "(default: off)",
    )
    arguments = parser.parse_args(argv)

    model = resolve_model(arguments.model)
    if model is None:
        if arguments.model:
            print(f"No published model at {arguments.model!r}. {PUBLISH_HINT}", file=sys.stderr)
        else:
            print(PUBLISH_HINT, file=sys.stderr)
        return 2
    if arguments.images is not None and not arguments.images.is_dir():
        print(f"--images {arguments.images} is not a folder", file=sys.stderr)
        return 2

    os.environ.setdefault("LOG_LEVEL", "WARNING")

    app.logger.registered_handler.setStream(sys.stderr)  # type: ignore[attr-defined]

    # stdout carries only the catalogue; the handler's metric lines go to stderr with its logs.
    with (
        tempfile.TemporaryDirectory(prefix="momee-local-") as scratch,
        contextlib.redirect_stdout(sys.stderr),
    ):
        images = arguments.images or write_sample_images(Path(scratch) / "images")
        if arguments.serve and arguments.images is None:
            write_unsure_images(images)  # something for the review console to show
        hold = _serve(model[0], sys.__stdout__) if arguments.serve else None
        items, stats, uploaded, dead = run_local_stack(images, *model, hold=hold)

    if arguments.json:
        for item in items:
            print(json.dumps(item.to_json(), ensure_ascii=False))
    else:
        print(format_table(items))
        statuses = Counter(item.status.value for item in items)
        print(
            f"\n{uploaded} uploaded, {len(items)} catalogued items "
            f"({', '.join(f'{s} {n}' for s, n in sorted(statuses.items()))}); "
            f"{stats.batches} batches, {stats.returned} retried, {dead} in the DLQ; "
            f"{stats.seconds:.1f} s ({uploaded / max(stats.seconds, 1e-9):.1f} images/s)",
        )
    return 0 if dead == 0 and len(items) == uploaded else 1


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _serve(model_uri: str, stream: Any) -> Callable[[str, Any, list[CatalogueItem]], None]:
    """``--serve``: print the catalogue, say where the stack is, wait for Ctrl-C."""

    def hold(endpoint: str, resources: Any, items: list[CatalogueItem]) -> None:
        statuses = Counter(item.status.value for item in items)
        print(format_table(items), file=stream)
        path = write_state(
            LocalStackState(
                endpoint_url=endpoint,
                region=REGION,
                bucket=resources.bucket,
                table=resources.table_name,
                queue_url=resources.queue_url,
                model_uri=model_uri,
                pid=os.getpid(),
            )
        )
        counts = ", ".join(f"{status} {count}" for status, count in sorted(statuses.items()))
        print(
            f"\nThe local stack is up at {endpoint} ({counts}); its names are in {path}.\n"
            "Review what needs a person: `python -m review` in another terminal. Ctrl-C stops.",
            file=stream,
            flush=True,
        )
        signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as Ctrl-C does
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            remove_state(path)

    return hold


if __name__ == "__main__":
    sys.exit(main())

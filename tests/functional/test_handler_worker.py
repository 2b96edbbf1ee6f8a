"""The handler on moto (in-process): S3 → SQS notifications, real LiteRT inference on a tiny
published model, conditional DynamoDB writes, partial batch responses and cold-start failures."""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args
from urllib.parse import quote_plus

import boto3
import numpy as np
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.exceptions import ClientError
from moto import mock_aws
from PIL import Image

from contracts import catalogue_table
from contracts.catalogue import CatalogueItem, Status, event_order
from contracts.catalogue_table import read_item, scan_items
from handler import app
from handler.cold_start import build_worker
from handler.decode_pool import SAFETY_MARGIN_MB, _own_resident_bytes
from handler.events import records_from_s3_event
from handler.settings import ConfigurationError, load_settings
from handler.worker import Action, Deadline
from local_stack.resources import LocalResources, create_local_resources
from local_stack.stack import LocalContext, drain_queue, queue_depth
from operations.backfill import backfill
from sample_data.photos import LABELS, draw_sample_image
from tests.conftest import load_event
from tests.support.crafted_images import crafted_file
from tests.support.tiny_artifact import publish_tiny_artifact

pytestmark = pytest.mark.functional

# The tiny test model's calibrated confidences are about 0.07 (1/14): below this threshold
# everything is CATALOGUED; the REVIEW_THRESHOLD override test raises it.
TINY_REVIEW_THRESHOLD = 0.01


# ---------------------------------------------------------------------------------- images ---


def _encode(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def photo(label: str = "stroller", seed: int = 0, size: int = 320) -> Image.Image:
    return draw_sample_image(label, np.random.default_rng(seed), size=size)


def jpeg(label: str = "stroller", seed: int = 0) -> bytes:
    return _encode(photo(label, seed), "JPEG", quality=90)


def good_uploads() -> dict[str, bytes]:
    """Images every seller's phone or camera produces, in awkward modes, each decodable."""
    base = photo("bathtub", 1)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown: 320×200 stored, 200×320 seen
    frames = [photo("walkers", seed, 96) for seed in range(3)]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:], duration=90)
    sixteen_bit = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    return {
        "cmyk.jpg": _encode(base.convert("CMYK"), "JPEG"),
        "sixteen-bit.png": _encode(sixteen_bit, "PNG"),
        "palette.png": _encode(base.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "rgba.png": _encode(base.convert("RGBA"), "PNG"),
        "animated.gif": animated.getvalue(),
        "exif-rotated.jpg": _encode(base.resize((320, 200)), "JPEG", exif=exif),
        "iphone.heic": _encode(base, "HEIF"),
        "plain.webp": _encode(base, "WEBP"),
    }


def bad_uploads() -> dict[str, tuple[bytes, str]]:
    """Hostile uploads and the rejection reason each must get."""
    whole = jpeg("carrier", 2)
    return {
        "zero-bytes.jpg": (b"", "empty"),
        "page.jpg": (b"<!doctype html><html><body>not a photo</body></html>", "not_an_image"),
        "truncated.jpg": (whole[: len(whole) // 2], "corrupt"),
        "bomb.png": (_encode(Image.new("1", (10_000, 6_000)), "PNG"), "too_many_pixels"),
        "huge.jpg": (whole + b"\0" * (20 * 1024 * 1024), "too_large"),
    }


# ----------------------------------------------------------------------------------- stack ---


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    publish_tiny_artifact(root, review_threshold=TINY_REVIEW_THRESHOLD)
    return root


@dataclass
class Stack:
    s3: Any
    sqs: Any
    dynamodb: Any
    resources: LocalResources
    model_dir: Path

    @property
    def bucket(self) -> str:
        return self.resources.bucket

    def put(self, key: str, data: bytes) -> str:
        return self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)["ETag"].strip('"')

    def drain(self, **options: Any) -> Any:
        return drain_queue(self.sqs, self.resources.queue_url, invoke, **options)

    def items(self) -> dict[str, CatalogueItem]:
        return {item.key: item for item in scan_items(self.dynamodb, self.resources.table_name)}

    def item(self, key: str) -> CatalogueItem | None:
        return read_item(self.dynamodb, self.resources.table_name, self.bucket, key)

    def purge(self) -> None:
        """Drop what S3 announced so far (tests that build their own events start clean)."""
        while messages := self.sqs.receive_message(
            QueueUrl=self.resources.queue_url, MaxNumberOfMessages=10
        ).get("Messages"):
            for message in messages:
                self.sqs.delete_message(
                    QueueUrl=self.resources.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    return app.lambda_handler(event, LocalContext())


@pytest.fixture
def stack(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3, sqs, dynamodb = (boto3.client(name) for name in ("s3", "sqs", "dynamodb"))
        resources = create_local_resources(s3_client=s3, sqs_client=sqs, dynamodb_client=dynamodb)
        monkeypatch.setenv("CATALOGUE_TABLE", resources.table_name)
        monkeypatch.setenv("MODEL_URI", str(model_dir))
        app.reset_worker()
        yield Stack(s3, sqs, dynamodb, resources, model_dir)
        app.reset_worker()


def s3_record(
    bucket: str, key: str, *, name: str = "ObjectCreated:Put", sequencer: str, etag: str | None
) -> dict[str, Any]:
    """A record in S3's own shape (the template of events/s3_put.json), key encoded as S3 does."""
    record = load_event("s3_put.json")["Records"][0]
    record["eventName"] = name
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["object"] = {"key": quote_plus(key, safe="/"), "sequencer": sequencer}
    if etag is not None:
        record["s3"]["object"]["eTag"] = etag
    return record


def message_event(*bodies: dict[str, Any]) -> dict[str, Any]:
    """An SQS event with one message per body (the template of events/sqs_s3_put.json)."""
    template = load_event("sqs_s3_put.json")["Records"][0]
    records = []
    for index, body in enumerate(bodies):
        message = dict(template, body=json.dumps(body), messageId=f"message-{index}")
        records.append(message)
    return {"Records": records}


def assert_tombstone(stack: Stack, key: str) -> None:
    """The object was deleted: its item is a tombstone, which no listing shows."""
    item = stack.item(key)
    assert item is not None
    assert (item.status, item.category, item.expires_at is not None) == (
        Status.DELETED,
        None,
        True,
    )
    assert key not in stack.items()


def failed_ids(response: dict[str, Any]) -> list[str]:
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


# ----------------------------------------------------------------------------------- tests ---


def test_uploads_flow_from_s3_through_sqs_into_the_catalogue(stack: Stack) -> None:
    keys = {
        "uploads/stroller.jpg": jpeg("stroller", 0),
        "uploads/seller 42/baby bed (1).jpg": jpeg("baby_bed", 1),
        "uploads/seller-42/car seat+base.jpg": jpeg("baby_car_seat", 2),
        "uploads/女孩/kereta bayi été.jpg": jpeg("walkers", 3),
        "not-uploads/ignored.jpg": jpeg("walkers", 4),  # outside the notification's prefix
    }
    etags = {key: stack.put(key, data) for key, data in keys.items()}
    stats = stack.drain()
    assert stats.returned == 0
    items = stack.items()
    assert set(items) == {key for key in keys if key.startswith("uploads/")}
    version = json.loads((stack.model_dir / "latest.json").read_text())["version"]
    for key, item in items.items():
        assert item.status is Status.CATALOGUED
        assert item.category in LABELS
        assert item.top3[0].label == item.category
        assert len(item.top3) == 3
        assert item.top3[0].score >= item.top3[1].score >= item.top3[2].score
        assert item.confidence == item.top3[0].score
        assert (item.model_version, item.etag, item.size) == (version, etags[key], len(keys[key]))
        assert (item.width, item.height) == (320, 320)
        assert item.event_order.startswith("0:")  # moto sends no sequencer: event time order
    assert queue_depth(stack.sqs, stack.resources.queue_url) == 0


def test_every_bad_upload_is_rejected_without_affecting_the_rest(stack: Stack) -> None:
    good, bad = good_uploads(), bad_uploads()
    for name, data in good.items():
        stack.put(f"uploads/good/{name}", data)
    for name, (data, _reason) in bad.items():
        stack.put(f"uploads/bad/{name}", data)
    downloaded: list[str] = []
    worker = app.get_worker()
    worker.s3.meta.events.register(
        "before-parameter-build.s3.GetObject", lambda params, **_: downloaded.append(params["Key"])
    )
    stats = stack.drain()
    assert stats.returned == 0
    items = stack.items()
    for name in good:
        item = items[f"uploads/good/{name}"]
        assert (item.status, item.reason) == (Status.CATALOGUED, None), name
    for name, (_data, reason) in bad.items():
        item = items[f"uploads/bad/{name}"]
        assert (item.status, item.reason, item.category) == (Status.REJECTED, reason, None), name
    # EXIF orientation is applied: the catalogue records the size as a viewer shows it.
    rotated = items["uploads/good/exif-rotated.jpg"]
    assert (rotated.width, rotated.height) == (200, 320)
    # The oversized object was sized with HeadObject and never downloaded.
    assert "uploads/bad/huge.jpg" not in downloaded
    assert items["uploads/bad/huge.jpg"].size == len(bad["huge.jpg"][0])


def test_too_large_without_a_size_in_the_event_is_refused_from_the_headers(stack: Stack) -> None:
    key = "uploads/huge-no-size.jpg"
    data = jpeg() + b"\0" * (20 * 1024 * 1024)
    etag = stack.put(key, data)
    stack.purge()
    record = s3_record(stack.bucket, key, sequencer="01", etag=etag)  # no "size", as in backfills
    assert "size" not in record["s3"]["object"]
    assert failed_ids(invoke(message_event({"Records": [record]}))) == []
    item = stack.item(key)
    assert item is not None
    assert (item.status, item.reason, item.size) == (Status.REJECTED, "too_large", len(data))


def test_one_message_with_every_kind_of_upload_classifies_each_photo_once(stack: Stack) -> None:
    # Inference runs on what has been decoded since the last one (issue 17: writes never wait
    # for the slowest decode), so a batch may take several inferences, each photo in exactly one.
    uploads = {**good_uploads(), **{name: data for name, (data, _) in bad_uploads().items()}}
    records = []
    for index, (name, data) in enumerate(uploads.items()):
        etag = stack.put(f"uploads/{name}", data)
        records.append(
            s3_record(stack.bucket, f"uploads/{name}", sequencer=f"{index:02X}", etag=etag)
        )
    stack.purge()
    worker = app.get_worker()
    batch_sizes: list[int] = []
    predict = worker.classifier.predict
    worker.classifier.predict = lambda pixels: batch_sizes.append(len(pixels)) or predict(pixels)  # type: ignore[method-assign]
    try:
        response = invoke(message_event({"Records": records}))
    finally:
        worker.classifier.predict = predict  # type: ignore[method-assign]
    assert failed_ids(response) == []
    assert sum(batch_sizes) == len(good_uploads())
    statuses = {key.removeprefix("uploads/"): item.status for key, item in stack.items().items()}
    assert statuses == {
        **dict.fromkeys(good_uploads(), Status.CATALOGUED),
        **dict.fromkeys(bad_uploads(), Status.REJECTED),
    }


def test_real_multi_record_event_every_record_and_key_decoded(stack: Stack) -> None:
    event = load_event("sqs_s3_multi_record.json")
    bucket = "momee-uploads-example"  # the bucket the saved event names
    stack.s3.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    decoded = [
        "uploads/seller 42/baby bed (1).jpg",
        "uploads/seller-42/car seat+base.png",
        "uploads/女孩/kereta bayi été.heic",
    ]
    contents = [
        jpeg("baby_bed", 5),
        _encode(photo("carrier", 6), "PNG"),
        good_uploads()["iphone.heic"],
    ]
    etags = [
        stack.s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"].strip('"')
        for key, data in zip(decoded, contents, strict=True)
    ]
    stack.s3.put_object(Bucket=bucket, Key="uploads/seller-42/stroller.jpg", Body=jpeg())
    # The saved event carries the ETags and sizes of the photos it was recorded for; use ours.
    body = json.loads(event["Records"][0]["body"])
    for record, etag, data in zip(body["Records"], etags, contents, strict=True):
        record["s3"]["object"]["eTag"] = etag
        record["s3"]["object"]["size"] = len(data)
    event["Records"][0]["body"] = json.dumps(body)
    # The second message deletes an object that was catalogued before (a delete is newer).
    stack.s3.delete_object(Bucket=bucket, Key="uploads/seller-42/stroller.jpg")
    response = invoke(event)
    assert failed_ids(response) == []
    items = {item.key: item for item in scan_items(stack.dynamodb, stack.resources.table_name)}
    assert set(items) == set(decoded)
    assert all(item.status is Status.CATALOGUED for item in items.values())
    assert items[decoded[1]].sequencer == "0055AED6DCE5B0C2A7"


def test_test_event_is_skipped(stack: Stack) -> None:
    # create_local_resources configured the notification, so S3 already sent its TestEvent.
    stats = stack.drain()
    assert (stats.received, stats.deleted, stats.returned) == (1, 1, 0)
    assert invoke(load_event("sqs_s3_test_event.json")) == {"batchItemFailures": []}
    assert invoke(load_event("s3_test_event.json")) == {"processed": 0}
    assert stack.items() == {}


def test_duplicate_delivery_is_harmless(stack: Stack) -> None:
    key = "uploads/dup.jpg"
    etag = stack.put(key, jpeg())
    stack.purge()
    event = message_event({"Records": [s3_record(stack.bucket, key, sequencer="0A", etag=etag)]})
    assert failed_ids(invoke(event)) == []
    first = stack.item(key)
    assert failed_ids(invoke(event)) == []
    assert stack.item(key) == first  # not even processed_at changed


def test_out_of_order_events_keep_the_newest(stack: Stack) -> None:
    key = "uploads/out-of-order.jpg"
    old_etag = stack.put(key, jpeg("bathtub", 1))
    new_etag = stack.put(key, jpeg("stroller", 2))
    stack.purge()
    newer = s3_record(stack.bucket, key, sequencer="0B", etag=new_etag)
    older = s3_record(stack.bucket, key, sequencer="0A", etag=old_etag)
    assert failed_ids(invoke(message_event({"Records": [newer]}))) == []
    assert failed_ids(invoke(message_event({"Records": [older]}))) == []
    item = stack.item(key)
    assert item is not None
    assert (item.etag, item.sequencer) == (new_etag, "0B")
    # Even an older event for the very same bytes (re-upload of identical content) is stale.
    same_bytes_older = s3_record(stack.bucket, key, sequencer="09", etag=new_etag)
    assert failed_ids(invoke(message_event({"Records": [same_bytes_older]}))) == []
    assert stack.item(key) == item


def test_deletes_remove_items_unless_a_newer_upload_exists(stack: Stack) -> None:
    key = "uploads/deleted later.jpg"
    stack.put(key, jpeg())
    stack.drain()
    assert stack.item(key) is not None
    stack.s3.delete_object(Bucket=stack.bucket, Key=key)
    stack.drain()
    assert_tombstone(stack, key)

    # Out of order: the re-upload's event (0C) arrives before an older delete (0B) ...
    etag = stack.put(key, jpeg("walkers", 3))
    stack.purge()
    upload = s3_record(stack.bucket, key, sequencer="0C", etag=etag)
    delete = s3_record(stack.bucket, key, name="ObjectRemoved:Delete", sequencer="0B", etag=None)
    assert failed_ids(invoke(message_event({"Records": [upload]}, {"Records": [delete]}))) == []
    assert stack.item(key) is not None
    # ... and a create older than a delete, arriving after it, finds no object: no resurrection.
    stack.s3.delete_object(Bucket=stack.bucket, Key=key)
    stack.purge()
    late_delete = s3_record(
        stack.bucket, key, name="ObjectRemoved:Delete", sequencer="0E", etag=None
    )
    late_create = s3_record(stack.bucket, key, sequencer="0D", etag=etag)
    response = invoke(message_event({"Records": [late_delete]}, {"Records": [late_create]}))
    assert failed_ids(response) == []
    assert_tombstone(stack, key)


def test_delete_event_for_a_key_uploaded_again_keeps_the_item(stack: Stack) -> None:
    key = "uploads/again.jpg"
    first = stack.put(key, jpeg("bathtub", 1))
    stack.purge()
    assert (
        failed_ids(
            invoke(
                message_event(
                    {"Records": [s3_record(stack.bucket, key, sequencer="0A", etag=first)]}
                )
            )
        )
        == []
    )
    stack.s3.delete_object(Bucket=stack.bucket, Key=key)
    second = stack.put(key, jpeg("stroller", 2))
    stack.purge()
    # The delete (0B) is newer than the stored item (0A) but the key exists again: kept ...
    delete = s3_record(stack.bucket, key, name="ObjectRemoved:Delete", sequencer="0B", etag=None)
    assert failed_ids(invoke(message_event({"Records": [delete]}))) == []
    assert stack.item(key) is not None
    # ... and the re-upload's own event then describes it.
    upload = s3_record(stack.bucket, key, sequencer="0C", etag=second)
    assert failed_ids(invoke(message_event({"Records": [upload]}))) == []
    item = stack.item(key)
    assert item is not None
    assert item.etag == second


def test_tied_event_times_without_sequencer_delete_wins_when_gone(stack: Stack) -> None:
    key = "uploads/tie.jpg"
    etag = stack.put(key, jpeg())
    stack.purge()
    moment = "2026-11-24T01:25:01.120Z"
    create = s3_record(stack.bucket, key, sequencer="00", etag=etag)
    delete = s3_record(stack.bucket, key, name="ObjectRemoved:Delete", sequencer="00", etag=None)
    for record in (create, delete):
        del record["s3"]["object"]["sequencer"]  # as moto sends them: event time only
        record["eventTime"] = moment
    assert failed_ids(invoke(message_event({"Records": [create]}))) == []
    assert stack.item(key) is not None
    stack.s3.delete_object(Bucket=stack.bucket, Key=key)
    stack.purge()
    assert failed_ids(invoke(message_event({"Records": [delete]}))) == []
    assert_tombstone(stack, key)


def _raise_for(key: str, operation: str, code: str, status: int) -> Any:
    def hook(params: dict[str, Any], **_: Any) -> None:
        target = params["Key"]
        target = target["object_id"]["S"].split("/", 1)[1] if isinstance(target, dict) else target
        if target == key:
            raise ClientError(
                {
                    "Error": {"Code": code, "Message": "injected"},
                    "ResponseMetadata": {"HTTPStatusCode": status},
                },
                operation,
            )

    return hook


def test_throttled_write_fails_exactly_that_message(stack: Stack) -> None:
    keys = [f"uploads/throttle-{index}.jpg" for index in range(4)]
    bodies = []
    for index, key in enumerate(keys):
        etag = stack.put(key, jpeg(LABELS[index], index))
        bodies.append({"Records": [s3_record(stack.bucket, key, sequencer=f"1{index}", etag=etag)]})
    stack.purge()
    worker = app.get_worker()
    hook = _raise_for(keys[2], "UpdateItem", "ProvisionedThroughputExceededException", 400)
    worker.dynamodb.meta.events.register("before-parameter-build.dynamodb.UpdateItem", hook)
    event = message_event(*bodies)
    response = invoke(event)
    assert failed_ids(response) == ["message-2"]
    assert set(stack.items()) == {keys[0], keys[1], keys[3]}
    # The redelivery succeeds once DynamoDB has capacity again; the others are no-ops.
    worker.dynamodb.meta.events.unregister("before-parameter-build.dynamodb.UpdateItem", hook)
    assert failed_ids(invoke(event)) == []
    assert set(stack.items()) == set(keys)


def test_s3_server_error_on_one_record_of_a_multi_record_message(stack: Stack) -> None:
    keys = ["uploads/a.jpg", "uploads/b.jpg", "uploads/c.jpg"]
    records = [
        s3_record(stack.bucket, key, sequencer=f"2{i}", etag=stack.put(key, jpeg(seed=i)))
        for i, key in enumerate(keys)
    ]
    stack.purge()
    worker = app.get_worker()
    worker.s3.meta.events.register(
        "before-parameter-build.s3.GetObject",
        _raise_for("uploads/b.jpg", "GetObject", "InternalError", 500),
    )
    event = message_event({"Records": records[:2]}, {"Records": records[2:]})
    response = invoke(event)
    # The batch item SQS knows is the message: the one holding b.jpg comes back whole; its a.jpg
    # was written and is a harmless no-op on redelivery.
    assert failed_ids(response) == ["message-0"]
    assert set(stack.items()) == {"uploads/a.jpg", "uploads/c.jpg"}


def test_failed_messages_reach_the_dead_letter_queue(stack: Stack) -> None:
    stack.put("uploads/doomed.jpg", jpeg())
    worker = app.get_worker()
    worker.dynamodb.meta.events.register(
        "before-parameter-build.dynamodb.UpdateItem",
        _raise_for("uploads/doomed.jpg", "UpdateItem", "InternalServerError", 500),
    )
    # (A batch whose every record failed fails the invocation, as Lambda sees it: see below.)
    stats = stack.drain(handler_errors_are_failures=True)
    assert stats.returned == 5  # the template's maxReceiveCount
    assert queue_depth(stack.sqs, stack.resources.dead_letter_queue_url) == 1
    assert stack.items() == {}


def test_malformed_message_fails_alone(stack: Stack) -> None:
    key = "uploads/fine.jpg"
    etag = stack.put(key, jpeg())
    stack.purge()
    event = message_event({"Records": [s3_record(stack.bucket, key, sequencer="01", etag=etag)]})
    event["Records"].append(dict(event["Records"][0], messageId="garbage", body="{not json"))
    assert failed_ids(invoke(event)) == ["garbage"]
    assert stack.item(key) is not None


def test_direct_s3_invocation(stack: Stack) -> None:
    event = load_event("s3_put.json")
    key = "uploads/seller-42/stroller.jpg"
    record = event["Records"][0]
    record["s3"]["bucket"]["name"] = stack.bucket
    record["s3"]["object"]["eTag"] = stack.put(key, jpeg())
    assert invoke(event) == {"processed": 1}
    item = stack.item(key)
    assert item is not None
    assert item.sequencer == "0055AED6DCD90281E5"
    # A failure in a direct invocation fails it, so Lambda's asynchronous retry applies.
    app.get_worker().dynamodb.meta.events.register(
        "before-parameter-build.dynamodb.UpdateItem",  # the delete's tombstone
        _raise_for(key, "UpdateItem", "ThrottlingException", 400),
    )
    stack.s3.delete_object(Bucket=stack.bucket, Key=key)
    delete = load_event("s3_delete.json")
    delete["Records"][0]["s3"]["bucket"]["name"] = stack.bucket
    with pytest.raises(app.RecordsFailed):
        invoke(delete)


def test_review_threshold_override_and_int8_variant(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REVIEW_THRESHOLD", "0.99")
    monkeypatch.setenv("MODEL_VARIANT", "int8")
    app.reset_worker()
    stack.put("uploads/unsure.jpg", jpeg())
    stack.drain()
    item = stack.item("uploads/unsure.jpg")
    assert item is not None
    assert item.status is Status.NEEDS_REVIEW
    assert item.confidence is not None
    assert item.confidence < 0.99
    assert item.category in LABELS
    # The override is no certified threshold: the item says so (issue 19).
    assert item.uncertified_threshold == 0.99

    monkeypatch.delenv("REVIEW_THRESHOLD")
    app.reset_worker()
    stack.put("uploads/certified.jpg", jpeg())
    stack.drain()
    certified = stack.item("uploads/certified.jpg")
    assert certified is not None
    assert certified.uncertified_threshold is None


def test_backfill_recatalogues_with_a_new_model(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_version = publish_tiny_artifact(tmp_path, review_threshold=TINY_REVIEW_THRESHOLD)
    monkeypatch.setenv("MODEL_URI", str(tmp_path))
    app.reset_worker()
    keys = [f"uploads/backfill/{index}.jpg" for index in range(12)]
    for index, key in enumerate(keys):
        stack.put(key, jpeg(LABELS[index], index))
    stack.drain()
    assert {item.model_version for item in stack.items().values()} == {old_version}

    new_version = publish_tiny_artifact(tmp_path, review_threshold=TINY_REVIEW_THRESHOLD)
    app.reset_worker()  # a new container with the new model
    arguments = {
        "s3_client": stack.s3,
        "sqs_client": stack.sqs,
        "dynamodb_client": stack.dynamodb,
        "bucket": stack.bucket,
        "queue_url": stack.resources.queue_url,
        "table": stack.resources.table_name,
        "model_version": new_version,
    }
    stats = backfill(**arguments)
    assert (stats.listed, stats.enqueued) == (12, 12)
    assert stack.drain().returned == 0
    items = stack.items()
    assert set(items) == set(keys)
    assert {item.model_version for item in items.values()} == {new_version}
    # The stored event order is kept, so later real events still compare correctly.
    assert all(item.event_order.startswith("0:") for item in items.values())
    assert backfill(**arguments).enqueued == 0  # nothing stale any more


# ------------------------------------------------------------------------------ cold start ---


def _with_messages(stack: Stack) -> int:
    stack.put("uploads/waiting.jpg", jpeg())
    return queue_depth(stack.sqs, stack.resources.queue_url)


def test_corrupted_model_file_fails_cold_start_clearly(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = publish_tiny_artifact(tmp_path)
    model = tmp_path / version / "model.tflite"
    model.write_bytes(model.read_bytes()[:1000])
    monkeypatch.setenv("MODEL_URI", str(tmp_path))
    waiting = _with_messages(stack)
    with pytest.raises(
        ConfigurationError, match=r"cannot load the model \(MODEL_URI=.*model\.tflite"
    ):
        stack.drain()
    assert stack.items() == {}
    # The batch was received but not deleted: it comes back after the visibility timeout.
    assert queue_depth(stack.sqs, stack.resources.queue_url) == waiting


def test_unreadable_model_that_matches_its_manifest_fails_cold_start_clearly(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = publish_tiny_artifact(tmp_path)
    directory = tmp_path / version
    garbage = b"this is not a flatbuffer" * 100
    (directory / "model.tflite").write_bytes(garbage)
    manifest = json.loads((directory / "manifest.json").read_text())

    manifest["files"]["model.tflite"] = {
        "sha256": hashlib.sha256(garbage).hexdigest(),
        "bytes": len(garbage),
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("MODEL_URI", str(tmp_path))
    with pytest.raises(ConfigurationError, match="cannot open the model"):
        invoke(load_event("sqs_s3_put.json"))


def test_missing_table_fails_cold_start_clearly(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CATALOGUE_TABLE", "no-such-table")
    with pytest.raises(ConfigurationError, match="CATALOGUE_TABLE=no-such-table: no such"):
        invoke(load_event("sqs_s3_put.json"))


def test_bad_settings_fail_cold_start_clearly(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_IMAGE_BYTES", "lots")
    monkeypatch.delenv("MODEL_URI")
    with pytest.raises(
        ConfigurationError, match=r"invalid worker settings: MODEL_URI: .*MAX_IMAGE_BYTES"
    ):
        invoke(load_event("sqs_s3_put.json"))
    # The error is not cached: fixing the environment fixes the next invocation.
    monkeypatch.setenv("MAX_IMAGE_BYTES", str(20 * 1024 * 1024))
    monkeypatch.setenv("MODEL_URI", str(stack.model_dir))
    assert invoke(load_event("sqs_s3_test_event.json")) == {"batchItemFailures": []}


# ------------------------------------------------------------------ issue 9: hostile messages ---


def test_malformed_messages_fail_alone_whatever_breaks_in_them(stack: Stack) -> None:
    # GIVEN a batch mixing good messages with messages that break the parser in different ways
    good_keys = ["uploads/good-0.jpg", "uploads/good-1.jpg"]
    bodies = [
        {"Records": [s3_record(stack.bucket, key, sequencer=f"0{i}", etag=stack.put(key, jpeg()))]}
        for i, key in enumerate(good_keys)
    ]
    stack.purge()
    event = message_event(*bodies)
    template = event["Records"][0]
    numeric_sequencer = s3_record(stack.bucket, "uploads/n.jpg", sequencer="01", etag=None)
    numeric_sequencer["s3"]["object"]["sequencer"] = 1234  # a number, not a hex string
    infinite_size = json.dumps(
        {"Records": [s3_record(stack.bucket, "uploads/i.jpg", sequencer="01", etag=None)]}
    )
    infinite_size = infinite_size.replace('"sequencer": "01"', '"sequencer": "01", "size": 1e999')
    hostile = {
        "numeric-sequencer": json.dumps({"Records": [numeric_sequencer]}),
        "infinite-size": infinite_size,  # json.loads gives float("inf"); int() of it overflows
        "deeply-nested": "[" * 100_000 + "]" * 100_000,  # json.loads raises RecursionError
        "records-not-objects": json.dumps({"Records": ["x", 1]}),
    }
    event["Records"][1:1] = [
        dict(template, messageId=message_id, body=body) for message_id, body in hostile.items()
    ]
    # WHEN the handler gets it
    response = invoke(event)
    # THEN only the malformed messages fail (SQS retries them, then the DLQ keeps them) ...
    assert sorted(failed_ids(response)) == sorted(hostile)
    # ... and the good ones are catalogued
    assert set(stack.items()) == set(good_keys)


# ---------------------------------------------------------- issue 9: ordering semantics (S3) ---


def _second_worker() -> Any:
    """Another container's worker: same settings, its own clients (so hooks stay apart)."""
    return build_worker(
        load_settings(), s3_client=boto3.client("s3"), dynamodb_client=boto3.client("dynamodb")
    )


def _records(body: dict[str, Any]) -> list[Any]:
    return records_from_s3_event(body)


def listed(stack: Stack, category: str | None) -> list[str]:
    """What buyers see in a category (the by_category index)."""
    response = stack.dynamodb.query(
        TableName=stack.resources.table_name,
        IndexName="by_category",
        KeyConditionExpression="listing_category = :c",
        ExpressionAttributeValues={":c": {"S": str(category)}},
    )
    return [raw["key"]["S"] for raw in response["Items"]]


def test_create_read_before_a_delete_but_written_after_it_cannot_resurrect(stack: Stack) -> None:
    # GIVEN an upload and its delete, whose events two containers process at the same time
    key = "uploads/raced.jpg"
    etag = stack.put(key, jpeg())
    stack.purge()
    create = _records({"Records": [s3_record(stack.bucket, key, sequencer="0A", etag=etag)]})
    delete = _records(
        {
            "Records": [
                s3_record(stack.bucket, key, name="ObjectRemoved:Delete", sequencer="0B", etag=None)
            ]
        }
    )
    worker_a, worker_b = app.get_worker(), _second_worker()
    interleaved: list[str] = []

    def delete_meanwhile(**_: Any) -> None:
        # Worker A has read the object; now the seller deletes it and worker B handles the delete
        # before A writes its result.
        if interleaved:
            return
        stack.s3.delete_object(Bucket=stack.bucket, Key=key)
        (result,) = worker_b.process(delete)
        interleaved.append(result.outcome.action)

    worker_a.s3.meta.events.register("after-call.s3.GetObject", delete_meanwhile)
    try:
        # WHEN worker A finishes the create after worker B's delete
        (created,) = worker_a.process(create)
    finally:
        worker_a.s3.meta.events.unregister("after-call.s3.GetObject", delete_meanwhile)
        worker_b.close()
    assert len(interleaved) == 1  # the race really happened in this order
    # THEN the photo stays deleted: a tombstone with the delete's order holds the key ...
    assert created.error is None
    assert created.outcome is not None
    assert created.outcome.action == "stale"
    item = stack.item(key)
    assert item is not None
    assert item.status is Status.DELETED
    assert item.event_order == delete[0].order
    # ... which buyers' listings, the review queue and the local stack's printout never show.
    assert all(key not in listed(stack, label) for label in LABELS)
    assert key not in stack.items()


def test_one_notification_for_two_quick_puts_catalogues_what_is_there(stack: Stack) -> None:
    # GIVEN two quick PUTs to one key of an unversioned bucket, of which S3 announced only the
    # first ("If two writes are made to a single non-versioned object at the same time, it is
    # possible that only a single event notification will be sent." - Amazon S3 User Guide)
    key = "uploads/twice.jpg"
    first = stack.put(key, jpeg("bathtub", 1))
    second = stack.put(key, jpeg("stroller", 2))
    stack.purge()
    only = s3_record(stack.bucket, key, sequencer="0A", etag=first)
    # WHEN the worker gets that one event (GetObject IfMatch the first ETag answers 412)
    assert failed_ids(invoke(message_event({"Records": [only]}))) == []
    # THEN what is in S3 now is catalogued, under the event's own order ...
    item = stack.item(key)
    assert item is not None
    assert item.status is Status.CATALOGUED
    assert (item.etag, item.event_order) == (second, event_order("0A", None))
    # ... so a redelivery of that event is a no-op and any genuinely newer event still wins.
    assert failed_ids(invoke(message_event({"Records": [only]}))) == []
    assert stack.item(key) == item
    third = stack.put(key, jpeg("walkers", 3))
    newer = s3_record(stack.bucket, key, sequencer="0B", etag=third)
    assert failed_ids(invoke(message_event({"Records": [newer]}))) == []
    latest = stack.item(key)
    assert latest is not None
    assert (latest.etag, latest.event_order) == (third, event_order("0B", None))
    # An older event arriving late reads the newest bytes too, and is stale.
    assert failed_ids(invoke(message_event({"Records": [only]}))) == []
    assert stack.item(key) == latest


def test_archived_object_is_rejected_not_retried(stack: Stack) -> None:
    # GIVEN an object in an archive storage class: GetObject answers 403 InvalidObjectState until
    # someone restores it, so five retries can only fill the DLQ
    key = "uploads/archived.jpg"
    etag = stack.s3.put_object(Bucket=stack.bucket, Key=key, Body=jpeg(), StorageClass="GLACIER")
    stack.purge()
    record = s3_record(stack.bucket, key, sequencer="0A", etag=etag["ETag"].strip('"'))
    # WHEN its event is processed
    response = invoke(message_event({"Records": [record]}))
    # THEN it becomes a REJECTED item with a reason, and the message is done
    assert failed_ids(response) == []
    item = stack.item(key)
    assert item is not None
    assert (item.status, item.reason, item.category) == (Status.REJECTED, "archived", None)


def _sse_c_refusal(params: dict[str, Any], **_: Any) -> None:
    raise ClientError(
        {
            "Error": {
                "Code": "InvalidRequest",
                "Message": "The object was stored using a form of Server Side Encryption. The"
                " correct parameters must be provided to retrieve the object.",
            },
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "GetObject",
    )


def test_object_encrypted_with_a_customer_key_is_rejected_not_retried(stack: Stack) -> None:
    # GIVEN an object uploaded with SSE-C (moto does not enforce SSE-C: S3's answer is injected)
    key = "uploads/sse-c.jpg"
    etag = stack.put(key, jpeg())
    stack.purge()
    worker = app.get_worker()
    worker.s3.meta.events.register("before-parameter-build.s3.GetObject", _sse_c_refusal)
    record = s3_record(stack.bucket, key, sequencer="0A", etag=etag)
    # WHEN its event is processed
    response = invoke(message_event({"Records": [record]}))
    # THEN it is REJECTED ("encrypted"): the worker never holds the seller's key
    assert failed_ids(response) == []
    item = stack.item(key)
    assert item is not None
    assert (item.status, item.reason) == (Status.REJECTED, "encrypted")


def test_oversized_sse_c_object_is_rejected_too(stack: Stack) -> None:
    # Too large by the event's size, the object is only sized with HeadObject, whose SSE-C answer
    # is a bare 400 (a HEAD response has no body): the worker asks GetObject for the reason.
    key = "uploads/sse-c-huge.jpg"
    etag = stack.put(key, jpeg())
    stack.purge()
    worker = app.get_worker()
    worker.s3.meta.events.register(
        "before-parameter-build.s3.HeadObject", _raise_for(key, "HeadObject", "400", 400)
    )
    worker.s3.meta.events.register("before-parameter-build.s3.GetObject", _sse_c_refusal)
    record = s3_record(stack.bucket, key, sequencer="0A", etag=etag)
    record["s3"]["object"]["size"] = 21 * 1024 * 1024
    assert failed_ids(invoke(message_event({"Records": [record]}))) == []
    item = stack.item(key)
    assert item is not None
    assert (item.status, item.reason) == (Status.REJECTED, "encrypted")


def test_access_denied_is_retried_not_rejected(stack: Stack) -> None:
    # A 403 AccessDenied is a configuration fault (role, bucket policy, KMS key policy) that an
    # operator fixes; rejecting would mark good photos REJECTED for good. It stays a retry.
    key, fine = "uploads/denied.jpg", "uploads/fine.jpg"
    bodies = [
        {"Records": [s3_record(stack.bucket, name, sequencer="0A", etag=stack.put(name, jpeg()))]}
        for name in (key, fine)
    ]
    stack.purge()
    app.get_worker().s3.meta.events.register(
        "before-parameter-build.s3.GetObject", _raise_for(key, "GetObject", "AccessDenied", 403)
    )
    assert failed_ids(invoke(message_event(*bodies))) == ["message-0"]
    assert stack.item(key) is None
    assert stack.item(fine) is not None


@dataclass(frozen=True)
class ShortContext(LocalContext):
    """A Lambda context whose invocation has ``remaining_ms`` left (the real one counts down)."""

    remaining_ms: int = 60_000

    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]
        return self.remaining_ms


def test_records_not_reached_by_the_deadline_fail_alone(stack: Stack) -> None:
    # GIVEN a batch where one file decodes slowly (a JPEG padded with millions of fill bytes,
    # which Pillow walks one at a time) and the invocation has little time left
    keys = [f"uploads/deadline-{index}.jpg" for index in range(4)]
    slow_bytes = crafted_file("jpeg-fill-bytes", scale=0.5)
    bodies = []
    for index, key in enumerate(keys):
        data = slow_bytes if index == 1 else jpeg(LABELS[index], index)
        etag = stack.put(key, data)
        bodies.append({"Records": [s3_record(stack.bucket, key, sequencer=f"0{index}", etag=etag)]})
    stack.purge()
    worker = app.get_worker()  # the container is warm
    decoders = set(worker.decoders.pids)
    budget_ms = 2500  # 20 % kept back for inference and writes: 2 s to fetch and decode
    # WHEN the handler runs
    started = time.monotonic()
    response = app.lambda_handler(message_event(*bodies), ShortContext(remaining_ms=budget_ms))
    elapsed = time.monotonic() - started
    # THEN it returns in time, the slow record's message is reported for retry, the rest are done
    assert elapsed < budget_ms / 1000
    assert failed_ids(response) == ["message-1"]
    assert set(stack.items()) == {keys[0], keys[2], keys[3]}
    # AND the slow decode did not outlive the invocation: its decoder was killed and replaced
    for _ in range(100):
        if len(decoders - set(worker.decoders.pids)) == 1:
            break
        time.sleep(0.1)
    assert len(decoders - set(worker.decoders.pids)) == 1
    assert len(worker.decoders.pids) == len(decoders)


def test_deadline_leaves_most_of_a_short_timeout_for_the_work() -> None:
    for remaining_s, fetch_s, write_s in ((60, 50, 57), (10, 8, 9.5)):
        start = time.monotonic()
        deadline = Deadline.from_remaining(remaining_s * 1000)
        assert deadline.fetch_by - start == pytest.approx(fetch_s, abs=0.05)
        assert deadline.write_by - start == pytest.approx(write_s, abs=0.05)


# --------------------------------------------------------- issue 9: what operators must see ---


def test_every_outcome_has_a_metric() -> None:
    assert set(get_args(Action)) == set(app.OUTCOME_METRICS)
    assert len(set(app.OUTCOME_METRICS.values())) == len(app.OUTCOME_METRICS)


def test_outcomes_are_counted_in_metrics(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a batch with a missing object, a re-uploaded key's old delete, an ignored event kind,
    # a replaced object, a delete, a malformed message and a record that fails
    counted: dict[str, float] = {}

    def add_metric(name: str, unit: Any, value: float) -> None:
        counted[name] = counted.get(name, 0) + value

    monkeypatch.setattr(app.metrics, "add_metric", add_metric)
    missing = s3_record(stack.bucket, "uploads/never-there.jpg", sequencer="0A", etag="e")
    again = "uploads/again.jpg"
    stack.put(again, jpeg())
    recreated = s3_record(
        stack.bucket, again, name="ObjectRemoved:Delete", sequencer="0A", etag=None
    )
    ignored = s3_record(
        stack.bucket, again, name="ObjectRestore:Completed", sequencer="0A", etag="e"
    )
    replaced_key = "uploads/replaced.jpg"
    old = stack.put(replaced_key, jpeg("bathtub", 1))
    stack.put(replaced_key, jpeg("walkers", 2))
    replaced = s3_record(stack.bucket, replaced_key, sequencer="0A", etag=old)
    gone = s3_record(
        stack.bucket, "uploads/gone.jpg", name="ObjectRemoved:Delete", sequencer="0A", etag=None
    )
    failing_key = "uploads/failing.jpg"
    failing = s3_record(
        stack.bucket, failing_key, sequencer="0A", etag=stack.put(failing_key, jpeg())
    )
    stack.purge()
    app.get_worker().dynamodb.meta.events.register(
        "before-parameter-build.dynamodb.UpdateItem",
        _raise_for(failing_key, "UpdateItem", "InternalServerError", 500),
    )
    event = message_event(
        {"Records": [missing, recreated, ignored, replaced, gone]}, {"Records": [failing]}
    )
    event["Records"].append(dict(event["Records"][0], messageId="garbage", body="{"))
    # WHEN it is handled
    assert sorted(failed_ids(invoke(event))) == ["garbage", "message-1"]
    # THEN every outcome moved its metric
    expected = {
        "ObjectMissing": 1,
        "ObjectRecreated": 1,
        "Ignored": 1,
        "ObjectReplaced": 1,
        "Catalogued": 1,
        "Tombstoned": 1,
        "FailedRecords": 1,
        "MalformedMessages": 1,
    }
    assert {name: counted.get(name) for name in expected} == expected


def test_a_batch_that_fails_entirely_fails_the_invocation(stack: Stack) -> None:
    # Powertools' default, restored: an entirely failed batch raises, so Lambda's Errors metric
    # (FunctionErrorsAlarm) sees an outage; SQS retries every message either way.

    key = "uploads/outage.jpg"
    etag = stack.put(key, jpeg())
    stack.purge()
    app.get_worker().dynamodb.meta.events.register(
        "before-parameter-build.dynamodb.UpdateItem",
        _raise_for(key, "UpdateItem", "InternalServerError", 500),
    )
    event = message_event({"Records": [s3_record(stack.bucket, key, sequencer="0A", etag=etag)]})
    event["Records"].append(dict(event["Records"][0], messageId="garbage", body="{"))
    with pytest.raises(BatchProcessingError):
        invoke(event)


def test_failed_cold_start_moves_messages_to_the_dlq_and_a_redrive_catalogues_them(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the docs promise for a cold start that fails (bad model, missing table): every
    # invocation fails, so each receive counts; after maxReceiveCount (5) the messages are in
    # the DLQ (about an hour on AWS, visibility timeout 730 s), nothing is written, and once the
    # configuration is fixed a redrive catalogues them.
    keys = [f"uploads/cold-{index}.jpg" for index in range(3)]
    stack.drain()  # S3's TestEvent
    for key in keys:
        stack.put(key, jpeg())
    monkeypatch.setenv("CATALOGUE_TABLE", "no-such-table")
    app.reset_worker()
    stats = stack.drain(handler_errors_are_failures=True)
    assert stats.handler_errors == stats.batches >= 5
    assert queue_depth(stack.sqs, stack.resources.queue_url) == 0
    assert queue_depth(stack.sqs, stack.resources.dead_letter_queue_url) == len(keys)
    assert stack.items() == {}
    # Fixed; the operator moves the DLQ back (sqs start-message-move-task, done by hand here:
    # moto has no move tasks).
    monkeypatch.setenv("CATALOGUE_TABLE", stack.resources.table_name)
    app.reset_worker()
    dlq = stack.resources.dead_letter_queue_url
    while messages := stack.sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get(
        "Messages"
    ):
        for message in messages:
            stack.sqs.send_message(QueueUrl=stack.resources.queue_url, MessageBody=message["Body"])
            stack.sqs.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])
    assert stack.drain().returned == 0
    assert set(stack.items()) == set(keys)


# ------------------------------------------- issue 17: a crafted upload only fails itself ---


def _delivered(event: dict[str, Any], receive_count: int) -> dict[str, Any]:
    """``event`` as SQS hands it over for the ``receive_count``-th time."""
    for message in event["Records"]:
        message["attributes"] = dict(
            message.get("attributes", {}), ApproximateReceiveCount=str(receive_count)
        )
    return event


def test_a_file_always_too_slow_is_rejected_on_its_second_receive_never_the_dlq(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a 1 KB RLE bitmap that costs seconds of CPU, a photo, and a 1 s per-file deadline
    monkeypatch.setenv("DECODE_SECONDS", "1")
    app.reset_worker()
    stack.drain()  # S3's TestEvent
    slow, photo_key = "uploads/slow.bmp", "uploads/photo.jpg"
    stack.put(slow, crafted_file("bmp-rle-lines"))
    stack.put(photo_key, jpeg())
    # WHEN the queue is drained as Lambda's poller does
    stats = stack.drain()
    # THEN the photo is catalogued at once, the slow file comes back once and is then REJECTED
    items = stack.items()
    assert items[photo_key].status is Status.CATALOGUED
    assert (items[slow].status, items[slow].reason) == (Status.REJECTED, "too_slow_to_decode")
    assert stats.returned == 1
    assert queue_depth(stack.sqs, stack.resources.dead_letter_queue_url) == 0


@pytest.mark.heavy
def test_a_file_killed_for_memory_twice_is_rejected_in_its_first_invocation(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a function whose decode budget is small (what this test process holds + ~200 MB),
    # a JPEG whose millions of empty segments take ~300 MB to open, and a photo
    held_mb = _own_resident_bytes() // 2**20
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", str(held_mb + SAFETY_MARGIN_MB + 320))
    monkeypatch.setenv("DECODE_SECONDS", "60")
    app.reset_worker()
    keys = {"uploads/segments.jpg": crafted_file("jpeg-empty-segments", scale=0.5)}
    keys["uploads/photo.jpg"] = jpeg()
    bodies = []
    for index, (key, data) in enumerate(keys.items()):
        etag = stack.put(key, data)
        bodies.append({"Records": [s3_record(stack.bucket, key, sequencer=f"0{index}", etag=etag)]})
    stack.purge()
    counted: dict[str, float] = {}

    def add_metric(name: str, unit: Any, value: float) -> None:
        counted[name] = counted.get(name, 0) + value

    monkeypatch.setattr(app.metrics, "add_metric", add_metric)
    # WHEN one invocation handles them
    response = invoke(message_event(*bodies))
    # THEN nothing comes back: the file was tried beside the photo, then alone, then REJECTED
    assert failed_ids(response) == []
    # AND both kills show up at once, as their own metric
    assert counted["DecoderKilledForMemory"] == 2
    assert counted["DecoderKilledForTime"] == 0
    items = stack.items()
    assert (items["uploads/segments.jpg"].status, items["uploads/segments.jpg"].reason) == (
        Status.REJECTED,
        "too_large_to_decode",
    )
    assert items["uploads/photo.jpg"].status is Status.CATALOGUED


class _ProcessDied(BaseException):
    """Stands for the death of the whole function process (nothing after it runs)."""


def test_a_file_that_kills_the_whole_process_is_blamed_on_a_later_receive(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a batch that killed the whole process on its first receive (no record of it), a
    # deadly file in one message and an ordinary photo in another
    deadly_key, photo_key = "uploads/deadly.jpg", "uploads/fine.jpg"
    deadly = jpeg("bathtub", 7)
    bodies = [
        {"Records": [s3_record(stack.bucket, key, sequencer="0A", etag=stack.put(key, data))]}
        for key, data in ((deadly_key, deadly), (photo_key, jpeg("walkers", 8)))
    ]
    stack.purge()
    worker = app.get_worker()
    real_decode = worker.decoders.decode
    alone: list[bool] = []

    def decode(data: bytes, **options: Any) -> Any:
        if data == deadly:
            alone.append(options["exclusive"])
            if options.get("on_start") is not None:
                options["on_start"]()  # the decoder is this file's now
            raise _ProcessDied  # the container dies while this file decodes
        return real_decode(data, **options)

    monkeypatch.setattr(worker.decoders, "decode", decode)
    # WHEN SQS delivers it again, and the process dies again each time the file decodes
    for receive_count in (2, 3):
        with pytest.raises(_ProcessDied):
            invoke(_delivered(message_event(*bodies), receive_count))
    # THEN on the next receive the file is REJECTED without being decoded again, and the batch
    # succeeds: two attempts, each alone, so the deaths were this file's and no other's
    response = invoke(_delivered(message_event(*bodies), 4))
    assert failed_ids(response) == []
    assert alone == [True, True]
    item = stack.item(deadly_key)
    assert item is not None
    assert (item.status, item.reason) == (Status.REJECTED, "too_large_to_decode")
    assert stack.item(photo_key).status is Status.CATALOGUED  # type: ignore[union-attr]
    # AND the attempt records never show up as catalogue items
    assert set(stack.items()) == {deadly_key, photo_key}


@pytest.mark.heavy
def test_a_photo_is_written_while_a_slow_file_still_decodes(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a slow but valid JPEG (millions of fill bytes before its frame) and a photo, with a
    # per-file deadline the slow file stays well inside even on a busy machine
    monkeypatch.setenv("DECODE_SECONDS", "300")
    app.reset_worker()
    keys = {"uploads/slow.jpg": crafted_file("jpeg-fill-bytes", scale=0.4)}
    keys["uploads/quick.jpg"] = jpeg()
    bodies = []
    for index, (key, data) in enumerate(keys.items()):
        etag = stack.put(key, data)
        bodies.append({"Records": [s3_record(stack.bucket, key, sequencer=f"0{index}", etag=etag)]})
    stack.purge()
    written: dict[str, float] = {}
    write_item = catalogue_table.write_item

    def timed_write(*arguments: Any, **options: Any) -> bool:
        result = write_item(*arguments, **options)
        written[arguments[2].key] = time.monotonic()
        return result

    monkeypatch.setattr(catalogue_table, "write_item", timed_write)
    app.get_worker()
    # WHEN one invocation handles both
    assert failed_ids(invoke(message_event(*bodies))) == []
    # THEN the photo was written long before the slow file finished decoding
    assert written["uploads/quick.jpg"] < written["uploads/slow.jpg"] - 1.0

"""The worker's logic as plain functions over injected clients: records in, outcomes out.

For one invocation's records:

1. **Fetch and decode** each created object, several at a time (threads). The size is checked
   before any byte of the body is read: an event whose ``size`` is above ``MAX_IMAGE_BYTES`` only
   gets a ``HeadObject``; otherwise ``GetObject``'s ``Content-Length`` header is checked before
   its body is read, and an oversized body is closed unread. Either way the object is REJECTED
   (``too_large``) without being downloaded. Requests carry ``IfMatch`` with the event's ETag:
   an object that has been deleted (404) or replaced (412) since the event is skipped, because a
   newer event describes what is there now.
   Pixels come from :func:`contracts.image.decode_image`, the function training uses, so
   decompression bombs are refused by declared pixel count before any pixel is decoded.
2. **One batched inference** for every decoded image of the invocation.
3. **Conditional writes** (see :mod:`handler.catalogue`), keys in parallel, each key's records
   in order. A bad photo becomes a REJECTED item with its reason. A delete event first checks
   that the key is really gone (``HeadObject``); if it was uploaded again since, the newer
   upload's event governs the item; otherwise the item becomes a tombstone (``DELETED``, kept
   for :data:`handler.catalogue.TOMBSTONE_TTL_SECONDS`), so that a create read before the delete
   but written after it is stale instead of bringing the photo back.

A failure on one record (throttling, a 5xx, a timeout, anything unexpected) is kept as that
record's error and does not stop the others; the caller reports it back to SQS.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from botocore.exceptions import ClientError

from contracts.catalogue import CatalogueItem, Status, normalise_time, utc_now
from contracts.image import DecodedImage, ImageRejected, decode_image
from handler import catalogue
from handler.classifier import Classifier, Prediction
from handler.events import S3Record

# Threads for S3 reads + decoding, and for DynamoDB writes: the time is spent waiting on the
# network and inside Pillow's decoders, which release the GIL.
IO_THREADS: Final[int] = 4
_MISSING_CODES: Final[frozenset[str]] = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchVersion"})
_REPLACED_CODES: Final[frozenset[str]] = frozenset({"412", "PreconditionFailed"})

Action = Literal[
    "catalogued",  # written, CATALOGUED
    "needs_review",  # written, NEEDS_REVIEW
    "rejected",  # written, REJECTED with a reason
    "tombstoned",  # the object is gone: its item is now a DELETED tombstone (see handler.catalogue)
    "stale",  # a newer event already wrote this key, or this exact result is already there
    "object_missing",  # the object is gone; its delete event removes (or removed) the item
    "object_replaced",  # the object changed since this event; the newer event catalogues it
    "object_recreated",  # a delete event, but the key was uploaded again since
    "ignored",  # an event kind the catalogue does not react to
]


@dataclass(frozen=True)
class Outcome:
    action: Action
    item: CatalogueItem | None = None


@dataclass(frozen=True)
class RecordResult:
    """What happened to one record: an outcome, or the error that makes it worth a retry."""

    record: S3Record
    outcome: Outcome | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class _Fetched:
    etag: str | None
    size: int
    decoded: DecodedImage | None = None
    rejection: ImageRejected | None = None


class Worker:
    def __init__(
        self,
        *,
        classifier: Classifier,
        model_version: str,
        review_threshold: float,
        table: str,
        s3_client: Any,
        dynamodb_client: Any,
        max_image_bytes: int,
        max_image_pixels: int,
        io_threads: int = IO_THREADS,
    ) -> None:
        self.classifier = classifier
        self.model_version = model_version
        self.review_threshold = review_threshold
        self.table = table
        self.s3 = s3_client
        self.dynamodb = dynamodb_client
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        # One pool for the container's lifetime (Lambda freezes it between invocations).
        self._pool = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="worker-io")

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    def process(self, records: Sequence[S3Record]) -> list[RecordResult]:
        """Process every record; the result list is in the same order as ``records``."""
        results: list[RecordResult | None] = [None] * len(records)
        fetched: dict[int, _Fetched] = {}
        created = [i for i, record in enumerate(records) if record.is_created]
        futures = {i: self._pool.submit(self._fetch, records[i]) for i in created}
        for i, future in futures.items():
            try:
                value = future.result()
            except Exception as error:  # kept per record and reported to SQS
                results[i] = RecordResult(records[i], error=error)
                continue
            if isinstance(value, Outcome):
                results[i] = RecordResult(records[i], outcome=value)
            else:
                fetched[i] = value

        decoded = [i for i, value in fetched.items() if value.decoded is not None]
        predictions: dict[int, Prediction] = {}
        if decoded:
            batch = np.stack([fetched[i].decoded.pixels for i in decoded])  # type: ignore[union-attr]
            predictions = dict(zip(decoded, self.classifier.predict(batch), strict=True))

        # Writes for different keys run in parallel; the records of one key stay in order.
        by_key: dict[tuple[str, str], list[int]] = {}
        for i, record in enumerate(records):
            if results[i] is None:
                by_key.setdefault((record.bucket, record.key), []).append(i)

        def settle(indices: list[int]) -> list[tuple[int, RecordResult]]:
            return [
                (i, self._settle(records[i], fetched.get(i), predictions.get(i))) for i in indices
            ]

        for settled in self._pool.map(settle, by_key.values()):
            for i, result in settled:
                results[i] = result
        return [result for result in results if result is not None]

    def _settle(
        self, record: S3Record, fetched: _Fetched | None, prediction: Prediction | None
    ) -> RecordResult:
        try:
            if record.is_removed:
                outcome = self._remove(record)
            elif fetched is not None:
                outcome = self._write(record, fetched, prediction)
            else:
                outcome = Outcome("ignored")
        except Exception as error:  # kept per record and reported to SQS
            return RecordResult(record, error=error)
        return RecordResult(record, outcome=outcome)

    def _fetch(self, record: S3Record) -> _Fetched | Outcome:
        conditions: dict[str, str] = {}
        if record.version_id:
            conditions["VersionId"] = record.version_id
        if record.etag:
            conditions["IfMatch"] = f'"{record.etag.strip(chr(34))}"'
        try:
            if record.size is not None and record.size > self.max_image_bytes:
                # Too large by the event's own size: only confirm the object is still this one.
                response = self.s3.head_object(Bucket=record.bucket, Key=record.key, **conditions)
                body = None
            else:
                response = self.s3.get_object(Bucket=record.bucket, Key=record.key, **conditions)
                body = response["Body"]
            etag = response.get("ETag", "").strip('"') or record.etag
            size = int(response["ContentLength"])
            if size > self.max_image_bytes:
                if body is not None:
                    body.close()  # only the headers were read: the body is never downloaded
                rejection = ImageRejected(
                    "too_large", f"{size} bytes is more than the limit of {self.max_image_bytes}"
                )
                return _Fetched(etag=etag, size=size, rejection=rejection)
            data = body.read() if body is not None else b""
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _MISSING_CODES:
                return Outcome("object_missing")
            if code in _REPLACED_CODES:
                return Outcome("object_replaced")
            raise
        try:
            image = decode_image(
                data, max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels
            )
        except ImageRejected as rejection:
            return _Fetched(etag=etag, size=len(data), rejection=rejection)
        return _Fetched(etag=etag, size=len(data), decoded=image)

    def _exists(self, record: S3Record) -> bool:
        try:
            self.s3.head_object(Bucket=record.bucket, Key=record.key)
        except ClientError as error:
            if str(error.response.get("Error", {}).get("Code", "")) in _MISSING_CODES:
                return False
            raise
        return True

    def _write(self, record: S3Record, fetched: _Fetched, prediction: Prediction | None) -> Outcome:
        common: dict[str, Any] = {
            "bucket": record.bucket,
            "key": record.key,
            "model_version": self.model_version,
            "event_order": record.order,
            "processed_at": utc_now(),
            "etag": fetched.etag,
            "size": fetched.size,
            "sequencer": record.sequencer,
            # Buyers' listings sort on the upload's own time, not on when it was processed.
            "uploaded_at": normalise_time(record.event_time) if record.event_time else None,
        }
        if fetched.rejection is not None:
            item = CatalogueItem(status=Status.REJECTED, reason=fetched.rejection.reason, **common)
            action: Action = "rejected"
        else:
            if prediction is None or fetched.decoded is None:  # pragma: no cover - defensive
                raise RuntimeError(f"no prediction for s3://{record.bucket}/{record.key}")
            needs_review = prediction.confidence < self.review_threshold
            item = CatalogueItem(
                status=Status.NEEDS_REVIEW if needs_review else Status.CATALOGUED,
                category=prediction.category,
                confidence=prediction.confidence,
                top3=prediction.top3,
                width=fetched.decoded.width,
                height=fetched.decoded.height,
                **common,
            )
            action = "needs_review" if needs_review else "catalogued"
        written = catalogue.write_item(self.dynamodb, self.table, item, backfill=record.is_backfill)
        return Outcome(action, item) if written else Outcome("stale", item)

    def _remove(self, record: S3Record) -> Outcome:
        if self._exists(record):
            # Uploaded again since this delete: the newer upload's event governs the item. This
            # also settles a tie of event times (moto, which sends no sequencer) correctly.
            return Outcome("object_recreated")
        item = catalogue.tombstone(
            record.bucket,
            record.key,
            order=record.order,
            sequencer=record.sequencer,
            model_version=self.model_version,
        )
        written = catalogue.write_tombstone(self.dynamodb, self.table, item)
        # A delete older than the stored item changes nothing: a newer upload is catalogued.
        return Outcome("tombstoned", item) if written else Outcome("stale", item)

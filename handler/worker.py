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
3. **Conditional writes** (see :mod:`contracts.catalogue_table`), keys in parallel, each key's
records
   in order. A bad photo becomes a REJECTED item with its reason. A delete event first checks
   that the key is really gone (``HeadObject``); if it was uploaded again since, the newer
   upload's event governs the item; otherwise the item becomes a tombstone (``DELETED``, kept
   for :data:`contracts.catalogue_table.TOMBSTONE_TTL_SECONDS`), so that a create read before the
   delete
   but written after it is stale instead of bringing the photo back.

A failure on one record (throttling, a 5xx, a timeout, anything unexpected) is kept as that
record's error and does not stop the others; the caller reports it back to SQS.

**Deadline.** The handler passes a :class:`Deadline` from the Lambda context's remaining time.
Fetches and decodes not finished :data:`FETCH_RESERVE_SECONDS` before the end are given up
(those not started are cancelled; one already decoding finishes in the background, as Python
threads cannot be stopped) and no write starts later than :data:`WRITE_RESERVE_SECONDS` before
the end. Records given up fail with :class:`DeadlineExceeded`, so SQS redelivers only their
messages instead of the whole batch timing out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

import numpy as np
from botocore.exceptions import ClientError

from contracts import catalogue_table
from contracts.catalogue import CatalogueItem, Status, normalise_time, utc_now
from contracts.image import DecodedImage, ImageRejected, decode_image, estimate_decode_memory
from contracts.unfamiliarity import REASON_UNFAMILIAR
from handler.classifier import Classifier, Prediction
from handler.decode_budget import DecodeBudget
from handler.events import S3Record

# Threads for S3 reads + decoding, and for DynamoDB writes: the time is spent waiting on the
# network and inside Pillow's decoders, which release the GIL.
IO_THREADS: Final[int] = 4
_MISSING_CODES: Final[frozenset[str]] = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchVersion"})
_REPLACED_CODES: Final[frozenset[str]] = frozenset({"412", "PreconditionFailed"})
# GetObject on an object in S3 Glacier Flexible Retrieval, S3 Glacier Deep Archive or the
# Intelligent-Tiering Archive / Deep Archive Access tiers: "before you can retrieve the object you
# must first restore a copy using RestoreObject. Otherwise, this operation returns an
# InvalidObjectState error." (Amazon S3 API Reference, GetObject; botocore's
# S3.Client.exceptions.InvalidObjectState). A retry in minutes cannot change that.
_ARCHIVED_CODES: Final[frozenset[str]] = frozenset({"InvalidObjectState"})
# GetObject on an SSE-C object without the customer's key: HTTP 400 InvalidRequest, "The object
# was stored using a form of Server Side Encryption. The correct parameters must be provided to
# retrieve the object." (Amazon S3 User Guide, "Using server-side encryption with customer-provided
# keys (SSE-C)": "When you retrieve an object, you must provide the same encryption key as part of
# your request.") The worker never holds sellers' keys. InvalidRequest is matched together with
# that message, because S3 uses the code for other malformed requests too.
_SSE_C_CODE: Final[str] = "InvalidRequest"
_SSE_C_MESSAGE: Final[str] = "server side encryption"

# Time kept back from the invocation's remaining time: fetches and decodes still running this
# long before the end are given up, leaving room for the batched inference (well under a second
# for 10 photos) and the writes; no write starts later than the write reserve before the end (a
# conditional UpdateItem takes milliseconds, botocore's retries a few seconds). Each reserve is
# at most the given fraction of the time left, so a short FunctionTimeout (the template allows
# 10 s) still leaves most of it for the work: 60 s -> fetch until 50 s, write until 57 s.
FETCH_RESERVE_SECONDS: Final[float] = 10.0
FETCH_RESERVE_FRACTION: Final[float] = 0.2
WRITE_RESERVE_SECONDS: Final[float] = 3.0
WRITE_RESERVE_FRACTION: Final[float] = 0.05

Action = Literal[
    "catalogued",  # written, CATALOGUED
    "needs_review",  # written, NEEDS_REVIEW
    "rejected",  # written, REJECTED with a reason
    # The object is gone: its item is now a DELETED tombstone (see contracts.catalogue_table).
    "tombstoned",
    "stale",  # a newer event already wrote this key, or this exact result is already there
    "object_missing",  # the object is gone; its delete event tombstones (or did) the item
    "object_recreated",  # a delete event, but the key was uploaded again since
    "ignored",  # an event kind the catalogue does not react to
]


@dataclass(frozen=True)
class Outcome:
    action: Action
    item: CatalogueItem | None = None
    # The object had been replaced since the event (GetObject IfMatch answered 412): the item
    # describes the bytes that are there now, under this event's order.
    replaced: bool = False


class DeadlineExceeded(RuntimeError):
    """The record was not reached before the invocation's deadline; SQS delivers it again."""


@dataclass(frozen=True)
class Deadline:
    """When, on :func:`time.monotonic`'s clock, to stop waiting for fetches and starting writes."""

    fetch_by: float
    write_by: float

    @classmethod
    def from_remaining(cls, remaining_ms: float) -> Deadline:
        remaining = max(0.0, remaining_ms / 1000)
        end = time.monotonic() + remaining
        fetch_reserve = min(FETCH_RESERVE_SECONDS, FETCH_RESERVE_FRACTION * remaining)
        write_reserve = min(WRITE_RESERVE_SECONDS, WRITE_RESERVE_FRACTION * remaining)
        return cls(fetch_by=end - fetch_reserve, write_by=end - write_reserve)

    @classmethod
    def from_context(cls, context: Any) -> Deadline | None:
        """From a Lambda context; ``None`` (no deadline) when it cannot tell the time left."""
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is None:
            return None
        return cls.from_remaining(float(remaining()))


# The REJECTED item's reason when S3 will not hand over the bytes (docs/statuses.md lists them).
RefusalReason = Literal["archived", "encrypted"]


@dataclass(frozen=True)
class ObjectRefused:
    """S3 will not hand over this object's bytes, and no retry can change that."""

    reason: RefusalReason
    detail: str


@dataclass(frozen=True)
class RecordResult:
    """What happened to one record: an outcome, or the error that makes it worth a retry."""

    record: S3Record
    outcome: Outcome | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class _Fetched:
    etag: str | None
    size: int | None
    decoded: DecodedImage | None = None
    rejection: ImageRejected | ObjectRefused | None = None
    replaced: bool = False


class _Replaced(Exception):
    """GetObject/HeadObject with IfMatch answered 412: the key holds other bytes now."""


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
        decode_budget: DecodeBudget | None = None,
        threshold_certified: bool = True,
    ) -> None:
        self.classifier = classifier
        self.model_version = model_version
        self.review_threshold = review_threshold
        # False with a REVIEW_THRESHOLD override: every item then records the threshold as
        # uncertified (the manifest's guarantee holds for its own threshold only).
        self.threshold_certified = threshold_certified
        self.table = table
        self.s3 = s3_client
        self.dynamodb = dynamodb_client
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        # Decodes wait for, or are refused by, the container's memory budget (issue 9).
        self.decode_budget = decode_budget or DecodeBudget.for_function_memory(1024)
        # One pool for the container's lifetime (Lambda freezes it between invocations).
        self._pool = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="worker-io")

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    def process(
        self, records: Sequence[S3Record], deadline: Deadline | None = None
    ) -> list[RecordResult]:
        """Process every record; the result list is in the same order as ``records``. Records not
        reached before ``deadline`` fail with :class:`DeadlineExceeded`."""
        results: list[RecordResult | None] = [None] * len(records)
        fetched: dict[int, _Fetched] = {}
        created = [i for i, record in enumerate(records) if record.is_created]
        futures = {i: self._pool.submit(self._fetch, records[i]) for i in created}
        for i, future in futures.items():
            try:
                value = _result_by(future, deadline)
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
            settled = []
            for i in indices:
                if deadline is not None and time.monotonic() > deadline.write_by:
                    error = DeadlineExceeded("no time left to write it before the deadline")
                    settled.append((i, RecordResult(records[i], error=error)))
                else:
                    settled.append(
                        (i, self._settle(records[i], fetched.get(i), predictions.get(i)))
                    )
            return settled

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
        try:
            return self._read(record, if_match=True)
        except _Replaced:
            # Replaced since the event. S3 may have announced only one of two quick PUTs ("If two
            # writes are made to a single non-versioned object at the same time, it is possible
            # that only a single event notification will be sent." - Amazon S3 User Guide,
            # "Amazon S3 Event Notifications"), so catalogue what is there now; the write keeps
            # this event's order, which every later event of the key beats.
            fetched = self._read(record, if_match=False)
            return replace(fetched, replaced=True) if isinstance(fetched, _Fetched) else fetched

    def _read(self, record: S3Record, *, if_match: bool, head: bool = True) -> _Fetched | Outcome:
        conditions: dict[str, str] = {}
        if record.version_id:
            conditions["VersionId"] = record.version_id
        if record.etag and if_match:
            conditions["IfMatch"] = f'"{record.etag.strip(chr(34))}"'
        too_large_by_event = record.size is not None and record.size > self.max_image_bytes
        use_head = head and if_match and too_large_by_event
        try:
            if use_head:
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
            details = error.response.get("Error", {})
            code = str(details.get("Code", ""))
            if use_head and code == "400":
                # A HEAD error has no body, so S3's reason is lost (an SSE-C object answers a bare
                # 400): ask again with GetObject, whose headers carry it; the body stays unread.
                return self._read(record, if_match=if_match, head=False)
            if code in _MISSING_CODES:
                return Outcome("object_missing")
            if code in _REPLACED_CODES:
                raise _Replaced from error
            if code in _ARCHIVED_CODES:
                refusal = ObjectRefused("archived", f"{code}: {details.get('Message', '')}")
                return _Fetched(etag=record.etag, size=record.size, rejection=refusal)
            if code == _SSE_C_CODE and _SSE_C_MESSAGE in str(details.get("Message", "")).lower():
                refusal = ObjectRefused("encrypted", f"{code}: {details.get('Message', '')}")
                return _Fetched(etag=record.etag, size=record.size, rejection=refusal)
            raise
        try:
            limits = {"max_bytes": self.max_image_bytes, "max_pixels": self.max_image_pixels}
            cost = estimate_decode_memory(data, **limits)  # from the header: nothing decoded yet
            with self.decode_budget.reserve(cost.peak_bytes):
                image = decode_image(data, max_memory=self.decode_budget.total_bytes, **limits)
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
            # Unlike anything trained on (contracts.unfamiliarity): a person looks, however sure
            # the classifier is of its label.
            needs_review = prediction.unfamiliar or prediction.confidence < self.review_threshold
            item = CatalogueItem(
                status=Status.NEEDS_REVIEW if needs_review else Status.CATALOGUED,
                reason=REASON_UNFAMILIAR if prediction.unfamiliar else None,
                category=prediction.category,
                confidence=prediction.confidence,
                top3=prediction.top3,
                width=fetched.decoded.width,
                height=fetched.decoded.height,
                uncertified_threshold=None if self.threshold_certified else self.review_threshold,
                **common,
            )
            action = "needs_review" if needs_review else "catalogued"
        written = catalogue_table.write_item(
            self.dynamodb, self.table, item, backfill=record.is_backfill
        )
        return Outcome(action if written else "stale", item, replaced=fetched.replaced)

    def _remove(self, record: S3Record) -> Outcome:
        if self._exists(record):
            # Uploaded again since this delete: the newer upload's event governs the item. This
            # also settles a tie of event times (moto, which sends no sequencer) correctly.
            return Outcome("object_recreated")
        item = catalogue_table.tombstone(
            record.bucket,
            record.key,
            order=record.order,
            sequencer=record.sequencer,
            model_version=self.model_version,
        )
        written = catalogue_table.write_tombstone(self.dynamodb, self.table, item)
        # A delete older than the stored item changes nothing: a newer upload is catalogued.
        return Outcome("tombstoned", item) if written else Outcome("stale", item)


def _result_by(future: Future[Any], deadline: Deadline | None) -> Any:
    """The future's result, or :class:`DeadlineExceeded` once the fetch deadline has passed."""
    if deadline is None:
        return future.result()
    try:
        return future.result(timeout=max(0.0, deadline.fetch_by - time.monotonic()))
    except TimeoutError:
        if future.done():  # the fetch itself raised TimeoutError: an ordinary failure
            raise
        future.cancel()  # not started yet: it never will be; running: it ends on its own
        raise DeadlineExceeded("not fetched and decoded before the deadline") from None

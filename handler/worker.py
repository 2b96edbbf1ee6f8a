"""The worker's logic as plain functions over injected clients: records in, outcomes out.

For one invocation's records:

1. **Fetch and decode** each created object, several at a time (threads). The size is checked
   before any byte of the body is read: an event whose ``size`` is above ``MAX_IMAGE_BYTES`` only
   gets a ``HeadObject``; otherwise ``GetObject``'s ``Content-Length`` header is checked before
   its body is read, and an oversized body is closed unread. Either way the object is REJECTED
   (``too_large``) without being downloaded. Requests carry ``IfMatch`` with the event's ETag:
   an object that has been deleted (404) or replaced (412) since the event is skipped, because a
   newer event describes what is there now.
   Pixels come from :func:`contracts.image.decode_image`, the function training uses, run in a
   **decoder process** under a memory limit, a CPU limit and a wall-clock deadline that the
   operating system enforces (:mod:`handler.decode_pool`): whatever a crafted file does, only
   that file fails. A file whose decoder keeps being killed becomes REJECTED
   (``too_large_to_decode`` / ``too_slow_to_decode``) after
   :data:`handler.decode_attempts.MAX_DECODE_ATTEMPTS` kills, counted in DynamoDB so that even
   a death of this whole process is put down to the file on a later receive.
2. **Inference as images arrive**: each batched inference takes every image decoded since the
   last one, so a photo never waits for the slowest file of its batch.
3. **Conditional writes** (see :mod:`contracts.catalogue_table`) on their own threads, a key as
   soon as all its records of the batch are ready, each key's records in order. A bad photo
   becomes a REJECTED item with its reason. A delete event first checks that the key is really
   gone (``HeadObject``); if it was uploaded again since, the newer upload's event governs the
   item; otherwise the item becomes a tombstone (``DELETED``, kept for
   :data:`contracts.catalogue_table.TOMBSTONE_TTL_SECONDS`), so that a create read before the
   delete but written after it is stale instead of bringing the photo back.

A failure on one record (throttling, a 5xx, a timeout, anything unexpected) is kept as that
record's error and does not stop the others; the caller reports it back to SQS.

**Deadline.** The handler passes a :class:`Deadline` from the Lambda context's remaining time
(``context.get_remaining_time_in_millis()``). Decodes still running
:data:`FETCH_RESERVE_SECONDS` before the end are killed with their decoder process (no decode
outlives its invocation, nor holds memory into the next one), and no write starts later than
:data:`WRITE_RESERVE_SECONDS` before the end. Records given up fail with
:class:`DeadlineExceeded`, and only their messages come back from SQS; what finished is written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

import numpy as np
from botocore.exceptions import ClientError

from contracts import catalogue_table
from contracts.catalogue import CatalogueItem, Status, normalise_time, utc_now
from contracts.image import DecodedImage, ImageRejected
from contracts.unfamiliarity import REASON_UNFAMILIAR
from handler import decode_attempts
from handler.classifier import Classifier, Prediction
from handler.decode_pool import DecodeAttempt, DecodePool
from handler.events import S3Record

# Threads for S3 reads (each waits for a decoder process when it has its bytes), and, apart, for
# DynamoDB writes: writes never queue behind a fetch or a decode.
IO_THREADS: Final[int] = 4
WRITE_THREADS: Final[int] = 4
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
    # Decoder processes killed (memory, time) or dead while decoding this record's object.
    kills: tuple[DecodeAttempt, ...] = ()


class DecodeKilled(RuntimeError):
    """The decoder was killed on this file, which has attempts left: SQS delivers it again, and
    that attempt runs alone (see :mod:`handler.decode_attempts`)."""

    def __init__(self, message: str, kills: tuple[DecodeAttempt, ...]) -> None:
        super().__init__(message)
        self.kills = kills


@dataclass(frozen=True)
class _Fetched:
    etag: str | None
    size: int | None
    decoded: DecodedImage | None = None
    rejection: ImageRejected | ObjectRefused | None = None
    replaced: bool = False
    kills: tuple[DecodeAttempt, ...] = field(default=())


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
        decoders: DecodePool | None = None,
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
        # Every decode runs in a decoder process under OS limits (issue 17).
        self.decoders = decoders or DecodePool(function_memory_mb=1024)
        # Pools for the container's lifetime (Lambda freezes them between invocations).
        self._pool = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="worker-io")
        self._writes = ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="write")

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._writes.shutdown(wait=False)
        self.decoders.close()

    def process(
        self, records: Sequence[S3Record], deadline: Deadline | None = None
    ) -> list[RecordResult]:
        """Process every record; the result list is in the same order as ``records``. Records not
        reached before ``deadline`` fail with :class:`DeadlineExceeded`.

        Decoded images are classified as they arrive (each inference takes what has arrived
        since the last), and a key's records are written as soon as they are all ready, on
        their own threads: a photo decoded in 0.2 s is written while a slow file still decodes.
        """
        results: list[RecordResult | None] = [None] * len(records)
        fetched: dict[int, _Fetched] = {}
        predictions: dict[int, Prediction] = {}
        give_up_at = deadline.fetch_by if deadline is not None else None
        # Suspects (delivered before: maybe what failed then) start after the others.
        created = sorted(
            (i for i, record in enumerate(records) if record.is_created),
            key=lambda i: records[i].receive_count > 1,
        )
        futures = {self._pool.submit(self._fetch, records[i], give_up_at): i for i in created}
        waiting = set(created)
        by_key: dict[tuple[str, str], list[int]] = {}
        for i, record in enumerate(records):
            by_key.setdefault((record.bucket, record.key), []).append(i)
        writes: list[Future[list[tuple[int, RecordResult]]]] = []

        def settle(indices: list[int]) -> list[tuple[int, RecordResult]]:
            settled = []
            for i in indices:
                if results[i] is not None:
                    continue  # failed or finished while fetching
                if deadline is not None and time.monotonic() > deadline.write_by:
                    error = DeadlineExceeded("no time left to write it before the deadline")
                    settled.append((i, RecordResult(records[i], error=error)))
                else:
                    settled.append(
                        (i, self._settle(records[i], fetched.get(i), predictions.get(i)))
                    )
            return settled

        def submit_ready_keys() -> None:
            for key, indices in list(by_key.items()):
                if not waiting.intersection(indices):
                    writes.append(self._writes.submit(settle, indices))
                    del by_key[key]

        submit_ready_keys()
        pending = set(futures)
        while pending:
            timeout = None
            if deadline is not None:
                timeout = max(0.0, deadline.fetch_by - time.monotonic())
            done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            if not done:  # the fetch deadline: what is still running is given up
                for future in pending:
                    future.cancel()  # not started: never will be; decoding: killed at fetch_by
                    i = futures[future]
                    error = DeadlineExceeded("not fetched and decoded before the deadline")
                    results[i] = RecordResult(records[i], error=error)
                    waiting.discard(i)
                pending = set()
            arrived = []
            for future in done:
                i = futures[future]
                waiting.discard(i)
                try:
                    value = future.result()
                except DecodeKilled as error:
                    results[i] = RecordResult(records[i], error=error, kills=error.kills)
                    continue
                except Exception as error:  # kept per record and reported to SQS
                    results[i] = RecordResult(records[i], error=error)
                    continue
                if isinstance(value, Outcome):
                    results[i] = RecordResult(records[i], outcome=value)
                else:
                    fetched[i] = value
                    if value.decoded is not None:
                        arrived.append(i)
            if arrived:
                batch = np.stack([fetched[i].decoded.pixels for i in arrived])  # type: ignore[union-attr]
                predictions.update(zip(arrived, self.classifier.predict(batch), strict=True))
            submit_ready_keys()
        for write in writes:
            for i, result in write.result():
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
            kills = fetched.kills if fetched is not None else ()
            return RecordResult(record, error=error, kills=kills)
        return RecordResult(record, outcome=outcome, kills=fetched.kills if fetched else ())

    def _fetch(self, record: S3Record, give_up_at: float | None = None) -> _Fetched | Outcome:
        try:
            return self._read(record, if_match=True, give_up_at=give_up_at)
        except _Replaced:
            # Replaced since the event. S3 may have announced only one of two quick PUTs ("If two
            # writes are made to a single non-versioned object at the same time, it is possible
            # that only a single event notification will be sent." - Amazon S3 User Guide,
            # "Amazon S3 Event Notifications"), so catalogue what is there now; the write keeps
            # this event's order, which every later event of the key beats.
            fetched = self._read(record, if_match=False, give_up_at=give_up_at)
            return replace(fetched, replaced=True) if isinstance(fetched, _Fetched) else fetched

    def _read(
        self,
        record: S3Record,
        *,
        if_match: bool,
        head: bool = True,
        give_up_at: float | None = None,
    ) -> _Fetched | Outcome:
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
                return self._read(record, if_match=if_match, head=False, give_up_at=give_up_at)
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
        return self._decode(record, data, etag, give_up_at)

    def _decode(
        self, record: S3Record, data: bytes, etag: str | None, give_up_at: float | None
    ) -> _Fetched:
        """Decode ``data`` in a decoder process; a file whose decoder keeps being killed ends
        REJECTED after :data:`handler.decode_attempts.MAX_DECODE_ATTEMPTS` kills.

        A first delivery decodes beside the other files with a share of the memory budget. A
        file whose header announces more, or that is killed for memory there, is tried again at
        once, alone, with the whole budget. A suspect (its message was delivered before) is
        decoded alone from the start, with its attempt counted before it begins, so even a
        death of this whole process is put down to it (:mod:`handler.decode_attempts`).
        """
        size = len(data)
        where = (self.dynamodb, self.table, record.bucket, record.key, etag)
        counted = 0
        if record.receive_count > 1:
            previous = decode_attempts.read(*where)
            counted = previous.count
            if counted >= decode_attempts.MAX_DECODE_ATTEMPTS:
                return _Fetched(etag=etag, size=size, rejection=decode_attempts.poison(previous))
        exclusive = record.receive_count > 1
        kills: list[DecodeAttempt] = []
        while True:
            started: list[bool] = []

            def record_the_attempt(started: list[bool] = started) -> None:
                # Written once the decoders are this file's, not while it waits for them: a
                # death during another file's decode is that file's, not this one's.
                decode_attempts.add(*where, delta=1, kind=None)
                started.append(True)

            attempt = self.decoders.decode(
                data,
                max_bytes=self.max_image_bytes,
                max_pixels=self.max_image_pixels,
                exclusive=exclusive,
                give_up_at=give_up_at,
                on_start=record_the_attempt if exclusive else None,
            )
            counted += len(started)
            if attempt.killed:
                kills.append(attempt)
                if exclusive:
                    decode_attempts.add(*where, delta=0, kind=attempt.status)
                else:
                    decode_attempts.add(*where, delta=1, kind=attempt.status)
                    counted += 1
                if counted >= decode_attempts.MAX_DECODE_ATTEMPTS:
                    attempts = decode_attempts.Attempts(counted, attempt.status)
                    rejection = decode_attempts.poison(attempts)
                    return _Fetched(etag, size, rejection=rejection, kills=tuple(kills))
                if attempt.status == "memory" and not exclusive:
                    exclusive = True
                    continue
                message = f"decoder killed ({attempt.status}): {attempt.detail}"
                raise DecodeKilled(message, tuple(kills))
            if started:
                decode_attempts.add(*where, delta=-1, kind=None)
            if attempt.status == "needs_more" and not exclusive:
                exclusive = True
                continue
            if attempt.status == "given_up":
                raise DeadlineExceeded("not decoded before the deadline")
            if attempt.status == "needs_more":  # more than the whole budget, by its header
                rejection = ImageRejected("too_much_memory", attempt.detail)
                return _Fetched(etag, size, rejection=rejection, kills=tuple(kills))
            if attempt.rejection is not None:
                return _Fetched(etag, size, rejection=attempt.rejection, kills=tuple(kills))
            return _Fetched(etag, size, decoded=attempt.decoded, kills=tuple(kills))

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

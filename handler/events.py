"""S3 event notifications -> typed records, whether they arrive wrapped in SQS or directly.

Every record of every message is returned; ``s3:TestEvent`` (what S3 sends once when a
notification is configured) yields no records. Keys arrive URL-encoded the way S3 encodes them
(space as ``+``, a real ``+`` as ``%2B``, UTF-8 percent escapes), and are decoded with
:func:`urllib.parse.unquote_plus`.

Besides the S3 event names, the worker accepts ``ObjectCreated:Backfill``: the records
``python -m operations.backfill`` enqueues to re-catalogue objects that already exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote_plus

from contracts.catalogue import event_order

BACKFILL_EVENT_NAME: Final[str] = "ObjectCreated:Backfill"
TEST_EVENT_NAME: Final[str] = "s3:TestEvent"


class MalformedEvent(ValueError):
    """A message that is not an S3 event notification. It can never succeed; the queue's
    redrive policy moves it to the dead-letter queue, so it is kept, not dropped.

    Whatever is wrong inside a message (a field of the wrong type, a number too large for an
    integer, JSON nested deeper than the parser's recursion limit) ends as this one error, so it
    fails that message only and never the batch around it."""


@dataclass(frozen=True)
class S3Record:
    """One object-level S3 event, key decoded."""

    bucket: str
    key: str
    event_name: str
    event_time: str | None
    sequencer: str | None = None
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None
    # How many times SQS has handed over the message carrying this record (its
    # ApproximateReceiveCount attribute; 1 for a direct invocation). Above 1, the worker treats
    # the object as a suspect: it may be what made an earlier attempt fail (handler.worker).
    receive_count: int = 1

    @property
    def is_created(self) -> bool:
        return self.event_name.startswith("ObjectCreated:")

    @property
    def is_removed(self) -> bool:
        return self.event_name.startswith("ObjectRemoved:")

    @property
    def is_backfill(self) -> bool:
        return self.event_name == BACKFILL_EVENT_NAME

    @property
    def order(self) -> str:
        """Sortable event order for this key (see :func:`contracts.catalogue.event_order`)."""
        return event_order(self.sequencer, self.event_time)


def is_sqs_event(event: dict[str, Any]) -> bool:
    records = event.get("Records") or []
    return bool(records) and records[0].get("eventSource") == "aws:sqs"


def records_from_sqs_body(body: str) -> list[S3Record]:
    """The S3 records carried by one SQS message body."""
    try:
        payload = json.loads(body)
    except (TypeError, ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise MalformedEvent(
            f"the message body is not JSON we can read ({type(error).__name__})"
        ) from error
    return records_from_s3_event(payload)


def records_from_s3_event(payload: Any) -> list[S3Record]:
    """Every record of an S3 event notification; none for ``s3:TestEvent``."""
    if not isinstance(payload, dict):
        raise MalformedEvent("an S3 event notification is a JSON object")
    if payload.get("Event") == TEST_EVENT_NAME:
        return []
    raw_records = payload.get("Records")
    if not isinstance(raw_records, list):
        raise MalformedEvent("the message is neither an S3 event nor an s3:TestEvent")
    return [_record(raw) for raw in raw_records]


def _record(raw: Any) -> S3Record:
    try:
        s3 = raw["s3"]
        obj = s3["object"]
        event_name = raw["eventName"]
        record = S3Record(
            bucket=_text(s3["bucket"]["name"], "bucket name"),
            key=unquote_plus(_text(obj["key"], "key")),
            event_name=_text(event_name, "eventName"),
            event_time=_optional_text(raw.get("eventTime"), "eventTime"),
            sequencer=_optional_text(obj.get("sequencer"), "sequencer"),
            size=_size(obj.get("size")),
            etag=_optional_text(obj.get("eTag"), "eTag") or None,
            version_id=_optional_text(obj.get("versionId"), "versionId") or None,
        )
        record.order  # noqa: B018 - refuse records that cannot be ordered now, not at write time
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
        raise MalformedEvent(f"an S3 record lacks or garbles a field ({error!r})") from error
    return record


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} is not a non-empty string: {value!r}")
    return value


def _optional_text(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} is not a string: {value!r}")
    return value


def _size(value: Any) -> int | None:
    """The object's size in bytes: a non-negative whole number (S3 sends a JSON number)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"size is not a number: {value!r}")
    number = float(value) if not isinstance(value, int) else value
    if isinstance(number, float) and (not number.is_integer()):  # also nan and inf
        raise ValueError(f"size is not a whole number: {value!r}")
    size = int(number)
    if size < 0:
        raise ValueError(f"size is negative: {value!r}")
    return size

"""Backfill messages are S3-shaped: the worker's own parser reads them back exactly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from handler.events import BACKFILL_EVENT_NAME, records_from_sqs_body
from operations.backfill import backfill_message


@pytest.mark.parametrize(
    "key", ["uploads/plain.jpg", "uploads/seller 42/a+b (1).jpg", "uploads/女孩/été%20.heic"]
)
def test_backfill_message_round_trips_through_the_event_parser(key: str) -> None:
    listed = {
        "Key": key,
        "Size": 1234,
        "ETag": '"0123456789abcdef0123456789abcdef"',
        "LastModified": datetime(2026, 11, 24, 1, 2, 3, 456000, tzinfo=UTC),
    }
    (record,) = records_from_sqs_body(backfill_message("bucket-x", listed, "eu-west-1"))
    assert record.key == key
    assert (record.bucket, record.size, record.etag) == (
        "bucket-x",
        1234,
        "0123456789abcdef0123456789abcdef",
    )
    assert record.event_name == BACKFILL_EVENT_NAME
    assert record.is_created
    assert record.is_backfill
    assert record.sequencer is None
    assert record.order == "0:2026-11-24T01:02:03.456000Z"

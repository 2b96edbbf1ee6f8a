"""S3 notifications -> records: every record, keys decoded, test events skipped, order strings."""

from __future__ import annotations

import json

import pytest

from contracts.catalogue import event_order
from handler.events import (
    MalformedEvent,
    S3Record,
    is_sqs_event,
    records_from_s3_event,
    records_from_sqs_body,
)
from tests.conftest import load_event


def test_direct_put_event() -> None:
    (record,) = records_from_s3_event(load_event("s3_put.json"))
    assert record == S3Record(
        bucket="momee-uploads-example",
        key="uploads/seller-42/stroller.jpg",
        event_name="ObjectCreated:Put",
        event_time="2026-11-24T01:25:01.120Z",
        sequencer="0055AED6DCD90281E5",
        size=1048576,
        etag="d41d8cd98f00b204e9800998ecf8427e",
    )
    assert record.is_created
    assert not record.is_removed


def test_delete_event_has_no_size_or_etag() -> None:
    (record,) = records_from_s3_event(load_event("s3_delete.json"))
    assert record.is_removed
    assert (record.size, record.etag) == (None, None)


def test_a_delete_on_the_versioned_bucket_is_a_delete() -> None:
    """template.yaml versions the uploads bucket: a seller's delete adds a delete marker, which S3
    announces as ObjectRemoved:DeleteMarkerCreated (with the marker's versionId)."""
    event = load_event("s3_delete.json")
    event["Records"][0]["eventName"] = "ObjectRemoved:DeleteMarkerCreated"
    event["Records"][0]["s3"]["object"]["versionId"] = "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
    (record,) = records_from_s3_event(event)
    assert record.is_removed
    assert not record.is_created


def test_every_record_of_every_message_with_decoded_keys() -> None:
    event = load_event("sqs_s3_multi_record.json")
    assert is_sqs_event(event)
    keys = [
        (record.event_name, record.key)
        for message in event["Records"]
        for record in records_from_sqs_body(message["body"])
    ]
    assert keys == [
        ("ObjectCreated:Put", "uploads/seller 42/baby bed (1).jpg"),
        ("ObjectCreated:CompleteMultipartUpload", "uploads/seller-42/car seat+base.png"),
        ("ObjectCreated:Copy", "uploads/女孩/kereta bayi été.heic"),
        ("ObjectRemoved:Delete", "uploads/seller-42/stroller.jpg"),
    ]


@pytest.mark.parametrize("name", ["s3_test_event.json"])
def test_s3_test_event_has_no_records(name: str) -> None:
    assert records_from_s3_event(load_event(name)) == []
    (message,) = load_event("sqs_s3_test_event.json")["Records"]
    assert records_from_sqs_body(message["body"]) == []


def test_direct_s3_event_is_not_sqs() -> None:
    assert not is_sqs_event(load_event("s3_put.json"))
    assert not is_sqs_event({})


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"hello": "world"}),
        json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}),
        json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {}}}]}),
    ],
)
def test_malformed_bodies_raise(body: str) -> None:
    with pytest.raises(MalformedEvent):
        records_from_sqs_body(body)


def test_record_without_sequencer_or_time_is_malformed() -> None:
    event = load_event("s3_put.json")
    raw = event["Records"][0]
    del raw["eventTime"]
    del raw["s3"]["object"]["sequencer"]
    with pytest.raises(MalformedEvent):
        records_from_s3_event(event)


def test_sequencers_compare_after_right_padding_as_the_s3_user_guide_says() -> None:
    # "The sequencers can be of different lengths. So, to compare these values, first right pad
    # the shorter value with zeros, and then do a lexicographical comparison." (Amazon S3 User
    # Guide, Event message structure). Until mid-2021 the guide said "left pad"; the two rules
    # disagree on these two sequencers of one key, as S3 emits them (18 and 20 hex digits):
    shorter, longer = "0055AED6DCE5B0C2A7", "0055AED6DCD90281E5A1"
    assert shorter.ljust(len(longer), "0") > longer  # right-padded: the shorter one is later
    assert shorter.rjust(len(longer), "0") < longer  # left-padded it would look earlier
    assert event_order(shorter, None) > event_order(longer, None)
    # Equal-length sequencers compare as they are; case does not matter.
    assert event_order("0055aed6dcd90281e5", None) == event_order("0055AED6DCD90281E5", None)
    assert event_order("0055AED6DCD90281E5", None) < event_order("0055AED6DD3A27B1C9", None)
    # Right-padding: "FF" (= "FF00") is later than "0100".
    assert event_order("FF", None) > event_order("0100", None)


def test_event_time_order_when_sequencer_is_absent() -> None:
    earlier = event_order(None, "2026-11-24T01:25:01.120Z")
    later = event_order(None, "2026-11-24T01:25:01.121Z")
    assert earlier < later
    # Same instant written with an offset normalises to the same order.
    assert event_order(None, "2026-11-24T02:25:01.120+01:00") == earlier
    # A real sequencer outranks a time (the two never meet for one key in practice).
    assert event_order("00", None) > later


@pytest.mark.parametrize("sequencer", ["xyz", "0" * 33])
def test_garbage_sequencer_is_refused(sequencer: str) -> None:
    with pytest.raises(ValueError, match="sequencer"):
        event_order(sequencer, None)


def _put_with(**object_fields: object) -> str:
    event = load_event("s3_put.json")
    event["Records"][0]["s3"]["object"].update(object_fields)
    return json.dumps(event)


@pytest.mark.parametrize(
    "body",
    [
        _put_with(sequencer=1234),  # a number, not a hex string
        _put_with(size=-1),
        _put_with(size=1.5),
        _put_with(size=True),
        _put_with(size="lots"),
        _put_with(key=["uploads/a.jpg"]),
        _put_with(eTag={"md5": "x"}),
        _put_with(sequencer="0055AED6DCD90281E5").replace('"size": 1048576', '"size": 1e999'),
        _put_with(sequencer="0055AED6DCD90281E5").replace('"size": 1048576', '"size": NaN'),
        "[" * 100_000 + "]" * 100_000,  # deeper than the JSON parser's recursion limit
        json.dumps({"Records": ["x", 1, None]}),
    ],
)
def test_garbled_fields_are_malformed_events_not_crashes(body: str) -> None:
    with pytest.raises(MalformedEvent):
        records_from_sqs_body(body)


def test_sizes_as_s3_sends_them_are_accepted() -> None:
    assert records_from_sqs_body(_put_with(size=0))[0].size == 0
    assert records_from_sqs_body(_put_with(size=1048576.0))[0].size == 1048576

"""Backfill messages are S3-shaped: the worker's own parser reads them back exactly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from handler.events import BACKFILL_EVENT_NAME, records_from_sqs_body
from local_stack.resources import read_template
from operations.backfill import STACK_OUTPUTS, backfill_message, stack_outputs


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


class FakeCloudFormation:
    def __init__(self, outputs: dict[str, str]) -> None:
        self.outputs = outputs

    def describe_stacks(self, StackName: str) -> dict:  # noqa: N803 - boto3's argument name
        outputs = [{"OutputKey": k, "OutputValue": v} for k, v in self.outputs.items()]
        return {"Stacks": [{"StackName": StackName, "Outputs": outputs}]}


def test_stack_outputs_name_the_bucket_the_backfill_queue_and_the_table() -> None:
    client = FakeCloudFormation(
        {
            "UploadsBucketName": "b",
            "CatalogueQueueUrl": "https://uploads-queue",
            "BackfillQueueUrl": "https://backfill-queue",
            "CatalogueTableName": "t",
        }
    )
    assert stack_outputs(client, "s") == {
        "bucket": "b",
        "queue_url": "https://backfill-queue",
        "table": "t",
    }


def test_a_stack_without_the_backfill_queue_output_is_refused() -> None:
    client = FakeCloudFormation({"UploadsBucketName": "b", "CatalogueTableName": "t"})
    with pytest.raises(ValueError, match="BackfillQueueUrl"):
        stack_outputs(client, "old-stack")


def test_the_template_has_every_output_the_backfill_reads() -> None:
    outputs = read_template()["Outputs"]
    assert set(STACK_OUTPUTS.values()) <= set(outputs)
    assert outputs[STACK_OUTPUTS["queue_url"]]["Value"] == {"Ref": "BackfillQueue"}

"""The local stack's resources, built from template.yaml on moto, behave and look like a deploy.

Two halves: the S3 -> SQS notification delivers what the template says (uploads/ only, created and
removed), and the drift test compares every created resource with the template's own definition.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from local_stack.resources import (
    BACKFILL_DEAD_LETTER_QUEUE_ID,
    BACKFILL_QUEUE_ID,
    BUCKET_ID,
    DEAD_LETTER_QUEUE_ID,
    QUEUE_ID,
    TABLE_ID,
    LocalNames,
    LocalResources,
    create_local_resources,
    read_template,
)

pytestmark = pytest.mark.functional

TEMPLATE = read_template()


def properties(logical_id: str) -> dict[str, Any]:
    return TEMPLATE["Resources"][logical_id]["Properties"]


@dataclass
class Stack:
    s3: Any
    sqs: Any
    dynamodb: Any
    resources: LocalResources


@pytest.fixture
def stack() -> Iterator[Stack]:
    with mock_aws():
        s3, sqs, dynamodb = (boto3.client(name) for name in ("s3", "sqs", "dynamodb"))
        resources = create_local_resources(s3_client=s3, sqs_client=sqs, dynamodb_client=dynamodb)
        yield Stack(s3=s3, sqs=sqs, dynamodb=dynamodb, resources=resources)


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message body on the queue (deleting them), in arrival order."""
    bodies = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def s3_records(bodies: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(eventName, decoded key) of every S3 record; the s3:TestEvent message has no Records."""
    return [
        (record["eventName"], unquote_plus(record["s3"]["object"]["key"]))
        for body in bodies
        for record in body.get("Records", [])
    ]


# --- the notification delivers what the template says ------------------------------------------


def test_configuring_the_notification_sends_the_s3_test_event_like_aws(stack: Stack) -> None:
    bodies = drain(stack.sqs, stack.resources.queue_url)
    assert [body.get("Event") for body in bodies] == ["s3:TestEvent"]


def test_upload_under_uploads_arrives_in_the_queue_as_an_s3_event(stack: Stack) -> None:
    drain(stack.sqs, stack.resources.queue_url)
    key = "uploads/seller 7/stroller+red é.jpg"
    stack.s3.put_object(Bucket=stack.resources.bucket, Key=key, Body=b"photo")

    bodies = drain(stack.sqs, stack.resources.queue_url)

    assert s3_records(bodies) == [("ObjectCreated:Put", key)]
    record = bodies[0]["Records"][0]
    assert record["eventSource"] == "aws:s3"
    assert record["s3"]["bucket"]["name"] == stack.resources.bucket


def test_upload_outside_uploads_does_not_arrive(stack: Stack) -> None:
    drain(stack.sqs, stack.resources.queue_url)
    for key in ("other/photo.jpg", "photo.jpg", "Uploads/photo.jpg", "uploadsx/photo.jpg"):
        stack.s3.put_object(Bucket=stack.resources.bucket, Key=key, Body=b"photo")

    assert drain(stack.sqs, stack.resources.queue_url) == []


def test_delete_under_uploads_arrives_as_object_removed(stack: Stack) -> None:
    key = "uploads/gone.jpg"
    stack.s3.put_object(Bucket=stack.resources.bucket, Key=key, Body=b"photo")
    drain(stack.sqs, stack.resources.queue_url)

    stack.s3.delete_object(Bucket=stack.resources.bucket, Key=key)

    assert s3_records(drain(stack.sqs, stack.resources.queue_url)) == [
        ("ObjectRemoved:Delete", key)
    ]


def test_names_can_be_chosen_so_two_stacks_share_one_moto(stack: Stack) -> None:
    names = LocalNames(bucket="bucket-two", queue="q2", dead_letter_queue="d2", table="table-two")
    other = create_local_resources(
        s3_client=stack.s3, sqs_client=stack.sqs, dynamodb_client=stack.dynamodb, names=names
    )
    assert (other.bucket, other.table_name) == ("bucket-two", "table-two")
    assert other.queue_arn.endswith(":q2")
    assert other.dead_letter_queue_arn.endswith(":d2")
    assert other.backfill_queue_arn.endswith(":q2-backfill")
    assert other.backfill_dead_letter_queue_arn.endswith(":q2-backfill-dlq")


def test_works_against_a_moto_server_endpoint() -> None:
    """The local stack talks to a real HTTP endpoint; the same function must work there."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3, sqs, dynamodb = (
            boto3.client(name, endpoint_url=endpoint) for name in ("s3", "sqs", "dynamodb")
        )
        resources = create_local_resources(s3_client=s3, sqs_client=sqs, dynamodb_client=dynamodb)
        drain(sqs, resources.queue_url)
        s3.put_object(Bucket=resources.bucket, Key="uploads/a.jpg", Body=b"photo")
        s3.put_object(Bucket=resources.bucket, Key="elsewhere/a.jpg", Body=b"photo")
        assert s3_records(drain(sqs, resources.queue_url)) == [
            ("ObjectCreated:Put", "uploads/a.jpg")
        ]
    finally:
        server.stop()


# --- drift: what the local stack created is what the template defines --------------------------


def queue_attributes(sqs: Any, queue_url: str) -> dict[str, str]:
    return sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]


def test_table_matches_the_template(stack: Stack) -> None:
    expected = properties(TABLE_ID)
    table = stack.dynamodb.describe_table(TableName=stack.resources.table_name)["Table"]

    assert table["KeySchema"] == expected["KeySchema"]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(
        expected["AttributeDefinitions"], key=str
    )
    assert table["BillingModeSummary"]["BillingMode"] == expected["BillingMode"]
    created_indexes = {
        index["IndexName"]: (index["KeySchema"], index["Projection"])
        for index in table.get("GlobalSecondaryIndexes", [])
    }
    assert created_indexes == {
        index["IndexName"]: (index["KeySchema"], index["Projection"])
        for index in expected["GlobalSecondaryIndexes"]
    }
    assert table["SSEDescription"]["Status"] == "ENABLED"
    assert expected["SSESpecification"]["SSEEnabled"] is True
    backups = stack.dynamodb.describe_continuous_backups(TableName=stack.resources.table_name)
    pitr = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
    assert expected["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert pitr["PointInTimeRecoveryStatus"] == "ENABLED"
    ttl = stack.dynamodb.describe_time_to_live(TableName=stack.resources.table_name)
    assert ttl["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": expected["TimeToLiveSpecification"]["AttributeName"],
    }


def _assert_queue_matches(
    expected: dict, attributes: dict, dead_letter_queue_id: str, dead_letter_queue_arn: str
) -> None:
    assert int(attributes["VisibilityTimeout"]) == expected["VisibilityTimeout"]
    assert int(attributes["MessageRetentionPeriod"]) == expected["MessageRetentionPeriod"]
    assert attributes["SqsManagedSseEnabled"] == "true"
    assert expected["SqsManagedSseEnabled"] is True
    redrive = json.loads(attributes["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == expected["RedrivePolicy"]["maxReceiveCount"]
    assert expected["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": [dead_letter_queue_id, "Arn"]
    }
    assert redrive["deadLetterTargetArn"] == dead_letter_queue_arn


def test_queue_matches_the_template(stack: Stack) -> None:
    _assert_queue_matches(
        properties(QUEUE_ID),
        queue_attributes(stack.sqs, stack.resources.queue_url),
        DEAD_LETTER_QUEUE_ID,
        stack.resources.dead_letter_queue_arn,
    )


def test_dead_letter_queue_matches_the_template(stack: Stack) -> None:
    expected = properties(DEAD_LETTER_QUEUE_ID)
    attributes = queue_attributes(stack.sqs, stack.resources.dead_letter_queue_url)

    assert int(attributes["MessageRetentionPeriod"]) == expected["MessageRetentionPeriod"]
    assert attributes["SqsManagedSseEnabled"] == "true"
    assert expected["SqsManagedSseEnabled"] is True
    assert "RedrivePolicy" not in attributes


def test_backfill_queue_matches_the_template_and_is_not_the_uploads_queue(stack: Stack) -> None:
    assert stack.resources.backfill_queue_url != stack.resources.queue_url
    _assert_queue_matches(
        properties(BACKFILL_QUEUE_ID),
        queue_attributes(stack.sqs, stack.resources.backfill_queue_url),
        BACKFILL_DEAD_LETTER_QUEUE_ID,
        stack.resources.backfill_dead_letter_queue_arn,
    )


def test_backfill_dead_letter_queue_matches_the_template(stack: Stack) -> None:
    expected = properties(BACKFILL_DEAD_LETTER_QUEUE_ID)
    attributes = queue_attributes(stack.sqs, stack.resources.backfill_dead_letter_queue_url)

    assert int(attributes["MessageRetentionPeriod"]) == expected["MessageRetentionPeriod"]
    assert attributes["SqsManagedSseEnabled"] == "true"
    assert "RedrivePolicy" not in attributes


def test_uploads_never_reach_the_backfill_queue(stack: Stack) -> None:
    stack.s3.put_object(Bucket=stack.resources.bucket, Key="uploads/a.jpg", Body=b"photo")
    assert drain(stack.sqs, stack.resources.backfill_queue_url) == []


def test_notification_matches_the_template(stack: Stack) -> None:
    expected = properties(BUCKET_ID)["NotificationConfiguration"]
    configured = stack.s3.get_bucket_notification_configuration(Bucket=stack.resources.bucket)

    def rules(filter_rules: list[dict[str, str]]) -> list[tuple[str, str]]:
        return sorted((rule["Name"].lower(), rule["Value"]) for rule in filter_rules)

    assert "LambdaFunctionConfigurations" not in configured
    assert "TopicConfigurations" not in configured
    created = sorted(
        (
            event,
            configuration["QueueArn"],
            tuple(rules(configuration["Filter"]["Key"]["FilterRules"])),
        )
        for configuration in configured["QueueConfigurations"]
        for event in configuration["Events"]
    )
    defined = sorted(
        (
            entry["Event"],
            stack.resources.queue_arn,
            tuple(rules(entry["Filter"]["S3Key"]["Rules"])),
        )
        for entry in expected["QueueConfigurations"]
    )
    assert created == defined
    assert all(
        entry["Queue"] == {"Fn::GetAtt": [QUEUE_ID, "Arn"]}
        for entry in expected["QueueConfigurations"]
    )


def test_bucket_protection_matches_the_template(stack: Stack) -> None:
    expected = properties(BUCKET_ID)
    block = stack.s3.get_public_access_block(Bucket=stack.resources.bucket)
    assert block["PublicAccessBlockConfiguration"] == expected["PublicAccessBlockConfiguration"]
    encryption = stack.s3.get_bucket_encryption(Bucket=stack.resources.bucket)
    rule = encryption["ServerSideEncryptionConfiguration"]["Rules"][0]
    expected_rule = expected["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert (
        rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
        == expected_rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
    )

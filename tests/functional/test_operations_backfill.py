"""``python -m operations.backfill --stack-name S`` finds the bucket, the backfill queue and the
table in the stack's outputs and enqueues there, never on the uploads queue."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from local_stack.resources import create_local_resources
from operations.backfill import main

pytestmark = pytest.mark.functional


def test_stack_name_targets_the_backfill_queue(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3, sqs, dynamodb = (boto3.client(name) for name in ("s3", "sqs", "dynamodb"))
        resources = create_local_resources(s3_client=s3, sqs_client=sqs, dynamodb_client=dynamodb)
        for index in range(3):
            s3.put_object(Bucket=resources.bucket, Key=f"uploads/{index}.jpg", Body=b"x")
        # S3's test event and the uploads' notifications: a backfill must not add to them.
        sqs.purge_queue(QueueUrl=resources.queue_url)
        # A deployed stack's outputs, as template.yaml names them.
        outputs = {
            "UploadsBucketName": resources.bucket,
            "CatalogueQueueUrl": resources.queue_url,
            "BackfillQueueUrl": resources.backfill_queue_url,
            "CatalogueTableName": resources.table_name,
        }
        template = {
            "Resources": {"Placeholder": {"Type": "AWS::SQS::Queue"}},
            "Outputs": {name: {"Value": value} for name, value in outputs.items()},
        }
        boto3.client("cloudformation").create_stack(
            StackName="momee-cataloguer", TemplateBody=json.dumps(template)
        )

        assert main(["--stack-name", "momee-cataloguer"]) == 0

        attributes = ["ApproximateNumberOfMessages"]
        backfill = sqs.get_queue_attributes(
            QueueUrl=resources.backfill_queue_url, AttributeNames=attributes
        )["Attributes"]
        uploads = sqs.get_queue_attributes(QueueUrl=resources.queue_url, AttributeNames=attributes)[
            "Attributes"
        ]
    assert backfill["ApproximateNumberOfMessages"] == "3"
    assert uploads["ApproximateNumberOfMessages"] == "0"
    assert "enqueued 3" in capsys.readouterr().out

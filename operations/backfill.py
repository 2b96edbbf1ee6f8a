"""Re-enqueue existing uploads so the worker catalogues them again — how a new model reaches
every photo at Lambda's scale (SQS buffers, Lambda fans out up to its maximum concurrency).

    python -m operations.backfill --stack-name momee-cataloguer [--stale-only --model-version V]
    python -m operations.backfill --bucket B [--prefix uploads/] --queue-url URL
        [--stale-only --table T --model-version V]

With ``--stack-name`` the bucket, the queue and the table come from the stack's outputs
(``UploadsBucketName``, ``BackfillQueueUrl``, ``CatalogueTableName``); an explicit flag wins.
The queue is the stack's backfill queue, not the uploads queue: its own event source mapping
and concurrency cap (template.yaml, ``BackfillMaximumConcurrency``) work through a backfill of
the whole bucket while new uploads keep their own workers.

Each object becomes one SQS message shaped like an S3 notification with one record, event name
``ObjectCreated:Backfill``, the object's ETag and size, and its LastModified time. The worker
treats it as "re-catalogue these bytes": it writes when the object has no item yet, or when the
stored item describes the same ETag from another model version, and it keeps the stored S3
sequencer so later real events still order correctly (see :mod:`contracts.catalogue_table`). Objects
replaced since the listing are skipped by the worker's ``IfMatch`` on the ETag.

``--stale-only`` enqueues only objects with no catalogue item or an item made by a model version
other than ``--model-version`` (the version being rolled out).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Final
from urllib.parse import quote_plus

import boto3

from contracts.catalogue import OBJECT_ID, object_id
from handler.events import BACKFILL_EVENT_NAME

SQS_BATCH: Final[int] = 10
# Stack outputs (template.yaml) that name what a backfill reads and writes.
STACK_OUTPUTS: Final[dict[str, str]] = {
    "bucket": "UploadsBucketName",
    "queue_url": "BackfillQueueUrl",
    "table": "CatalogueTableName",
}
DYNAMODB_BATCH_GET: Final[int] = 100


@dataclass
class BackfillStats:
    listed: int = 0
    enqueued: int = 0
    skipped_current: int = 0


def stack_outputs(cloudformation_client: Any, stack_name: str) -> dict[str, str]:
    """``{"bucket": ..., "queue_url": ..., "table": ...}`` from a deployed stack's outputs."""
    (stack,) = cloudformation_client.describe_stacks(StackName=stack_name)["Stacks"]
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
    missing = sorted(key for key in STACK_OUTPUTS.values() if key not in outputs)
    if missing:
        raise ValueError(f"stack {stack_name} has no output {', '.join(missing)}: deploy it first")
    return {name: outputs[key] for name, key in STACK_OUTPUTS.items()}


def list_objects(s3_client: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def backfill_message(bucket: str, obj: dict[str, Any], region: str) -> str:
    """An S3-shaped notification body for one listed object."""
    modified = obj["LastModified"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": modified,
        "eventName": BACKFILL_EVENT_NAME,
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "backfill",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            # Encoded as S3 encodes keys in notifications, so one decoder serves both.
            "object": {
                "key": quote_plus(obj["Key"], safe="/"),
                "size": obj["Size"],
                "eTag": obj["ETag"].strip('"'),
            },
        },
    }
    return json.dumps({"Records": [record]})


def current_versions(
    dynamodb_client: Any, table: str, bucket: str, keys: list[str]
) -> dict[str, str]:
    """``{key: model_version}`` for the keys that have a catalogue item."""
    versions: dict[str, str] = {}
    for start in range(0, len(keys), DYNAMODB_BATCH_GET):
        request = {
            table: {
                "Keys": [
                    {OBJECT_ID: {"S": object_id(bucket, key)}}
                    for key in keys[start : start + DYNAMODB_BATCH_GET]
                ],
                "ProjectionExpression": "#k, model_version",
                "ExpressionAttributeNames": {"#k": "key"},
            }
        }
        while request:
            response = dynamodb_client.batch_get_item(RequestItems=request)
            for item in response["Responses"].get(table, []):
                versions[item["key"]["S"]] = item["model_version"]["S"]
            request = response.get("UnprocessedKeys") or {}
    return versions


def backfill(
    *,
    s3_client: Any,
    sqs_client: Any,
    bucket: str,
    queue_url: str,
    prefix: str = "uploads/",
    dynamodb_client: Any = None,
    table: str | None = None,
    model_version: str | None = None,
) -> BackfillStats:
    """Enqueue every object under ``prefix`` (or only the stale ones when ``model_version`` and
    ``table`` are given)."""
    stale_only = model_version is not None
    if stale_only and (table is None or dynamodb_client is None):
        raise ValueError("--stale-only needs --table to read the catalogue")
    region = s3_client.meta.region_name
    stats = BackfillStats()
    pending: list[dict[str, Any]] = []

    def flush(objects: list[dict[str, Any]]) -> None:
        if stale_only:
            versions = current_versions(
                dynamodb_client, table, bucket, [obj["Key"] for obj in objects]
            )
            fresh = [obj for obj in objects if versions.get(obj["Key"]) == model_version]
            stats.skipped_current += len(fresh)
            objects = [obj for obj in objects if versions.get(obj["Key"]) != model_version]
        for start in range(0, len(objects), SQS_BATCH):
            chunk = objects[start : start + SQS_BATCH]
            response = sqs_client.send_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "MessageBody": backfill_message(bucket, obj, region)}
                    for i, obj in enumerate(chunk)
                ],
            )
            if response.get("Failed"):
                raise RuntimeError(f"SQS refused {len(response['Failed'])} backfill messages")
            stats.enqueued += len(chunk)

    for obj in list_objects(s3_client, bucket, prefix):
        stats.listed += 1
        pending.append(obj)
        if len(pending) == DYNAMODB_BATCH_GET:
            flush(pending)
            pending = []
    if pending:
        flush(pending)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m operations.backfill", description=__doc__)
    parser.add_argument(
        "--stack-name",
        help="read the bucket, backfill queue and table from its outputs (default: none)",
    )
    parser.add_argument("--bucket", help="uploads bucket (default: the stack's)")
    parser.add_argument(
        "--prefix", default="uploads/", help="only keys under this prefix (default: %(default)s)"
    )
    parser.add_argument(
        "--queue-url", help="the backfill queue (default: the stack's BackfillQueueUrl)"
    )
    parser.add_argument(
        "--stale-only",
        action="store_true",
        help="only objects with no item or an item of another model version (default: off)",
    )
    parser.add_argument(
        "--table", help="catalogue table, needed by --stale-only (default: the stack's)"
    )
    parser.add_argument(
        "--model-version",
        help="the version being rolled out, needed by --stale-only (default: none)",
    )
    arguments = parser.parse_args(argv)
    if arguments.stack_name:
        resolved = stack_outputs(boto3.client("cloudformation"), arguments.stack_name)
        for name, value in resolved.items():
            if getattr(arguments, name) is None:
                setattr(arguments, name, value)
    if not (arguments.bucket and arguments.queue_url):
        parser.error("give --stack-name, or --bucket and --queue-url")
    if arguments.stale_only and not (arguments.table and arguments.model_version):
        parser.error("--stale-only needs --table and --model-version")
    stats = backfill(
        s3_client=boto3.client("s3"),
        sqs_client=boto3.client("sqs"),
        dynamodb_client=boto3.client("dynamodb") if arguments.table else None,
        bucket=arguments.bucket,
        queue_url=arguments.queue_url,
        prefix=arguments.prefix,
        table=arguments.table,
        model_version=arguments.model_version if arguments.stale_only else None,
    )
    print(
        f"listed {stats.listed} objects under s3://{arguments.bucket}/{arguments.prefix}; "
        f"enqueued {stats.enqueued}; already on {arguments.model_version}: {stats.skipped_current}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

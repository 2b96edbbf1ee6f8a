"""Migrating a deployed catalogue from schema version 1 (keyed by ``bucket`` + ``key``) to the
current table (keyed by ``object_id``), on the local stack, the runbook's migration steps:

1. the old stack: bucket with photos, the v1 table full of items the old worker wrote;
2. ``sam deploy`` of the new template: a key schema change makes CloudFormation *replace* the table
   (a new table under a new generated name, which CATALOGUE_TABLE and the outputs follow) and,
   with ``UpdateReplacePolicy: Retain``, keep the old one as it was;
3. ``python -m operations.backfill --stack-name ... --stale-only --model-version V`` through the
   backfill queue, drained by the real handler pointed at the new table;
4. every object is catalogued in the new table; the old table is untouched; the uploads queue
   saw none of it; running the backfill again enqueues nothing.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from moto import mock_aws
from PIL import Image

from contracts.catalogue import SCHEMA_VERSION, CatalogueItem, Status
from contracts.catalogue_table import scan_items
from handler import app
from local_stack.resources import (
    TABLE_ID,
    LocalNames,
    create_local_resources,
    create_table,
    read_template,
)
from local_stack.stack import LocalContext, drain_queue, queue_depth
from operations.backfill import backfill
from tests.support.tiny_artifact import publish_tiny_artifact

pytestmark = pytest.mark.functional

# The catalogue table as template.yaml defined it before schema version 2 (git history), with the
# properties CloudFormation compares to decide on a replacement.
V1_TABLE_PROPERTIES: dict[str, Any] = {
    "BillingMode": "PAY_PER_REQUEST",
    "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
    "SSESpecification": {"SSEEnabled": True},
    "DeletionProtectionEnabled": True,
    "AttributeDefinitions": [
        {"AttributeName": "bucket", "AttributeType": "S"},
        {"AttributeName": "key", "AttributeType": "S"},
        {"AttributeName": "category", "AttributeType": "S"},
        {"AttributeName": "processed_at", "AttributeType": "S"},
    ],
    "KeySchema": [
        {"AttributeName": "bucket", "KeyType": "HASH"},
        {"AttributeName": "key", "KeyType": "RANGE"},
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "by_category",
            "KeySchema": [
                {"AttributeName": "category", "KeyType": "HASH"},
                {"AttributeName": "processed_at", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
    ],
}
OLD_MODEL = "20261101T000000Z-0ld0ld00"
PHOTOS = 14


def jpeg(seed: int) -> bytes:
    image = Image.new("RGB", (40 + seed, 30), (seed * 17 % 256, 90, 160))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


def v1_item(bucket: str, key: str, etag: str, index: int) -> dict[str, Any]:
    """What the version 1 worker wrote: no object_id, no schema_version, no uploaded_at."""
    return {
        "bucket": bucket,
        "key": key,
        "status": "CATALOGUED",
        "category": "stroller",
        "confidence": "0.9",
        "model_version": OLD_MODEL,
        "event_order": f"1:{index:032x}",
        "sequencer": f"{index:016X}",
        "etag": etag,
        "processed_at": f"2026-11-01T00:00:{index:02d}.000000Z",
    }


def put_raw(dynamodb: Any, table: str, item: dict[str, Any]) -> None:
    serializer = TypeSerializer()
    dynamodb.put_item(TableName=table, Item={k: serializer.serialize(v) for k, v in item.items()})


def raw_items(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    return dynamodb.get_paginator("scan").paginate(TableName=table).build_full_result()["Items"]


@pytest.fixture
def old_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The stack as deployed with the version 1 template, with photos and their v1 items."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3, sqs, dynamodb = (boto3.client(name) for name in ("s3", "sqs", "dynamodb"))
        v1_template = copy.deepcopy(read_template())
        v1_template["Resources"][TABLE_ID]["Properties"] = V1_TABLE_PROPERTIES
        resources = create_local_resources(
            s3_client=s3,
            sqs_client=sqs,
            dynamodb_client=dynamodb,
            names=LocalNames(table="momee-cataloguer-CatalogueTable-OLD1"),
            template=v1_template,
        )
        keys = [f"uploads/seller {i % 3}/photo+{i}.jpg" for i in range(PHOTOS)]
        for index, key in enumerate(keys):
            etag = s3.put_object(Bucket=resources.bucket, Key=key, Body=jpeg(index))["ETag"]
            put_raw(
                dynamodb,
                resources.table_name,
                v1_item(resources.bucket, key, etag.strip('"'), index),
            )
        # The old worker consumed those uploads' notifications long ago.
        sqs.purge_queue(QueueUrl=resources.queue_url)
        yield {"s3": s3, "sqs": sqs, "dynamodb": dynamodb, "resources": resources, "keys": keys}
        app.reset_worker()


def test_the_new_key_schema_is_a_replacement_and_the_old_table_is_retained() -> None:
    """Why the migration exists: CloudFormation cannot change a table's key schema in place."""
    table = read_template()["Resources"][TABLE_ID]
    assert table["Properties"]["KeySchema"] != V1_TABLE_PROPERTIES["KeySchema"]
    assert table["UpdateReplacePolicy"] == "Retain"
    assert table["DeletionPolicy"] == "Retain"
    # No fixed TableName: a replacement gets a new generated name instead of failing on a clash.
    assert "TableName" not in table["Properties"]


def test_v1_items_are_read_as_version_1(old_stack: dict[str, Any]) -> None:
    raw = raw_items(old_stack["dynamodb"], old_stack["resources"].table_name)
    items = [CatalogueItem.from_attributes(scan) for scan in map(_plain, raw)]
    assert {item.schema_version for item in items} == {1}
    assert all(item.uploaded_at == item.processed_at for item in items)


def _plain(raw: dict[str, Any]) -> dict[str, Any]:
    deserializer = TypeDeserializer()
    return {name: deserializer.deserialize(value) for name, value in raw.items()}


def test_deploy_then_backfill_catalogues_every_object_in_the_new_table(
    old_stack: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3, sqs, dynamodb = old_stack["s3"], old_stack["sqs"], old_stack["dynamodb"]
    resources, keys = old_stack["resources"], old_stack["keys"]
    old_table = resources.table_name
    before = sorted(map(str, raw_items(dynamodb, old_table)))

    # 2. sam deploy: the replaced table has a new name; the new function version points at it.
    new_table = create_table(dynamodb, "momee-cataloguer-CatalogueTable-NEW2")
    version = publish_tiny_artifact(tmp_path / "model")
    monkeypatch.setenv("CATALOGUE_TABLE", new_table)
    monkeypatch.setenv("MODEL_URI", str(tmp_path / "model"))
    app.reset_worker()

    # 3. The backfill through the backfill queue (the stack's BackfillQueueUrl output).
    arguments = {
        "s3_client": s3,
        "sqs_client": sqs,
        "dynamodb_client": dynamodb,
        "bucket": resources.bucket,
        "queue_url": resources.backfill_queue_url,
        "table": new_table,
        "model_version": version,
    }
    stats = backfill(**arguments)
    assert (stats.listed, stats.enqueued) == (PHOTOS, PHOTOS)
    assert queue_depth(sqs, resources.queue_url) == 0, "new uploads' queue stays free"
    drained = drain_queue(
        sqs,
        resources.backfill_queue_url,
        lambda event: app.lambda_handler(event, LocalContext()),
    )
    assert drained.returned == 0
    assert queue_depth(sqs, resources.backfill_dead_letter_queue_url) == 0

    # 4. Every object is in the new table, as a current-schema item of the new model.
    items = {item.key: item for item in scan_items(dynamodb, new_table)}
    assert set(items) == set(keys)
    for key, item in items.items():
        listed = s3.head_object(Bucket=resources.bucket, Key=key)
        assert item.schema_version == SCHEMA_VERSION
        assert item.model_version == version
        assert item.status in (Status.CATALOGUED, Status.NEEDS_REVIEW)
        assert item.etag == listed["ETag"].strip('"')
        # Listings sort on the upload time, which a backfill takes from S3's LastModified.
        assert item.uploaded_at.startswith(listed["LastModified"].strftime("%Y-%m-%dT%H:%M:%S"))
    raw = raw_items(dynamodb, new_table)
    assert {entry["object_id"]["S"] for entry in raw} == {f"{resources.bucket}/{k}" for k in keys}

    # The retained old table is exactly as it was (readers can stay on it until the switch).
    assert sorted(map(str, raw_items(dynamodb, old_table))) == before
    # Interrupted or repeated: --stale-only finds nothing left to do.
    assert backfill(**arguments).enqueued == 0

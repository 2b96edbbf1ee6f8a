"""The worker role's permissions, evaluated as AWS evaluates them, for every live version of a
table migration (schema version 1 -> 2), rollback included.

The stack goes through these states; in each, the role is built from template.yaml's own policy
documents (tests/support/iam_evaluation.py) and every AWS call each live version makes runs
under it against moto:

* **during** ``sam deploy`` of the migration: CloudFormation has replaced the table and updated
  the role *before* CodeDeploy moves the first batch, so the old version (still taking most
  traffic) and the new one run side by side, each on its own table;
* **after** the shift: the old version is the rollback target; re-pointing the alias at it must
  work;
* **clean-up** deploy (``PreviousCatalogueTable`` emptied): the new version alone. The old
  version is denied now, which is why the runbook empties the parameter only once no version that
  names the old table can be invoked (it also shows the evaluation is not vacuous).

The new version is the real worker code (``build_worker`` + ``handle_event``) with enforced
clients. The old version is the schema-1 worker's calls replayed exactly as its code made them
(git history, commit 5e87c1c^: ``describe_table`` at cold start; ``head_object``, ``get_object``,
``get_item``, ``update_item`` for an upload; ``delete_item`` for a delete), keyed by ``bucket`` +
``key`` on a table of that schema.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from PIL import Image

from handler import app
from handler.cold_start import build_worker
from handler.settings import ConfigurationError, WorkerSettings
from local_stack.resources import create_table, read_template, table_arguments
from local_stack.stack import LocalContext
from tests.support.iam_evaluation import (
    ACCOUNT,
    Enforcer,
    RolePolicies,
    StackValues,
    resolve_policies,
)
from tests.support.tiny_artifact import publish_tiny_artifact

pytestmark = pytest.mark.functional

TEMPLATE = read_template()
STACK = "momee-cataloguer"
OLD_TABLE = f"{STACK}-CatalogueTable-OLD1"
NEW_TABLE = f"{STACK}-CatalogueTable-NEW2"
# The v1 table's key schema (template.yaml before schema version 2, git history).
V1_TABLE = {
    "BillingMode": "PAY_PER_REQUEST",
    "AttributeDefinitions": [
        {"AttributeName": "bucket", "AttributeType": "S"},
        {"AttributeName": "key", "AttributeType": "S"},
    ],
    "KeySchema": [
        {"AttributeName": "bucket", "KeyType": "HASH"},
        {"AttributeName": "key", "KeyType": "RANGE"},
    ],
}


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48 + seed, 32), (seed * 40 % 256, 120, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


def stack_values(region: str, *, catalogue_table: str, previous_table: str) -> StackValues:
    """The stack's names in one state: which table CatalogueTable is, which one is 'previous'."""
    parameters = {
        name: str(parameter["Default"])
        for name, parameter in TEMPLATE["Parameters"].items()
        if "Default" in parameter
    }
    parameters["PreviousCatalogueTable"] = previous_table
    bucket = f"{parameters['UploadsBucketPrefix']}-uploads-{ACCOUNT}-{region}"
    queue = f"arn:aws:sqs:{region}:{ACCOUNT}"
    return StackValues(
        region=region,
        parameters=parameters,
        refs={"CatalogueTable": catalogue_table, "UploadsBucket": bucket},
        attributes={
            (
                "CatalogueTable",
                "Arn",
            ): f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{catalogue_table}",
            ("UploadsBucket", "Arn"): f"arn:aws:s3:::{bucket}",
            (
                "CatalogueLogGroup",
                "Arn",
            ): f"arn:aws:logs:{region}:{ACCOUNT}:log-group:/aws/lambda/{STACK}-catalogue:*",
            ("CatalogueQueue", "Arn"): f"{queue}:{STACK}-CatalogueQueue-X",
            ("BackfillQueue", "Arn"): f"{queue}:{STACK}-BackfillQueue-X",
        },
    )


class Stack:
    """moto resources of the migration: the bucket with photos, the v1 and v2 tables."""

    def __init__(self, model_uri: Path) -> None:
        self.region = boto3.session.Session().region_name
        self.bucket = stack_values(self.region, catalogue_table="", previous_table="").refs[
            "UploadsBucket"
        ]
        self.model_uri = model_uri
        raw_s3 = boto3.client("s3")
        raw_s3.create_bucket(
            Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": self.region}
        )
        for index in range(3):
            raw_s3.put_object(Bucket=self.bucket, Key=f"uploads/p{index}.jpg", Body=jpeg(index))
        raw_dynamodb = boto3.client("dynamodb")
        raw_dynamodb.create_table(**table_arguments(V1_TABLE, OLD_TABLE))
        create_table(raw_dynamodb, NEW_TABLE)

    def role(self, *, catalogue_table: str, previous_table: str) -> RolePolicies:
        values = stack_values(
            self.region, catalogue_table=catalogue_table, previous_table=previous_table
        )
        return RolePolicies(resolve_policies(TEMPLATE, "CatalogueFunctionRole", values))

    def clients(self, role: RolePolicies) -> tuple[Any, Any]:
        enforcer = Enforcer(role, region=self.region)
        return (
            enforcer.attach(boto3.client("s3")),
            enforcer.attach(boto3.client("dynamodb")),
        )

    # --- the versions ------------------------------------------------------------------------

    def new_version(self, role: RolePolicies, key: str) -> None:
        """The current worker (schema 2, CATALOGUE_TABLE = the new table): an upload, a delete."""
        s3, dynamodb = self.clients(role)
        settings = WorkerSettings(  # type: ignore[call-arg]
            catalogue_table=NEW_TABLE, model_uri=str(self.model_uri)
        )
        worker = build_worker(settings, s3_client=s3, dynamodb_client=dynamodb)
        try:
            for name in ("ObjectCreated:Put", "ObjectRemoved:Delete"):
                app.handle_event(s3_event(self.bucket, key, name), LocalContext(), worker)
        finally:
            worker.close()

    def old_version(self, role: RolePolicies, key: str) -> None:
        """The schema-1 worker's calls (CATALOGUE_TABLE = the old table): an upload, a delete."""
        s3, dynamodb = self.clients(role)
        dynamodb.describe_table(TableName=OLD_TABLE)
        head = s3.head_object(Bucket=self.bucket, Key=key)
        s3.get_object(Bucket=self.bucket, Key=key, IfMatch=head["ETag"])["Body"].read()
        item_key = {"bucket": {"S": self.bucket}, "key": {"S": key}}
        dynamodb.get_item(TableName=OLD_TABLE, Key=item_key, ConsistentRead=True)
        dynamodb.update_item(
            TableName=OLD_TABLE,
            Key=item_key,
            UpdateExpression="SET #s = :s, category = :c",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": "CATALOGUED"}, ":c": {"S": "stroller"}},
        )
        dynamodb.delete_item(TableName=OLD_TABLE, Key=item_key)


def s3_event(bucket: str, key: str, name: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": name,
                "eventTime": "2026-12-03T12:00:00.000Z",
                "s3": {"bucket": {"name": bucket}, "object": {"key": key}},
            }
        ]
    }


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    publish_tiny_artifact(tmp_path / "model")
    with mock_aws():
        yield Stack(tmp_path / "model")


def denied(error: BaseException) -> bool:
    text = repr(error) + repr(getattr(error, "__cause__", None))
    return "AccessDenied" in text or "not authorized" in text


def test_during_the_shift_both_live_versions_work_each_on_its_own_table(stack: Stack) -> None:
    """The failure the issue describes: the old version, still taking most batches, names the old
    table; today's template grants only the new one, so every write of it is AccessDenied."""
    role = stack.role(catalogue_table=NEW_TABLE, previous_table=OLD_TABLE)
    stack.old_version(role, "uploads/p0.jpg")
    stack.new_version(role, "uploads/p1.jpg")
    refused = [d for d in role.decisions if not d.allowed]
    assert refused == []
    tables = {d.resource.rsplit("/", 1)[-1] for d in role.decisions if "dynamodb" in d.action}
    assert tables == {OLD_TABLE, NEW_TABLE}


def test_after_the_shift_rolling_back_to_the_old_version_works(stack: Stack) -> None:
    role = stack.role(catalogue_table=NEW_TABLE, previous_table=OLD_TABLE)
    stack.new_version(role, "uploads/p1.jpg")
    # README, "Rolling back": update-alias back to the previous version. It names the old table.
    stack.old_version(role, "uploads/p2.jpg")
    assert [d for d in role.decisions if not d.allowed] == []


def test_the_clean_up_deploy_drops_the_old_tables_grant_and_only_that(stack: Stack) -> None:
    role = stack.role(catalogue_table=NEW_TABLE, previous_table="")
    stack.new_version(role, "uploads/p1.jpg")
    assert [d for d in role.decisions if not d.allowed] == []
    with pytest.raises(ClientError) as raised:
        stack.old_version(role, "uploads/p2.jpg")
    assert denied(raised.value)
    assert OLD_TABLE in str(raised.value)


def test_a_new_version_pointed_at_a_table_the_role_does_not_grant_fails_at_cold_start(
    stack: Stack,
) -> None:
    """The evaluator is not vacuous for the real worker either: a wrong table fails its start."""
    role = stack.role(catalogue_table=OLD_TABLE, previous_table="")
    with pytest.raises(ConfigurationError) as raised:
        stack.new_version(role, "uploads/p1.jpg")
    assert denied(raised.value) or "dynamodb:DescribeTable" in str(raised.value)

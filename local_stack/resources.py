"""Create the template's bucket, queues, DLQs, table and bucket notification on moto.

The local stack (``python -m local_stack``) and the tests call ``create_local_resources`` so that
what runs locally is what ``sam deploy`` creates: every property comes from ``template.yaml``'s
own resource definitions, translated from CloudFormation's shape to the API calls' shape, with the
template's intrinsic functions (``!Ref``, ``!GetAtt``, ``!Sub``) resolved to the local names.
Nothing here restates a property value.

What is *not* created locally, and why:
- the bucket and queue policies: moto does not evaluate resource policies, so applying them would
  prove nothing; checkov and ``tests/unit/test_infra_template.py`` check them in the template;
- the function, its alias, its two event source mappings (uploads, backfill), the CodeDeploy
  deployment, log group, alarms and alarm topic: the local stack drives the handler in-process
  instead of through Lambda (``drain_queue`` on either queue stands in for a mapping).

The clients decide where the resources go: clients made inside ``moto.mock_aws`` or clients pointed
at a moto server's ``endpoint_url`` both work. S3 sends an ``s3:TestEvent`` message to the queue
when the notification is configured, exactly as AWS does; consumers must skip it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml

from local_stack.atomic_dynamodb import serialise_dynamodb

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "template.yaml"

# Logical resource IDs in template.yaml that the local stack builds.
BUCKET_ID = "UploadsBucket"
QUEUE_ID = "CatalogueQueue"
DEAD_LETTER_QUEUE_ID = "CatalogueDeadLetterQueue"
BACKFILL_QUEUE_ID = "BackfillQueue"
BACKFILL_DEAD_LETTER_QUEUE_ID = "BackfillDeadLetterQueue"
TABLE_ID = "CatalogueTable"

# CloudFormation AWS::SQS::Queue properties that are also SetQueueAttributes attributes of the
# same name. QueueName (local name instead), Tags and the FIFO-only ones are deliberately absent.
QUEUE_ATTRIBUTE_PROPERTIES = (
    "DelaySeconds",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "RedriveAllowPolicy",
    "RedrivePolicy",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
)

LOCAL_ACCOUNT_FALLBACK = "123456789012"  # moto's default account, used only before it is known


@dataclass(frozen=True)
class LocalNames:
    """Physical names for the local resources (the template lets CloudFormation pick them)."""

    bucket: str = "momee-uploads-local"
    queue: str = "momee-catalogue-local"
    dead_letter_queue: str = "momee-catalogue-dlq-local"
    table: str = "momee-catalogue-local"
    stack_name: str = "momee-cataloguer-local"
    # Default: "<queue>-backfill" and "<queue>-backfill-dlq", so custom names stay distinct.
    backfill_queue: str | None = None
    backfill_dead_letter_queue: str | None = None

    @property
    def backfill_queue_name(self) -> str:
        return self.backfill_queue or f"{self.queue}-backfill"

    @property
    def backfill_dead_letter_queue_name(self) -> str:
        return self.backfill_dead_letter_queue or f"{self.queue}-backfill-dlq"


@dataclass(frozen=True)
class LocalResources:
    """What ``create_local_resources`` made: everything a caller needs to talk to it."""

    bucket: str
    queue_url: str
    queue_arn: str
    dead_letter_queue_url: str
    dead_letter_queue_arn: str
    table_name: str
    backfill_queue_url: str = ""
    backfill_queue_arn: str = ""
    backfill_dead_letter_queue_url: str = ""
    backfill_dead_letter_queue_arn: str = ""


def read_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """Parse a SAM/CloudFormation template, short-form tags included, into plain Python values.

    ``!Ref X`` becomes ``{"Ref": "X"}``, ``!GetAtt X.Y`` becomes ``{"Fn::GetAtt": ["X", "Y"]}``,
    ``!Sub s`` becomes ``{"Fn::Sub": "s"}`` — the long form CloudFormation itself uses.
    """
    return _plain(cfn_yaml.load(str(path)))


def _plain(value: Any) -> Any:
    """cfn-lint's nodes carry line marks; hand callers ordinary dicts, lists and strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


class _Resolver:
    """Resolves the intrinsic functions the local resources' properties use."""

    def __init__(self, template: dict[str, Any], region: str, stack_name: str) -> None:
        self.refs: dict[str, Any] = {
            "AWS::Region": region,
            "AWS::AccountId": LOCAL_ACCOUNT_FALLBACK,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": stack_name,
        }
        for name, parameter in template.get("Parameters", {}).items():
            if "Default" in parameter:
                self.refs[name] = parameter["Default"]
        self.attributes: dict[tuple[str, str], Any] = {}

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((function, argument),) = value.items()
            if function == "Ref":
                return self._ref(argument)
            if function == "Fn::GetAtt":
                logical_id, attribute = (
                    argument if isinstance(argument, list) else argument.split(".", 1)
                )
                return self._get_att(logical_id, attribute)
            if function == "Fn::Sub":
                return self._sub(argument)
            if function == "Fn::Join":
                delimiter, parts = argument
                return delimiter.join(str(p) for p in self.resolve(parts))
            if function.startswith("Fn::") or function == "Condition":
                raise ValueError(f"local stack cannot resolve {function} in {value!r}")
        return {k: self.resolve(v) for k, v in value.items()}

    def _ref(self, name: str) -> Any:
        if name not in self.refs:
            raise ValueError(f"local stack has no value for !Ref {name} (create it first)")
        return self.refs[name]

    def _get_att(self, logical_id: str, attribute: str) -> Any:
        if (logical_id, attribute) not in self.attributes:
            raise ValueError(f"local stack has no value for !GetAtt {logical_id}.{attribute}")
        return self.attributes[(logical_id, attribute)]

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        variables = {k: self.resolve(v) for k, v in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return str(self._get_att(*name.split(".", 1)))
            return str(self._ref(name))

        return re.sub(r"\$\{([^}]+)\}", replace, text)


def resource_properties(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    """A resource's Properties, with a clear error when the template lacks the resource."""
    try:
        return template["Resources"][logical_id].get("Properties", {})
    except KeyError:
        raise ValueError(f"template.yaml has no resource {logical_id}") from None


def queue_attributes(properties: dict[str, Any]) -> dict[str, str]:
    """CloudFormation queue properties → CreateQueue attributes (all strings, JSON for policies)."""
    attributes = {}
    for name in QUEUE_ATTRIBUTE_PROPERTIES:
        if name not in properties:
            continue
        value = properties[name]
        if isinstance(value, dict):
            attributes[name] = json.dumps(value)
        elif isinstance(value, bool):
            attributes[name] = "true" if value else "false"
        else:
            attributes[name] = str(value)
    return attributes


def table_arguments(properties: dict[str, Any], table_name: str) -> dict[str, Any]:
    """CloudFormation table properties → CreateTable keyword arguments."""
    arguments: dict[str, Any] = {
        "TableName": table_name,
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "KeySchema": properties["KeySchema"],
        "BillingMode": properties.get("BillingMode", "PROVISIONED"),
    }
    for name in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes", "ProvisionedThroughput"):
        if name in properties:
            arguments[name] = properties[name]
    sse = properties.get("SSESpecification")
    if sse:
        # CloudFormation says SSEEnabled, the API says Enabled.
        arguments["SSESpecification"] = {
            "Enabled": _as_bool(sse.get("SSEEnabled", False)),
            **({"SSEType": sse["SSEType"]} if "SSEType" in sse else {}),
            **({"KMSMasterKeyId": sse["KMSMasterKeyId"]} if "KMSMasterKeyId" in sse else {}),
        }
    return arguments


def notification_configuration(properties: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation NotificationConfiguration → PutBucketNotificationConfiguration's shape."""
    queue_configurations = []
    for entry in properties.get("NotificationConfiguration", {}).get("QueueConfigurations", []):
        configuration: dict[str, Any] = {"QueueArn": entry["Queue"], "Events": [entry["Event"]]}
        rules = entry.get("Filter", {}).get("S3Key", {}).get("Rules")
        if rules:
            configuration["Filter"] = {
                "Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}
            }
        queue_configurations.append(configuration)
    return {"QueueConfigurations": queue_configurations}


def encryption_configuration(properties: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation BucketEncryption → PutBucketEncryption's ServerSideEncryptionConfiguration."""
    rules = []
    for rule in properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]:
        # CloudFormation: ServerSideEncryptionByDefault, API: ApplyServerSideEncryptionByDefault.
        translated = {
            ("ApplyServerSideEncryptionByDefault" if k == "ServerSideEncryptionByDefault" else k): v
            for k, v in rule.items()
        }
        if "BucketKeyEnabled" in translated:
            translated["BucketKeyEnabled"] = _as_bool(translated["BucketKeyEnabled"])
        rules.append(translated)
    return {"Rules": rules}


def _as_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() == "true"


def create_local_resources(
    *,
    s3_client: Any,
    sqs_client: Any,
    dynamodb_client: Any,
    names: LocalNames | None = None,
    template: dict[str, Any] | None = None,
) -> LocalResources:
    """Create the template's bucket, DLQs, queues, table and bucket → queue notification."""
    serialise_dynamodb()  # conditional writes atomic, as on DynamoDB (local_stack.atomic_dynamodb)
    names = names or LocalNames()
    template = template if template is not None else read_template()
    region = s3_client.meta.region_name
    resolver = _Resolver(template, region=region, stack_name=names.stack_name)

    dead_letter_queue_url, dead_letter_queue_arn = _create_queue(
        sqs_client, resolver, template, DEAD_LETTER_QUEUE_ID, names.dead_letter_queue
    )
    queue_url, queue_arn = _create_queue(sqs_client, resolver, template, QUEUE_ID, names.queue)
    backfill_dead_letter_queue_url, backfill_dead_letter_queue_arn = _create_queue(
        sqs_client,
        resolver,
        template,
        BACKFILL_DEAD_LETTER_QUEUE_ID,
        names.backfill_dead_letter_queue_name,
    )
    backfill_queue_url, backfill_queue_arn = _create_queue(
        sqs_client, resolver, template, BACKFILL_QUEUE_ID, names.backfill_queue_name
    )

    create_table(dynamodb_client, names.table, template=template, resolver=resolver)

    resolver.refs[BUCKET_ID] = names.bucket
    bucket_properties = resolver.resolve(resource_properties(template, BUCKET_ID))
    _create_bucket(s3_client, names.bucket, region)
    if "PublicAccessBlockConfiguration" in bucket_properties:
        s3_client.put_public_access_block(
            Bucket=names.bucket,
            PublicAccessBlockConfiguration={
                k: _as_bool(v)
                for k, v in bucket_properties["PublicAccessBlockConfiguration"].items()
            },
        )
    if "BucketEncryption" in bucket_properties:
        s3_client.put_bucket_encryption(
            Bucket=names.bucket,
            ServerSideEncryptionConfiguration=encryption_configuration(bucket_properties),
        )
    # VersioningConfiguration is not applied: moto sends no notification when a delete on a
    # versioned bucket creates a delete marker (AWS sends ObjectRemoved:DeleteMarkerCreated, which
    # the worker handles like ObjectRemoved:Delete: any ObjectRemoved:* tombstones the item), so a
    # versioned local bucket would never announce a delete. Unversioned, it sends
    # ObjectRemoved:Delete, the same path in the worker.
    s3_client.put_bucket_notification_configuration(
        Bucket=names.bucket,
        NotificationConfiguration=notification_configuration(bucket_properties),
    )

    return LocalResources(
        bucket=names.bucket,
        queue_url=queue_url,
        queue_arn=queue_arn,
        dead_letter_queue_url=dead_letter_queue_url,
        dead_letter_queue_arn=dead_letter_queue_arn,
        table_name=names.table,
        backfill_queue_url=backfill_queue_url,
        backfill_queue_arn=backfill_queue_arn,
        backfill_dead_letter_queue_url=backfill_dead_letter_queue_url,
        backfill_dead_letter_queue_arn=backfill_dead_letter_queue_arn,
    )


def create_table(
    dynamodb_client: Any,
    table_name: str,
    *,
    template: dict[str, Any] | None = None,
    resolver: _Resolver | None = None,
) -> str:
    """Create the template's catalogue table (keys, indexes, encryption, PITR, TTL) as
    ``table_name``. Also what a stack update that replaces the table does: a new table with a new
    name beside the retained old one (docs/operations.md: migrating the catalogue)."""
    template = template if template is not None else read_template()
    if resolver is None:
        resolver = _Resolver(
            template, region=dynamodb_client.meta.region_name, stack_name="local-table"
        )
    table_properties = resolver.resolve(resource_properties(template, TABLE_ID))
    dynamodb_client.create_table(**table_arguments(table_properties, table_name))
    dynamodb_client.get_waiter("table_exists").wait(TableName=table_name)
    pitr = table_properties.get("PointInTimeRecoverySpecification", {})
    if _as_bool(pitr.get("PointInTimeRecoveryEnabled", False)):
        dynamodb_client.update_continuous_backups(
            TableName=table_name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )
    ttl = table_properties.get("TimeToLiveSpecification", {})
    if _as_bool(ttl.get("Enabled", False)):
        # CreateTable takes no TTL; CloudFormation makes this second call for us on AWS.
        dynamodb_client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
        )
    resolver.refs[TABLE_ID] = table_name
    return table_name


def _create_queue(
    sqs_client: Any, resolver: _Resolver, template: dict[str, Any], logical_id: str, name: str
) -> tuple[str, str]:
    properties = resolver.resolve(resource_properties(template, logical_id))
    url = sqs_client.create_queue(QueueName=name, Attributes=queue_attributes(properties))[
        "QueueUrl"
    ]
    arn = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    # The queue's ARN tells us the account the endpoint runs as; later !Subs use it.
    resolver.refs["AWS::AccountId"] = arn.split(":")[4]
    resolver.refs[logical_id] = url
    resolver.attributes[(logical_id, "Arn")] = arn
    resolver.attributes[(logical_id, "QueueName")] = name
    resolver.attributes[(logical_id, "QueueUrl")] = url
    return url, arn


def _create_bucket(s3_client: Any, bucket: str, region: str) -> None:
    if region == "us-east-1":
        s3_client.create_bucket(Bucket=bucket)
    else:
        s3_client.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
        )

"""template.yaml says what issue 5 asks, and the template reader resolves what the local stack uses.

cfn-lint and checkov (make lint) check the template's syntax and common misconfigurations; these
tests pin this product's own rules: least privilege, the queue timings, the encryption, the
bucket <-> queue wiring and the names the worker and the local stack rely on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from contracts.artifact import VERSION_PATTERN
from contracts.catalogue import PROBE_PREFIX
from local_stack.resources import (
    QUEUE_ATTRIBUTE_PROPERTIES,
    TEMPLATE_PATH,
    _Resolver,
    notification_configuration,
    queue_attributes,
    read_template,
    table_arguments,
)

TEMPLATE = read_template()
RESOURCES = TEMPLATE["Resources"]
PARAMETERS = TEMPLATE["Parameters"]


def properties(logical_id: str) -> dict[str, Any]:
    return RESOURCES[logical_id]["Properties"]


def role_statements(
    role_id: str = "CatalogueFunctionRole", *, conditional: bool = False
) -> list[dict[str, Any]]:
    """The role's statements; one under ``!If [condition, statement, AWS::NoValue]`` only when
    ``conditional`` (the migration's grant on the previous table)."""
    role = properties(role_id)
    statements = []
    for policy in role["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:
                _, when_true, when_false = statement["Fn::If"]
                assert when_false == {"Ref": "AWS::NoValue"}
                if conditional:
                    statements.append(when_true)
            else:
                statements.append(statement)
    return statements


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- the reader -------------------------------------------------------------------------------


def test_read_template_turns_short_form_tags_into_plain_long_form(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "Resources:\n"
        "  A:\n"
        "    Type: AWS::SQS::Queue\n"
        "    Properties:\n"
        "      One: !Ref B\n"
        "      Two: !GetAtt B.Arn\n"
        "      Three: !Sub '${B}-x'\n"
        "      Four: !If [C, !Ref B, !Ref AWS::NoValue]\n"
    )
    template = read_template(path)
    props = template["Resources"]["A"]["Properties"]
    assert props == {
        "One": {"Ref": "B"},
        "Two": {"Fn::GetAtt": ["B", "Arn"]},
        "Three": {"Fn::Sub": "${B}-x"},
        "Four": {"Fn::If": ["C", {"Ref": "B"}, {"Ref": "AWS::NoValue"}]},
    }
    assert type(props) is dict
    assert type(props["Three"]["Fn::Sub"]) is str


def test_default_path_is_the_repository_template() -> None:
    assert TEMPLATE_PATH.name == "template.yaml"
    assert TEMPLATE_PATH.parent == Path(__file__).resolve().parents[2]


def test_resolver_resolves_ref_getatt_sub_and_join() -> None:
    resolver = _Resolver(
        {"Parameters": {"P": {"Type": "String", "Default": "pp"}}},
        region="eu-west-1",
        stack_name="s",
    )
    resolver.refs["AWS::AccountId"] = "111122223333"
    resolver.refs["Q"] = "https://queue"
    resolver.attributes[("Q", "Arn")] = "arn:aws:sqs:eu-west-1:111122223333:q"

    assert resolver.resolve({"Ref": "P"}) == "pp"
    assert resolver.resolve({"Fn::GetAtt": ["Q", "Arn"]}).endswith(":q")
    assert resolver.resolve({"Fn::GetAtt": "Q.Arn"}).endswith(":q")
    assert (
        resolver.resolve({"Fn::Sub": "${P}-${AWS::AccountId}-${AWS::Region}-${Q.Arn}-${!Lit}"})
        == "pp-111122223333-eu-west-1-arn:aws:sqs:eu-west-1:111122223333:q-${Lit}"
    )
    assert resolver.resolve({"Fn::Sub": ["${X}/${P}", {"X": {"Ref": "Q"}}]}) == "https://queue/pp"
    assert resolver.resolve({"Fn::Join": ["-", ["a", {"Ref": "P"}]]}) == "a-pp"
    assert resolver.resolve({"nested": [{"Ref": "P"}]}) == {"nested": ["pp"]}


@pytest.mark.parametrize(
    "value",
    [{"Ref": "Missing"}, {"Fn::GetAtt": ["Missing", "Arn"]}, {"Fn::If": ["C", 1, 2]}],
)
def test_resolver_refuses_what_it_cannot_resolve(value: dict[str, Any]) -> None:
    resolver = _Resolver({}, region="eu-west-1", stack_name="s")
    with pytest.raises(ValueError, match="local stack"):
        resolver.resolve(value)


def test_translations_to_api_shapes() -> None:
    assert queue_attributes(
        {"VisibilityTimeout": 30, "SqsManagedSseEnabled": True, "RedrivePolicy": {"a": 1}}
    ) == {"VisibilityTimeout": "30", "SqsManagedSseEnabled": "true", "RedrivePolicy": '{"a": 1}'}
    arguments = table_arguments(
        {
            "AttributeDefinitions": [],
            "KeySchema": [],
            "BillingMode": "PAY_PER_REQUEST",
            "SSESpecification": {"SSEEnabled": True},
        },
        "t",
    )
    assert arguments["SSESpecification"] == {"Enabled": True}
    assert notification_configuration(
        {
            "NotificationConfiguration": {
                "QueueConfigurations": [
                    {
                        "Event": "s3:ObjectCreated:*",
                        "Queue": "arn:q",
                        "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": "u/"}]}},
                    }
                ]
            }
        }
    ) == {
        "QueueConfigurations": [
            {
                "QueueArn": "arn:q",
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "u/"}]}},
            }
        ]
    }


def test_every_queue_property_in_the_template_reaches_the_local_queue() -> None:
    """A queue property the local stack does not apply would be silent drift."""
    ignored = {"QueueName", "Tags"}
    for logical_id in (
        "CatalogueQueue",
        "CatalogueDeadLetterQueue",
        "BackfillQueue",
        "BackfillDeadLetterQueue",
    ):
        unapplied = set(properties(logical_id)) - set(QUEUE_ATTRIBUTE_PROPERTIES) - ignored
        assert not unapplied, f"{logical_id}: local stack does not apply {unapplied}"


def test_every_bucket_and_table_property_is_applied_locally_or_known_to_be_skipped() -> None:
    applied_or_skipped = {
        "UploadsBucket": {
            # applied by create_local_resources
            "PublicAccessBlockConfiguration",
            "BucketEncryption",
            "NotificationConfiguration",
            # replaced by the local name, or irrelevant to moto; versioning is left off because
            # moto announces no delete marker (local_stack/resources.py says why)
            "VersioningConfiguration",
            "BucketName",
            "OwnershipControls",
            "LifecycleConfiguration",
        },
        "CatalogueTable": {
            "BillingMode",
            "AttributeDefinitions",
            "KeySchema",
            "GlobalSecondaryIndexes",
            "SSESpecification",
            "PointInTimeRecoverySpecification",
            "TimeToLiveSpecification",
            # protects the deployed table from deletion; meaningless on moto
            "DeletionProtectionEnabled",
        },
    }
    for logical_id, known in applied_or_skipped.items():
        assert set(properties(logical_id)) <= known, logical_id


# --- names other code relies on --------------------------------------------------------------


def test_logical_ids_and_table_schema_the_worker_relies_on() -> None:
    for logical_id in (
        "UploadsBucket",
        "CatalogueQueue",
        "CatalogueDeadLetterQueue",
        "CatalogueTable",
        "CatalogueFunction",
    ):
        assert logical_id in RESOURCES
    # The table's key schema and indexes are compared with contracts.catalogue's names in
    # tests/unit/test_catalogue_schema.py; here only that every key attribute is declared.
    table = properties("CatalogueTable")
    types = {d["AttributeName"]: d["AttributeType"] for d in table["AttributeDefinitions"]}
    used = {entry["AttributeName"] for entry in table["KeySchema"]} | {
        entry["AttributeName"]
        for index in table["GlobalSecondaryIndexes"]
        for entry in index["KeySchema"]
    }
    assert types == dict.fromkeys(used, "S")


def test_model_version_parameter_accepts_exactly_the_published_versions() -> None:
    parameter = PARAMETERS["ModelVersion"]
    assert "Default" not in parameter, "the stack must record which model it serves"
    assert parameter["AllowedPattern"] == VERSION_PATTERN.pattern


# --- bucket ------------------------------------------------------------------------------------


def test_bucket_blocks_public_access_encrypts_and_denies_plain_http() -> None:
    bucket = properties("UploadsBucket")
    assert all(value is True for value in bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}

    policy = properties("UploadsBucketPolicy")
    assert policy["Bucket"] == {"Ref": "UploadsBucket"}
    (deny,) = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny["Principal"] == "*"
    assert deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {"Fn::GetAtt": ["UploadsBucket", "Arn"]} in deny["Resource"]
    assert {"Fn::Sub": "${UploadsBucket.Arn}/*"} in deny["Resource"]


def test_bucket_notifies_the_queue_of_creates_and_removes_under_uploads_only() -> None:
    configurations = properties("UploadsBucket")["NotificationConfiguration"]
    assert set(configurations) == {"QueueConfigurations"}
    events = set()
    for entry in configurations["QueueConfigurations"]:
        assert entry["Queue"] == {"Fn::GetAtt": ["CatalogueQueue", "Arn"]}
        assert entry["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "uploads/"}]
        events.add(entry["Event"])
    assert events == {"s3:ObjectCreated:*", "s3:ObjectRemoved:*"}


def test_template_states_that_the_worker_never_writes_to_the_bucket() -> None:
    assert "never writes to the uploads bucket" in TEMPLATE_PATH.read_text()


def test_bucket_waits_for_the_queue_policy_and_the_names_agree() -> None:
    """S3 validates the destination when the notification is put; the policy must exist first.

    The queue policy names the bucket by a !Sub of the same pattern (no !GetAtt: that would be
    a circular dependency), so the two spellings must stay identical.
    """
    bucket = RESOURCES["UploadsBucket"]
    assert "CatalogueQueuePolicy" in as_list(bucket["DependsOn"])
    bucket_name = bucket["Properties"]["BucketName"]["Fn::Sub"]
    (allow,) = [
        s
        for s in properties("CatalogueQueuePolicy")["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow"
    ]
    assert allow["Condition"]["ArnEquals"]["aws:SourceArn"] == {
        "Fn::Sub": f"arn:${{AWS::Partition}}:s3:::{bucket_name}"
    }


# --- queues ------------------------------------------------------------------------------------


def test_only_this_bucket_of_this_account_may_send_to_the_queue() -> None:
    policy = properties("CatalogueQueuePolicy")
    assert policy["Queues"] == [{"Ref": "CatalogueQueue"}]
    statements = policy["PolicyDocument"]["Statement"]
    (allow,) = [s for s in statements if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"}
    assert allow["Action"] == "sqs:SendMessage"
    assert allow["Resource"] == {"Fn::GetAtt": ["CatalogueQueue", "Arn"]}
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert "aws:SourceArn" in allow["Condition"]["ArnEquals"]
    (deny,) = [s for s in statements if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_queues_are_encrypted() -> None:
    for logical_id in ("CatalogueQueue", "CatalogueDeadLetterQueue"):
        queue = properties(logical_id)
        assert queue.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in queue


@pytest.mark.parametrize(
    ("queue_id", "event"), [("CatalogueQueue", "Uploads"), ("BackfillQueue", "Backfill")]
)
def test_visibility_timeout_covers_six_function_timeouts_plus_the_batching_window(
    queue_id: str, event: str
) -> None:
    """AWS's rule for SQS event sources, for every timeout the parameter allows."""
    queue = properties(queue_id)
    window = properties("CatalogueFunction")["Events"][event]["Properties"][
        "MaximumBatchingWindowInSeconds"
    ]
    longest_timeout = PARAMETERS["FunctionTimeout"]["MaxValue"]
    assert queue["VisibilityTimeout"] >= 6 * longest_timeout + window
    assert properties("CatalogueFunction")["Timeout"] == {"Ref": "FunctionTimeout"}


def test_redrive_after_a_few_receives_and_the_dlq_keeps_messages_14_days() -> None:
    queue = properties("CatalogueQueue")
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["CatalogueDeadLetterQueue", "Arn"]
    }
    assert 2 <= queue["RedrivePolicy"]["maxReceiveCount"] <= 10
    dlq = properties("CatalogueDeadLetterQueue")
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    # A moved message keeps its enqueue time: the DLQ must outlive the source queue's retention.
    assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]


# --- function ----------------------------------------------------------------------------------


def test_function_is_an_image_built_from_infra_dockerfile() -> None:
    function = RESOURCES["CatalogueFunction"]
    assert function["Properties"]["PackageType"] == "Image"
    metadata = function["Metadata"]
    assert metadata["Dockerfile"] == "infra/Dockerfile"
    assert metadata["DockerContext"] == "."
    assert metadata["DockerTag"]
    assert metadata["DockerBuildArgs"]["MODEL_VERSION"] == {"Ref": "ModelVersion"}
    assert set(metadata["DockerBuildArgs"]) == {"MODEL_VERSION", "DEPLOY_SETTINGS"}


def test_sqs_event_reports_partial_failures_and_caps_concurrency() -> None:
    event = properties("CatalogueFunction")["Events"]["Uploads"]
    assert event["Type"] == "SQS"
    source = event["Properties"]
    assert source["Queue"] == {"Fn::GetAtt": ["CatalogueQueue", "Arn"]}
    assert 1 <= source["BatchSize"] <= 10
    assert source["MaximumBatchingWindowInSeconds"] >= 0
    assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert source["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "MaximumConcurrency"}}


def test_function_settings_come_from_parameters_and_refs() -> None:
    function = properties("CatalogueFunction")
    assert function["MemorySize"] == {"Ref": "FunctionMemorySize"}
    assert function["Architectures"] in (["arm64"], ["x86_64"])
    variables = function["Environment"]["Variables"]
    assert variables["CATALOGUE_TABLE"] == {"Ref": "CatalogueTable"}
    assert variables["MODEL_URI"] == "/opt/model"
    assert variables["MODEL_VERSION"] == {"Ref": "ModelVersion"}
    # Empty parameter -> the variable is absent, so the manifest's threshold applies.
    assert variables["REVIEW_THRESHOLD"] == {
        "Fn::If": ["HasReviewThreshold", {"Ref": "ReviewThreshold"}, {"Ref": "AWS::NoValue"}]
    }
    assert PARAMETERS["ReviewThreshold"]["Default"] == ""
    for name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "LOG_LEVEL"):
        assert variables[name]
    pattern = re.compile(PARAMETERS["ReviewThreshold"]["AllowedPattern"])
    for good in ("", "0.5", ".85", "1", "1.0", "0"):
        assert pattern.fullmatch(good), good
    for bad in ("1.5", "-0.1", "abc", "2"):
        assert not pattern.fullmatch(bad), bad


def test_architecture_matches_the_dockerfile_base_image() -> None:
    (architecture,) = properties("CatalogueFunction")["Architectures"]
    dockerfile = (TEMPLATE_PATH.parent / "infra" / "Dockerfile").read_text()
    # The first FROM is the base image; later stages build on it by its stage name.
    base, *stages = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert base.endswith(f"-{architecture}"), base
    assert all("/" not in stage for stage in stages), stages


def test_log_group_has_retention_and_is_the_functions() -> None:
    assert properties("CatalogueLogGroup")["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert properties("CatalogueFunction")["LoggingConfig"] == {
        "LogGroup": {"Ref": "CatalogueLogGroup"}
    }


# --- least privilege ---------------------------------------------------------------------------


def test_function_uses_only_the_explicit_role() -> None:
    function = properties("CatalogueFunction")
    assert function["Role"] == {"Fn::GetAtt": ["CatalogueFunctionRole", "Arn"]}
    assert "Policies" not in function, "SAM policy templates would widen the role"
    assert "ManagedPolicyArns" not in properties("CatalogueFunctionRole")


@pytest.mark.parametrize(
    "role_id", ["CatalogueFunctionRole", "CodeDeployRole", "PreTrafficHookRole"]
)
def test_no_statement_grants_a_wildcard_resource_or_action(role_id: str) -> None:
    for statement in role_statements(role_id, conditional=True):
        assert statement["Effect"] == "Allow"
        for resource in as_list(statement["Resource"]):
            assert resource != "*", statement["Sid"]
        for action in as_list(statement["Action"]):
            assert "*" not in action, statement["Sid"]


def test_role_grants_exactly_what_the_worker_uses() -> None:
    grants = {
        (action, repr(resource))
        for statement in role_statements()
        for action in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    }
    log_group = repr({"Fn::GetAtt": ["CatalogueLogGroup", "Arn"]})
    uploads = repr({"Fn::Sub": "${UploadsBucket.Arn}/uploads/*"})
    probes = repr({"Fn::Sub": "${UploadsBucket.Arn}/deploy-probe/*"})
    bucket = repr({"Fn::GetAtt": ["UploadsBucket", "Arn"]})
    table = repr({"Fn::GetAtt": ["CatalogueTable", "Arn"]})
    queue = repr({"Fn::GetAtt": ["CatalogueQueue", "Arn"]})
    backfill = repr({"Fn::GetAtt": ["BackfillQueue", "Arn"]})
    assert grants == {
        ("logs:CreateLogStream", log_group),
        ("logs:PutLogEvents", log_group),
        ("s3:GetObject", uploads),
        ("s3:GetObject", probes),
        ("s3:ListBucket", bucket),
        ("dynamodb:DescribeTable", table),
        ("dynamodb:GetItem", table),
        ("dynamodb:UpdateItem", table),
        ("sqs:ReceiveMessage", queue),
        ("sqs:DeleteMessage", queue),
        ("sqs:GetQueueAttributes", queue),
        ("sqs:ReceiveMessage", backfill),
        ("sqs:DeleteMessage", backfill),
        ("sqs:GetQueueAttributes", backfill),
    }


# boto3 client methods -> the IAM action each needs. The worker's modules only: local_stack and
# operations.backfill run on a developer's machine or with an operator's credentials, not Lambda.
BOTO3_CALLS = {
    "dynamodb": {
        "batch_get_item": "BatchGetItem",
        "batch_write_item": "BatchWriteItem",
        "delete_item": "DeleteItem",
        "describe_table": "DescribeTable",
        "get_item": "GetItem",
        "put_item": "PutItem",
        "query": "Query",
        "scan": "Scan",
        "transact_get_items": "GetItem",
        "transact_write_items": "UpdateItem",
        "update_item": "UpdateItem",
    },
    "s3": {
        "copy_object": "PutObject",
        "delete_object": "DeleteObject",
        "delete_objects": "DeleteObject",
        "get_object": "GetObject",
        "head_object": "GetObject",
        "list_objects_v2": "ListBucket",
        "put_object": "PutObject",
        "upload_file": "PutObject",
        "upload_fileobj": "PutObject",
    },
}
OFF_LAMBDA_MODULES = {"local.py", "backfill.py"}


def worker_sources() -> str:
    root = TEMPLATE_PATH.parent
    files = [
        path
        for folder in ("handler", "contracts")
        for path in sorted((root / folder).glob("*.py"))
        if path.name not in OFF_LAMBDA_MODULES
    ]
    return "\n".join(path.read_text() for path in files)


@pytest.mark.parametrize("service", ["dynamodb"])
def test_role_grants_exactly_the_calls_the_worker_code_makes(service: str) -> None:
    """The worker's DynamoDB calls, read from its code, are the role's DynamoDB actions."""
    source = worker_sources()
    used = {
        f"{service}:{action}"
        for method, action in BOTO3_CALLS[service].items()
        if re.search(rf"\.{method}\(", source)
    }
    granted = {
        action
        for statement in role_statements()
        for action in as_list(statement["Action"])
        if action.startswith(f"{service}:")
    }
    assert granted == used


def test_the_worker_code_makes_no_s3_call_beyond_reading() -> None:
    source = worker_sources()
    used = {
        action
        for method, action in BOTO3_CALLS["s3"].items()
        if re.search(rf"\.{method}\(", source)
    }
    assert used <= {"GetObject"}


def test_the_previous_table_is_granted_only_during_a_migration_and_only_what_workers_call() -> None:
    (previous,) = [
        s for s in role_statements(conditional=True) if s["Sid"] == "KeepPreviousVersionsWorking"
    ]
    assert previous not in role_statements()
    assert previous["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}"
        ":table/${PreviousCatalogueTable}"
    }
    # The schema-1 worker's calls (git history: it deleted items) and today's.
    assert set(previous["Action"]) == {
        "dynamodb:DescribeTable",
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    }
    assert PARAMETERS["PreviousCatalogueTable"]["Default"] == ""


def test_the_hook_may_touch_only_probe_keys_and_only_the_new_version() -> None:
    statements = {s["Sid"]: s for s in role_statements("PreTrafficHookRole")}
    assert statements["InvokeTheNewVersion"]["Resource"] == {"Ref": "CatalogueFunction.Version"}
    items = statements["CheckAndRemoveProbeItems"]
    assert set(items["Action"]) == {"dynamodb:GetItem", "dynamodb:DeleteItem"}
    assert items["Condition"] == {
        "ForAllValues:StringLike": {
            "dynamodb:LeadingKeys": [{"Fn::Sub": f"${{UploadsBucket}}/{PROBE_PREFIX}*"}]
        }
    }
    listing = statements["FindKnownPhotos"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": f"{PROBE_PREFIX}*"}}
    actions = {a for s in statements.values() for a in as_list(s["Action"])}
    assert not any(a.startswith(("s3:Put", "s3:Delete")) for a in actions)
    assert "dynamodb:UpdateItem" not in actions


def test_role_cannot_write_to_the_bucket() -> None:
    actions = {action for s in role_statements() for action in as_list(s["Action"])}
    s3_actions = {a for a in actions if a.startswith("s3:")}
    assert s3_actions <= {"s3:GetObject", "s3:ListBucket"}


# --- table, alarms, outputs, checkov skips -----------------------------------------------------


def test_table_is_on_demand_recoverable_and_encrypted() -> None:
    table = properties("CatalogueTable")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"]["SSEEnabled"] is True


def alarms() -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in RESOURCES.items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }


def test_alarms_watch_the_dlq_function_errors_throttles_queue_ages_and_failed_records() -> None:
    watched = {
        (p["Namespace"], p["MetricName"], repr(p["Dimensions"][0]["Value"]))
        for p in alarms().values()
    }
    dlq = repr({"Fn::GetAtt": ["CatalogueDeadLetterQueue", "QueueName"]})
    assert watched == {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", dlq),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage", dlq),
        ("AWS/Lambda", "Errors", repr({"Ref": "CatalogueFunction"})),
        ("AWS/Lambda", "Throttles", repr({"Ref": "CatalogueFunction"})),
        (
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            repr({"Fn::GetAtt": ["CatalogueQueue", "QueueName"]}),
        ),
        # handler/app.py's Powertools metric, namespace and service as the function sets them
        ("Momee/Cataloguer", "FailedRecords", repr("momee-cataloguer")),
        (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            repr({"Fn::GetAtt": ["BackfillDeadLetterQueue", "QueueName"]}),
        ),
        (
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            repr({"Fn::GetAtt": ["BackfillDeadLetterQueue", "QueueName"]}),
        ),
    }
    # The same function's Errors twice: every version (pages), the deployed version (rolls back).
    errors = [
        logical_id
        for logical_id, p in alarms().items()
        if (p["Namespace"], p["MetricName"]) == ("AWS/Lambda", "Errors")
    ]
    assert sorted(errors) == ["FunctionErrorsAlarm", "NewVersionErrorsAlarm"]
    for alarm in alarms().values():
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["AlarmActions"] == alarm["OKActions"]


def test_an_outage_or_a_failed_cold_start_alarms_within_minutes() -> None:
    # A cold start that fails raises in every invocation, and so does a batch whose every record
    # failed (handler/app.py keeps Powertools' default): Lambda's Errors metric sees both.
    errors = properties("FunctionErrorsAlarm")
    assert errors["Period"] * errors["EvaluationPeriods"] <= 300
    assert (errors["Statistic"], errors["Threshold"]) == ("Sum", 0)
    assert errors["ComparisonOperator"] == "GreaterThanThreshold"
    throttles = properties("FunctionThrottlesAlarm")
    assert throttles["Period"] * throttles["EvaluationPeriods"] <= 300
    # Records failing steadily (some, not all, of each batch) alarm within 15 minutes.
    failed = properties("FailedRecordsAlarm")
    assert failed["Period"] * failed["EvaluationPeriods"] <= 900
    variables = properties("CatalogueFunction")["Environment"]["Variables"]
    assert failed["Namespace"] == variables["POWERTOOLS_METRICS_NAMESPACE"]
    assert failed["Dimensions"] == [
        {"Name": "service", "Value": variables["POWERTOOLS_SERVICE_NAME"]}
    ]


@pytest.mark.parametrize(
    ("alarm", "queue"),
    [
        ("DeadLetterQueueAgeAlarm", "CatalogueDeadLetterQueue"),
        ("BackfillDeadLetterQueueAgeAlarm", "BackfillDeadLetterQueue"),
    ],
)
def test_dlq_age_alarm_fires_well_before_messages_expire(alarm: str, queue: str) -> None:
    age = properties(alarm)
    retention = properties(queue)["MessageRetentionPeriod"]
    assert age["Statistic"] == "Maximum"
    assert age["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}
    ]
    # At least 3 days left to fix the cause and redrive before SQS deletes the oldest message.
    assert age["Threshold"] <= retention - 3 * 24 * 3600


def test_dead_letter_queues_refuse_plain_http_like_their_source_queues() -> None:
    policies = [
        resource["Properties"]
        for resource in RESOURCES.values()
        if resource["Type"] == "AWS::SQS::QueuePolicy"
    ]
    protected = {
        queue["Ref"]
        for policy in policies
        for statement in policy["PolicyDocument"]["Statement"]
        if statement["Effect"] == "Deny"
        and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for queue in policy["Queues"]
    }
    queues = {k for k, r in RESOURCES.items() if r["Type"] == "AWS::SQS::Queue"}
    assert protected == queues


def test_uploads_keep_deleted_and_replaced_photos_for_a_week_then_drop_them() -> None:
    bucket = properties("UploadsBucket")
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = {rule["Id"]: rule for rule in bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-noncurrent-versions"]["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": 7
    }
    assert rules["remove-expired-delete-markers"]["ExpiredObjectDeleteMarker"] is True
    # A delete on a versioned bucket is ObjectRemoved:DeleteMarkerCreated: still forwarded.
    events = {c["Event"] for c in bucket["NotificationConfiguration"]["QueueConfigurations"]}
    assert "s3:ObjectRemoved:*" in events


def test_outputs_name_everything_an_operator_needs() -> None:
    outputs = {name: output["Value"] for name, output in TEMPLATE["Outputs"].items()}
    assert outputs == {
        "UploadsBucketName": {"Ref": "UploadsBucket"},
        "CatalogueTableName": {"Ref": "CatalogueTable"},
        "CatalogueQueueUrl": {"Ref": "CatalogueQueue"},
        "DeadLetterQueueUrl": {"Ref": "CatalogueDeadLetterQueue"},
        "BackfillQueueUrl": {"Ref": "BackfillQueue"},
        "BackfillDeadLetterQueueUrl": {"Ref": "BackfillDeadLetterQueue"},
        "CatalogueFunctionName": {"Ref": "CatalogueFunction"},
        "CatalogueFunctionAlias": {"Ref": "CatalogueFunction.Alias"},
        "PreTrafficHookLogGroupName": {"Ref": "PreTrafficHookLogGroup"},
        "StackAlarmTopicArn": {"Ref": "AlarmTopic"},
    }


def test_every_checkov_skip_is_justified() -> None:
    for logical_id, resource in RESOURCES.items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert re.fullmatch(r"CKV_AWS_\d+", skip["id"]), logical_id
            assert len(skip.get("comment", "")) >= 60, f"{logical_id} {skip['id']}: say why"


# --- rollout: versions behind an alias, gradual shift, rollback on the alarm ---------------------


def test_every_deploy_publishes_a_version_behind_the_live_alias() -> None:
    function = properties("CatalogueFunction")
    assert function["AutoPublishAlias"] == "live"
    # A settings-only change (ModelVariant, ReviewThreshold) is a new version too, shifted and
    # rolled back like an image change.
    assert function["AutoPublishAliasAllProperties"] is True


def test_the_alias_shifts_gradually_and_rolls_back_on_the_new_versions_alarm_only() -> None:
    preference = properties("CatalogueFunction")["DeploymentPreference"]
    assert preference["Type"] == {"Ref": "DeploymentType"}
    assert PARAMETERS["DeploymentType"]["Default"] != "AllAtOnce"
    assert set(PARAMETERS["DeploymentType"]["AllowedValues"]) >= {"AllAtOnce"}
    # Not FunctionErrorsAlarm: the old version's or a backfill's errors must not roll back a
    # healthy deploy (it still pages people).
    assert preference["Alarms"] == [{"Ref": "NewVersionErrorsAlarm"}]
    assert preference["Hooks"] == {"PreTraffic": {"Ref": "PreTrafficHookFunction"}}
    assert preference["Role"] == {"Fn::GetAtt": ["CodeDeployRole", "Arn"]}
    paging = properties("FunctionErrorsAlarm")
    assert paging["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "CatalogueFunction"}}]


def test_the_rollback_alarm_counts_only_the_deployed_version_through_the_alias() -> None:
    """Lambda Developer Guide, "Viewing metrics": ExecutedVersion compares the versions behind a
    weighted alias; Lambda sends metrics each minute."""
    alarm = properties("NewVersionErrorsAlarm")
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", "Errors")
    assert alarm["Dimensions"] == [
        {"Name": "FunctionName", "Value": {"Ref": "CatalogueFunction"}},
        {"Name": "Resource", "Value": {"Fn::Sub": "${CatalogueFunction}:live"}},
        {
            "Name": "ExecutedVersion",
            # !GetAtt CatalogueFunction.Version.Version: SAM resolves it to the number of the
            # version this deploy publishes (checked on the transformed template below).
            "Value": {"Fn::GetAtt": ["CatalogueFunction", "Version.Version"]},
        },
    ]
    assert properties("CatalogueFunction")["AutoPublishAlias"] == "live"
    assert (alarm["Period"], alarm["EvaluationPeriods"]) == (60, 1)
    assert (alarm["Statistic"], alarm["Threshold"]) == ("Sum", 0)


def test_codedeploy_may_move_only_this_functions_alias_and_read_only_its_alarm() -> None:
    role = properties("CodeDeployRole")
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "codedeploy.amazonaws.com"}
    assert "ManagedPolicyArns" not in role
    grants = {
        (action, repr(resource))
        for statement in role_statements("CodeDeployRole")
        for action in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    }
    function = repr({"Fn::GetAtt": ["CatalogueFunction", "Arn"]})
    versions = repr({"Fn::Sub": "${CatalogueFunction.Arn}:*"})
    hook = repr({"Fn::GetAtt": ["PreTrafficHookFunction", "Arn"]})
    assert grants == {
        ("lambda:InvokeFunction", hook),
        *(
            (action, resource)
            for action in (
                "lambda:GetAlias",
                "lambda:UpdateAlias",
                "lambda:GetProvisionedConcurrencyConfig",
            )
            for resource in (function, versions)
        ),
        ("cloudwatch:DescribeAlarms", repr({"Fn::GetAtt": ["NewVersionErrorsAlarm", "Arn"]})),
    }


def test_both_queues_invoke_the_aliased_function_and_nothing_bypasses_the_alias() -> None:
    """SAM binds a function's Events to its AutoPublishAlias; no mapping may be declared apart
    from the function (it would target $LATEST or a fixed version)."""
    events = properties("CatalogueFunction")["Events"]
    queues = {name: event["Properties"]["Queue"] for name, event in events.items()}
    assert {event["Type"] for event in events.values()} == {"SQS"}
    assert queues == {
        "Uploads": {"Fn::GetAtt": ["CatalogueQueue", "Arn"]},
        "Backfill": {"Fn::GetAtt": ["BackfillQueue", "Arn"]},
    }
    standalone = {
        logical_id
        for logical_id, resource in RESOURCES.items()
        if resource["Type"]
        in ("AWS::Lambda::EventSourceMapping", "AWS::Lambda::Permission", "AWS::Lambda::Alias")
    }
    assert standalone == set()


def test_sam_transform_points_both_mappings_at_the_alias() -> None:
    """The transformed template itself (aws-sam-translator, what sam deploy submits)."""
    transformed = sam_transformed_template()
    resources = transformed["Resources"]
    (alias_id,) = [k for k, r in resources.items() if r["Type"] == "AWS::Lambda::Alias"]
    assert resources[alias_id]["Properties"]["Name"] == "live"
    assert "CodeDeployLambdaAliasUpdate" in resources[alias_id]["UpdatePolicy"]
    mappings = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
    ]
    assert len(mappings) == 2
    for mapping in mappings:
        assert mapping["FunctionName"] == {"Ref": alias_id}
    assert sorted(m["ScalingConfig"]["MaximumConcurrency"]["Ref"] for m in mappings) == [
        "BackfillMaximumConcurrency",
        "MaximumConcurrency",
    ]
    # SAM created no role of its own (its CodeDeploy role would carry Resource "*").
    roles = {k for k, r in resources.items() if r["Type"] == "AWS::IAM::Role"}
    assert roles == {"CatalogueFunctionRole", "CodeDeployRole", "PreTrafficHookRole"}


def test_sam_transform_runs_the_hook_before_traffic_and_rolls_back_on_the_new_version_only() -> (
    None
):
    """On the template sam deploy submits: the hook guards the alias update; the deployment
    group's only alarm counts errors of the version this deploy publishes, so an error of the
    old version (ExecutedVersion = the old number) or of a backfill on it cannot roll it back."""
    resources = sam_transformed_template()["Resources"]
    (alias_id,) = [k for k, r in resources.items() if r["Type"] == "AWS::Lambda::Alias"]
    (version_id,) = [k for k, r in resources.items() if r["Type"] == "AWS::Lambda::Version"]
    alias = resources[alias_id]
    assert alias["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version_id, "Version"]}
    update = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    assert update["BeforeAllowTrafficHook"] == {"Ref": "PreTrafficHookFunction"}
    (group_id,) = [
        k for k, r in resources.items() if r["Type"] == "AWS::CodeDeploy::DeploymentGroup"
    ]
    assert update["DeploymentGroupName"] == {"Ref": group_id}
    alarms_ = resources[group_id]["Properties"]["AlarmConfiguration"]
    assert alarms_["Enabled"] is True
    assert alarms_["Alarms"] == [{"Name": {"Ref": "NewVersionErrorsAlarm"}}]
    dimensions = {
        d["Name"]: d["Value"]
        for d in resources["NewVersionErrorsAlarm"]["Properties"]["Dimensions"]
    }
    # The version the alias is moving to, and nothing else.
    assert dimensions["ExecutedVersion"] == alias["Properties"]["FunctionVersion"]
    assert dimensions["Resource"] == {"Fn::Sub": "${CatalogueFunction}:live"}
    # The hook invokes exactly that version (its ARN), and may invoke nothing else.
    hook = resources["PreTrafficHookFunction"]["Properties"]
    assert hook["Environment"]["Variables"]["NEW_VERSION"] == {"Ref": version_id}
    statements = resources["PreTrafficHookRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ]
    invokes = [s for s in statements if s["Action"] == "lambda:InvokeFunction"]
    assert invokes == [
        {
            "Sid": "InvokeTheNewVersion",
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": {"Ref": version_id},
        }
    ]


def sam_transformed_template() -> dict[str, Any]:
    """Run aws-sam-translator on template.yaml, in this interpreter or in SAM_TRANSLATOR_PYTHON
    (its pydantic pin clashes with the worker's, so it may live in a virtualenv of its own)."""
    candidates = [os.environ.get("SAM_TRANSLATOR_PYTHON"), sys.executable]
    candidates.append(shutil.which("sam") and str(Path(shutil.which("sam")).parent / "python"))
    script = (
        "import json, sys\n"
        "from samtranslator.translator.transform import transform\n"
        "from samtranslator.yaml_helper import yaml_parse\n"
        "template = yaml_parse(open(sys.argv[1]).read())\n"
        "# What sam build adds: the built image's URI.\n"
        "function = template['Resources']['CatalogueFunction']['Properties']\n"
        "function['ImageUri'] = '123456789012.dkr.ecr.eu-west-1.amazonaws.com/momee:build'\n"
        "hook = template['Resources']['PreTrafficHookFunction']['Properties']\n"
        "hook['CodeUri'] = 's3://momee-build/pre-traffic-hook.zip'\n"
        "params = {'ModelVersion': '20261124T014800Z-3fa9c1d2', 'AWS::Region': 'eu-west-1',"
        " 'AWS::AccountId': '123456789012', 'AWS::Partition': 'aws'}\n"
        "class Loader:\n"
        "    def load(self):\n"
        "        return {}\n"
        "print(json.dumps(transform(template, params, Loader())))\n"
    )
    for python in filter(None, candidates):
        probe = subprocess.run(
            [python, "-c", "import samtranslator"], capture_output=True, check=False
        )
        if probe.returncode != 0:
            continue
        completed = subprocess.run(
            [python, "-c", script, str(TEMPLATE_PATH)], capture_output=True, text=True, check=False
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        return json.loads(completed.stdout)
    pytest.skip(
        "aws-sam-translator not installed (its pydantic pin clashes with the worker's); "
        "set SAM_TRANSLATOR_PYTHON to a Python that has it"
    )


# --- backfill queue ----------------------------------------------------------------------------


def test_backfills_have_their_own_queue_dlq_and_concurrency_cap() -> None:
    backfill = properties("CatalogueFunction")["Events"]["Backfill"]["Properties"]
    uploads = properties("CatalogueFunction")["Events"]["Uploads"]["Properties"]
    assert backfill["Queue"] != uploads["Queue"]
    assert backfill["ScalingConfig"] == {
        "MaximumConcurrency": {"Ref": "BackfillMaximumConcurrency"}
    }
    assert backfill["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert backfill["BatchSize"] == uploads["BatchSize"]
    queue = properties("BackfillQueue")
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["BackfillDeadLetterQueue", "Arn"]
    }
    assert (
        properties("BackfillDeadLetterQueue")["MessageRetentionPeriod"]
        > queue["MessageRetentionPeriod"]
    )
    policy = properties("BackfillQueuePolicy")
    assert policy["Queues"] == [{"Ref": "BackfillQueue"}]
    (deny,) = policy["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # S3 announces uploads to CatalogueQueue only.
    targets = [
        entry["Queue"]
        for entry in properties("UploadsBucket")["NotificationConfiguration"]["QueueConfigurations"]
    ]
    assert {"Fn::GetAtt": ["BackfillQueue", "Arn"]} not in targets


# --- alarms reach someone ----------------------------------------------------------------------


def test_every_alarm_notifies_the_stacks_topic_and_the_optional_existing_one() -> None:
    alarms = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert alarms
    for alarm in alarms:
        for key in ("AlarmActions", "OKActions"):
            assert alarm[key] == [
                {"Ref": "AlarmTopic"},
                {"Fn::If": ["HasAlarmTopic", {"Ref": "AlarmTopicArn"}, {"Ref": "AWS::NoValue"}]},
            ], alarm["AlarmDescription"][:60]


def test_the_alarm_topic_mails_the_optional_address_and_only_cloudwatch_may_publish() -> None:
    subscription = RESOURCES["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"] == {
        "TopicArn": {"Ref": "AlarmTopic"},
        "Protocol": "email",
        "Endpoint": {"Ref": "AlarmEmail"},
    }
    assert PARAMETERS["AlarmEmail"]["Default"] == ""
    assert PARAMETERS["AlarmTopicArn"]["Default"] == ""
    email = re.compile(PARAMETERS["AlarmEmail"]["AllowedPattern"])
    assert email.fullmatch("")
    assert email.fullmatch("ops@momee.id")
    assert not email.fullmatch("not an address")
    topic = re.compile(PARAMETERS["AlarmTopicArn"]["AllowedPattern"])
    assert topic.fullmatch("arn:aws:sns:ap-southeast-1:123456789012:on-call")
    assert not topic.fullmatch("on-call")
    (statement,) = properties("AlarmTopicPolicy")["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert statement["Action"] == "sns:Publish"
    assert statement["Condition"]["StringEquals"] == {
        "aws:SourceAccount": {"Ref": "AWS::AccountId"}
    }


def referenced_parameters(value: Any) -> set[str]:
    """Names of the template parameters a property value refers to (Ref, Sub, inside If)."""
    if isinstance(value, list):
        return set().union(*map(referenced_parameters, value)) if value else set()
    if not isinstance(value, dict):
        return set()
    found: set[str] = set()
    for function, argument in value.items():
        if function == "Ref" and argument in PARAMETERS:
            found.add(argument)
        elif function == "Fn::Sub":
            text = argument if isinstance(argument, str) else argument[0]
            found |= set(re.findall(r"\$\{([A-Za-z0-9]+)\}", text)) & set(PARAMETERS)
        else:
            found |= referenced_parameters(argument)
    return found


def test_every_setting_of_a_version_changes_the_image_so_a_new_version_is_published() -> None:
    """SAM names the version after the image and the template text, not parameter values: a
    parameter that shapes a version's configuration but not the image would update $LATEST and
    leave the alias on the old settings. Each one goes into the image as a build argument."""
    function = RESOURCES["CatalogueFunction"]
    properties_ = function["Properties"]
    version_configuration = [
        properties_["Environment"],
        properties_["MemorySize"],
        properties_["Timeout"],
    ]
    used = referenced_parameters(version_configuration)
    assert used >= {"ModelVersion", "ModelVariant", "FunctionMemorySize", "FunctionTimeout"}
    build_arguments = function["Metadata"]["DockerBuildArgs"]
    in_image = referenced_parameters(list(build_arguments.values()))
    assert used <= in_image, f"not in the image: {sorted(used - in_image)}"

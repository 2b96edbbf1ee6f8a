"""The pre-traffic hook (deploy_hook/pre_traffic.py) against moto, with CodeDeploy stubbed.

GIVEN a deployment whose new version CodeDeploy has published but not yet routed any traffic to,
and NO uploads arriving, WHEN the hook runs THEN

* a working version classifies the known photo to its known label, the hook reports Succeeded,
  and the table holds nothing afterwards (nothing buyers or reviewers could ever list);
* a version that fails at init (settings the image was not built for; a model version the image
  lacks) or classifies the known photo wrongly is reported Failed, with its one-line reason, so
  the alias never moves.

"Invoke the new version" runs the real handler in this process with that version's environment
(:class:`InProcessLambda`: Lambda's Invoke of a qualified version, answered as Lambda answers a
function error). CodeDeploy's PutLifecycleEventHookExecutionStatus is checked with botocore's
Stubber. Every call the hook makes also runs under its role from template.yaml
(tests/support/iam_evaluation.py).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from PIL import Image

from contracts.catalogue import (
    LISTING_CATEGORY,
    OBJECT_ID,
    PROBE_PREFIX,
    REVIEW_QUEUE,
    CatalogueItem,
    CategorySource,
    Status,
)
from deploy_hook import pre_traffic
from handler import app
from handler.events import BACKFILL_EVENT_NAME
from local_stack.resources import LocalNames, create_local_resources, read_template
from local_stack.stack import LocalContext, queue_depth
from tests.support.iam_evaluation import (
    ACCOUNT,
    Enforcer,
    RolePolicies,
    StackValues,
    resolve_policies,
)
from tests.support.tiny_artifact import publish_tiny_artifact

pytestmark = pytest.mark.functional

FUNCTION = "momee-cataloguer-CatalogueFunction-AbC"
NEW_VERSION = 7
DEPLOYMENT = {"DeploymentId": "d-ABCDEF123", "LifecycleEventHookExecutionId": "hook-exec-1"}
BUILT = "variant=float32 review_threshold= memory={memory} timeout=60 log=INFO"


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (seed * 53 % 256, 30 + seed, 200 - seed)).save(buffer, "JPEG")
    return buffer.getvalue()


class InProcessLambda:
    """Lambda's synchronous Invoke of published versions, each run with its own environment."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.versions: dict[str, dict[str, str]] = {}
        self.invocations: list[str] = []

    def publish(self, number: int, environment: dict[str, str]) -> str:
        arn = f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:{FUNCTION}:{number}"
        self.versions[arn] = environment
        return arn

    def invoke(self, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:  # noqa: N803 - boto3's names
        assert InvocationType == "RequestResponse"
        self.invocations.append(FunctionName)
        with self.monkeypatch.context() as patch:
            for name, value in self.versions[FunctionName].items():
                patch.setenv(name, value)
            app.reset_worker()  # a fresh container: its init runs now
            try:
                result = app.lambda_handler(json.loads(Payload), LocalContext())
            except Exception as error:  # what Lambda returns for an unhandled function error
                body = {"errorType": type(error).__name__, "errorMessage": str(error)}
                return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": _body(body)}
            finally:
                app.reset_worker()
        return {"StatusCode": 200, "Payload": _body(result)}


def _body(value: Any) -> io.BytesIO:
    return io.BytesIO(json.dumps(value).encode())


@pytest.fixture(scope="module")
def model_uri(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model")
    publish_tiny_artifact(root)
    return root


@pytest.fixture
def world(model_uri: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for name in ("CATALOGUE_TABLE", "MODEL_URI", "MODEL_VERSION", "MODEL_VARIANT"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        s3, sqs, dynamodb = (boto3.client(name) for name in ("s3", "sqs", "dynamodb"))
        region = s3.meta.region_name
        resources = create_local_resources(
            s3_client=s3,
            sqs_client=sqs,
            dynamodb_client=dynamodb,
            names=LocalNames(bucket=f"momee-cataloguer-uploads-{ACCOUNT}-{region}"),
        )
        # S3 announces a new notification configuration with one s3:TestEvent; nothing else may
        # arrive: no upload happens in these tests, and deploy-probe/ is outside the notification.
        sqs.purge_queue(QueueUrl=resources.queue_url)
        lambdas = InProcessLambda(monkeypatch)
        # Built for the memory the function gets here: 1024 MB on top of this pytest process
        # (tests/conftest.py), which the deploy-settings check compares with the environment.
        built = BUILT.format(memory=os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
        good = {
            "CATALOGUE_TABLE": resources.table_name,
            "MODEL_URI": str(model_uri),
            "IMAGE_DEPLOY_SETTINGS": built,
            "DEPLOY_SETTINGS": built,
        }
        yield {
            "s3": s3,
            "sqs": sqs,
            "dynamodb": dynamodb,
            "resources": resources,
            "lambdas": lambdas,
            "good": good,
            "region": region,
        }
        app.reset_worker()


def label_of(world: dict[str, Any], photo: bytes) -> str:
    """What the model in the image says about the photo: the 'known label' for this test's model
    (the tiny model's answers are deterministic but meaningless, so it is asked once)."""
    s3, dynamodb, bucket = world["s3"], world["dynamodb"], world["resources"].bucket
    table = world["resources"].table_name
    s3.put_object(Bucket=bucket, Key="reference/photo.jpg", Body=photo)
    head = s3.head_object(Bucket=bucket, Key="reference/photo.jpg")
    probe = pre_traffic.Probe("reference/photo.jpg", "?", head["ContentLength"], head["ETag"])
    event = pre_traffic.probe_event(bucket, [probe], "2026-12-03T00:00:00Z")
    arn = world["lambdas"].publish(1, world["good"])
    world["lambdas"].invoke(arn, "RequestResponse", json.dumps(event).encode())
    key = {OBJECT_ID: {"S": f"{bucket}/reference/photo.jpg"}}
    item = dynamodb.get_item(TableName=table, Key=key)["Item"]
    dynamodb.delete_item(TableName=table, Key=key)
    s3.delete_object(Bucket=bucket, Key="reference/photo.jpg")
    return item["category"]["S"]


def hook_role(world: dict[str, Any], version_arn: str) -> tuple[RolePolicies, Enforcer]:
    """PreTrafficHookRole from template.yaml, for this stack's names and this deployment."""
    region, resources = world["region"], world["resources"]
    parameters = {
        name: str(p["Default"])
        for name, p in read_template()["Parameters"].items()
        if "Default" in p
    }
    values = StackValues(
        region=region,
        parameters=parameters,
        refs={
            "UploadsBucket": resources.bucket,
            "CatalogueFunction.Version": version_arn,
            "ServerlessDeploymentApplication": "momee-cataloguer-ServerlessDeploymentApplication-X",
        },
        attributes={
            ("UploadsBucket", "Arn"): f"arn:aws:s3:::{resources.bucket}",
            ("CatalogueTable", "Arn"): (
                f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{resources.table_name}"
            ),
            ("PreTrafficHookLogGroup", "Arn"): f"arn:aws:logs:{region}:{ACCOUNT}:log-group:hook:*",
        },
    )
    role = RolePolicies(resolve_policies(read_template(), "PreTrafficHookRole", values))
    group = (
        f"arn:aws:codedeploy:{region}:{ACCOUNT}:deploymentgroup:"
        "momee-cataloguer-ServerlessDeploymentApplication-X/CatalogueFunctionDeploymentGroup"
    )
    return role, Enforcer(role, region=region, deployment_group_arn=group)


def run_hook(world: dict[str, Any], version_arn: str, expected_status: str) -> dict[str, str]:
    """The hook as CodeDeploy runs it; CodeDeploy must hear exactly ``expected_status``."""
    role, enforcer = hook_role(world, version_arn)
    codedeploy = enforcer.attach(boto3.client("codedeploy"))
    stubber = Stubber(codedeploy)
    stubber.add_response(
        "put_lifecycle_event_hook_execution_status",
        {"lifecycleEventHookExecutionId": DEPLOYMENT["LifecycleEventHookExecutionId"]},
        {
            "deploymentId": DEPLOYMENT["DeploymentId"],
            "lifecycleEventHookExecutionId": DEPLOYMENT["LifecycleEventHookExecutionId"],
            "status": expected_status,
        },
    )
    lambdas = world["lambdas"]
    # The hook's Lambda client: the in-process versions, behind the role's check of each Invoke.
    invoke_check = enforcer.attach(boto3.client("lambda"))

    class CheckedLambda:
        def invoke(self, **arguments: Any) -> dict[str, Any]:
            invoke_check.meta.events.emit(
                "before-parameter-build.lambda.Invoke",
                params=arguments,
                model=invoke_check.meta.service_model.operation_model("Invoke"),
            )
            return lambdas.invoke(**arguments)

    with stubber:
        result = pre_traffic.lambda_handler(
            DEPLOYMENT,
            None,
            clients={
                "s3": enforcer.attach(boto3.client("s3")),
                "lambda": CheckedLambda(),
                "dynamodb": enforcer.attach(boto3.client("dynamodb")),
                "codedeploy": codedeploy,
            },
            environment={
                "NEW_VERSION": version_arn,
                "UPLOADS_BUCKET": world["resources"].bucket,
                "CATALOGUE_TABLE": world["resources"].table_name,
            },
        )
        stubber.assert_no_pending_responses()
    # Least privilege held: the hook never needed a call its role does not allow.
    assert [d for d in role.decisions if not d.allowed] == []
    return result


def put_probe(world: dict[str, Any], label: str, photo: bytes) -> str:
    key = f"{PROBE_PREFIX}{label}/known-photo.jpg"
    world["s3"].put_object(Bucket=world["resources"].bucket, Key=key, Body=photo)
    return key


def table_items(world: dict[str, Any]) -> list[dict[str, Any]]:
    return world["dynamodb"].scan(TableName=world["resources"].table_name)["Items"]


def nothing_arrived(world: dict[str, Any]) -> None:
    resources = world["resources"]
    assert queue_depth(world["sqs"], resources.queue_url) == 0
    assert queue_depth(world["sqs"], resources.dead_letter_queue_url) == 0


# --- the tests ---------------------------------------------------------------------------------


def test_a_working_version_passes_and_leaves_nothing_buyers_or_reviewers_can_see(
    world: dict[str, Any],
) -> None:
    photo = jpeg(1)
    label = label_of(world, photo)
    key = put_probe(world, label, photo)
    new_version = world["lambdas"].publish(NEW_VERSION, world["good"])

    result = run_hook(world, new_version, "Succeeded")

    assert result["status"] == "Succeeded", result["message"]
    # It invoked exactly the new version (never the alias), once.
    assert world["lambdas"].invocations[-1] == new_version
    assert new_version.endswith(f":{NEW_VERSION}")
    # What it leaves behind: no catalogue item at all; the photo stays where the operator put it.
    assert table_items(world) == []
    world["s3"].head_object(Bucket=world["resources"].bucket, Key=key)
    nothing_arrived(world)


def test_a_version_whose_settings_disagree_with_its_image_fails_at_init_and_is_stopped(
    world: dict[str, Any],
) -> None:
    """sam build with one ModelVariant, sam deploy with another; no uploads arrive at all."""
    photo = jpeg(2)
    put_probe(world, label_of(world, photo), photo)
    broken = {
        **world["good"],
        "DEPLOY_SETTINGS": world["good"]["DEPLOY_SETTINGS"].replace("float32", "int8"),
        "MODEL_VARIANT": "int8",
    }
    new_version = world["lambdas"].publish(NEW_VERSION, broken)

    result = run_hook(world, new_version, "Failed")

    assert result["status"] == "Failed"
    assert "ConfigurationError" in result["message"]
    assert "variant: built 'float32', deployed 'int8'" in result["message"]
    assert "\n" not in result["message"]
    assert table_items(world) == []
    nothing_arrived(world)


def test_a_version_whose_image_lacks_its_model_fails_at_init_and_is_stopped(
    world: dict[str, Any],
) -> None:
    photo = jpeg(3)
    put_probe(world, label_of(world, photo), photo)
    broken = {**world["good"], "MODEL_VERSION": "20261201T000000Z-0000aaaa"}
    new_version = world["lambdas"].publish(NEW_VERSION, broken)

    result = run_hook(world, new_version, "Failed")

    assert "ConfigurationError" in result["message"]
    assert "20261201T000000Z-0000aaaa" in result["message"]
    assert table_items(world) == []


def test_a_version_that_classifies_the_known_photo_wrongly_is_stopped(
    world: dict[str, Any],
) -> None:
    """The second actor: a model that answers differently from the known label."""
    photo = jpeg(4)
    label = label_of(world, photo)
    put_probe(world, f"not-{label}", photo)
    new_version = world["lambdas"].publish(NEW_VERSION, world["good"])

    result = run_hook(world, new_version, "Failed")

    assert f"known label 'not-{label}'" in result["message"]
    assert table_items(world) == []


def test_without_a_known_photo_the_hook_fails_rather_than_passing_unproven(
    world: dict[str, Any],
) -> None:
    new_version = world["lambdas"].publish(NEW_VERSION, world["good"])
    result = run_hook(world, new_version, "Failed")
    assert "no known photo under" in result["message"]
    assert world["lambdas"].invocations == []


def test_an_item_left_by_a_crashed_earlier_run_is_removed_first(world: dict[str, Any]) -> None:
    """A leftover probe item with a newer event order would make the new write look stale."""
    photo = jpeg(5)
    key = put_probe(world, label_of(world, photo), photo)
    bucket, table = world["resources"].bucket, world["resources"].table_name
    world["dynamodb"].put_item(
        TableName=table,
        Item={
            OBJECT_ID: {"S": f"{bucket}/{key}"},
            "status": {"S": "CATALOGUED"},
            "category": {"S": "left-over"},
            "event_order": {"S": "9" * 40},
            "processed_at": {"S": "2099-01-01T00:00:00.000000Z"},
        },
    )
    new_version = world["lambdas"].publish(NEW_VERSION, world["good"])
    result = run_hook(world, new_version, "Succeeded")
    assert result["status"] == "Succeeded", result["message"]
    assert table_items(world) == []


# --- the contract that makes the probe invisible -------------------------------------------------


@pytest.mark.parametrize("status", [Status.CATALOGUED, Status.NEEDS_REVIEW])
def test_probe_items_never_carry_the_buyer_or_reviewer_index_attributes(status: Status) -> None:
    def item(key: str) -> dict[str, Any]:
        return CatalogueItem(
            bucket="b",
            key=key,
            status=status,
            model_version="20261201T000000Z-0000aaaa",
            event_order="1:0",
            processed_at="2026-12-03T00:00:00.000000Z",
            category="stroller",
            confidence=0.99,
            category_source=CategorySource.MODEL,
        ).to_attributes()

    seller = item("uploads/seller/stroller.jpg")
    probe = item(f"{PROBE_PREFIX}stroller/known.jpg")
    assert (LISTING_CATEGORY in seller) or (REVIEW_QUEUE in seller)
    assert LISTING_CATEGORY not in probe
    assert REVIEW_QUEUE not in probe


def test_the_hook_spells_the_contract_names_as_the_contracts_do() -> None:
    assert pre_traffic.PROBE_PREFIX == PROBE_PREFIX
    assert pre_traffic.OBJECT_ID == OBJECT_ID
    assert set(pre_traffic.INDEX_ATTRIBUTES) == {LISTING_CATEGORY, REVIEW_QUEUE}
    assert pre_traffic.PROBE_EVENT_NAME == BACKFILL_EVENT_NAME
    template = read_template()
    hook = template["Resources"]["PreTrafficHookFunction"]["Properties"]
    assert hook["Handler"] == "pre_traffic.lambda_handler"
    assert hook["CodeUri"] == "deploy_hook/"

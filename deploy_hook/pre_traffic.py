"""CodeDeploy's BeforeAllowTraffic hook: prove the new worker version works before it takes traffic.

CodeDeploy invokes this function once per deployment, after ``sam deploy`` has published the new
version and before the ``live`` alias moves (template.yaml: ``DeploymentPreference.Hooks``). It

1. lists the known photos under ``s3://<bucket>/deploy-probe/<label>/`` (at most one batch, 10);
2. removes any probe item a crashed earlier run left, so the new version's write is not refused
   as an older event;
3. invokes the **new version** directly (``NEW_VERSION``, a version ARN: never the alias) with an
   S3-shaped event for those photos. The worker's direct-S3 path fails the invocation if any
   record fails, and a version that cannot start (wrong ``MODEL_VARIANT`` for its image, too
   little memory, settings that disagree with the image, a missing permission) answers with its
   one-line ``ConfigurationError``;
4. reads each photo's catalogue item and checks that it was written by this invocation, that its
   category is the photo's folder name (the known label), and that it carries neither of the
   attributes the buyers' and reviewers' indexes are keyed on (``contracts/catalogue.py`` never
   lists ``deploy-probe/`` keys), so it was never visible to buyers;
5. deletes the items, and reports ``Succeeded`` or ``Failed`` to CodeDeploy. ``Failed`` stops the
   deployment before any traffic moved; CloudFormation then rolls the stack back.

What it leaves behind: this function's log lines (the reason for a failure, in one line), the new
version's own log lines and its ``Invocations`` metric under ``Resource=<function>:<version>``
(not the alias, so the rollback alarm never counts them). No catalogue item, no S3 object, no
queue message. If this function itself dies between steps 3 and 5, one item keyed
``<bucket>/deploy-probe/...`` stays, invisible to buyers and reviewers, and the next run removes
it first (step 2).

Only boto3 (part of the Lambda Python runtime) is imported: the module is deployed on its own
(deploy_hook/Makefile). The few names it shares with the worker's contracts are spelled out
below; tests/unit/test_deploy_hook.py keeps them equal to ``contracts.catalogue``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote_plus

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

# contracts.catalogue.PROBE_PREFIX, OBJECT_ID, LISTING_CATEGORY, REVIEW_QUEUE (a test compares).
PROBE_PREFIX: Final[str] = "deploy-probe/"
OBJECT_ID: Final[str] = "object_id"
INDEX_ATTRIBUTES: Final[tuple[str, ...]] = ("listing_category", "review_queue")
# handler.events.BACKFILL_EVENT_NAME: an event for an object that already exists.
PROBE_EVENT_NAME: Final[str] = "ObjectCreated:Backfill"
# One batch of the worker (template.yaml: BatchSize 10).
MAX_PROBES: Final[int] = 10
# The worker's statuses that carry a category.
CLASSIFIED: Final[frozenset[str]] = frozenset({"CATALOGUED", "NEEDS_REVIEW"})

# The invocation waits for a cold start (model load) plus a batch at the longest FunctionTimeout
# (120 s); one attempt only, so a slow start is reported, not hidden behind a retry.
INVOKE_CONFIG: Final[Config] = Config(
    connect_timeout=5, read_timeout=280, retries={"mode": "standard", "max_attempts": 1}
)


class ProbeFailed(RuntimeError):
    """The new version did not prove itself. The message is the one line the operator reads."""


@dataclass(frozen=True)
class Probe:
    """One known photo: its key, and the label it must be classified as (its folder's name)."""

    key: str
    label: str
    size: int
    etag: str


def find_probes(s3_client: Any, bucket: str) -> list[Probe]:
    """The known photos: ``deploy-probe/<label>/<name>``, at most :data:`MAX_PROBES`."""
    response = s3_client.list_objects_v2(Bucket=bucket, Prefix=PROBE_PREFIX, MaxKeys=100)
    probes = []
    for entry in response.get("Contents", []):
        parts = entry["Key"][len(PROBE_PREFIX) :].split("/")
        if len(parts) != 2 or not all(parts) or entry["Size"] == 0:
            continue  # a folder marker, or a photo with no label folder
        probes.append(
            Probe(entry["Key"], parts[0], int(entry["Size"]), str(entry["ETag"]).strip('"'))
        )
    if not probes:
        raise ProbeFailed(
            f"no known photo under s3://{bucket}/{PROBE_PREFIX}<label>/: upload at least one"
            " photo whose label you know (docs/operations.md, 'Known photos for the hook')"
        )
    return probes[:MAX_PROBES]


def probe_event(bucket: str, probes: list[Probe], event_time: str) -> dict[str, Any]:
    """A direct S3 event (not SQS): the worker then fails the invocation if any record fails."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventTime": event_time,
                "eventName": PROBE_EVENT_NAME,
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "pre-traffic-hook",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {
                        "key": quote_plus(probe.key, safe="/"),
                        "size": probe.size,
                        "eTag": probe.etag,
                    },
                },
            }
            for probe in probes
        ]
    }


def invoke_version(lambda_client: Any, version_arn: str, event: dict[str, Any]) -> None:
    """Invoke the version synchronously; a function error becomes :class:`ProbeFailed`."""
    response = lambda_client.invoke(
        FunctionName=version_arn,
        InvocationType="RequestResponse",
        Payload=json.dumps(event).encode(),
    )
    payload = response["Payload"].read()
    if response.get("FunctionError"):
        try:
            error = json.loads(payload)
            detail = f"{error.get('errorType', 'Error')}: {error.get('errorMessage', '')}"
        except ValueError:
            detail = payload[:500].decode(errors="replace")
        raise ProbeFailed(f"{version_arn} failed: {detail}")


def check_item(item: dict[str, Any] | None, probe: Probe, written_after: str) -> None:
    """The probe's catalogue item was written now, with the known label, invisible to buyers."""
    if item is None:
        raise ProbeFailed(f"{probe.key}: the new version wrote no catalogue item")
    status = item.get("status", {}).get("S")
    processed_at = item.get("processed_at", {}).get("S", "")
    category = item.get("category", {}).get("S")
    if processed_at < written_after:
        raise ProbeFailed(f"{probe.key}: the item was not written by this invocation")
    if status not in CLASSIFIED:
        reason = item.get("reason", {}).get("S", "")
        raise ProbeFailed(f"{probe.key}: status {status} {reason}".strip())
    if category != probe.label:
        raise ProbeFailed(f"{probe.key}: classified as {category!r}, known label {probe.label!r}")
    visible = [name for name in INDEX_ATTRIBUTES if name in item]
    if visible:
        raise ProbeFailed(f"{probe.key}: the item carries {visible}, so buyers could see it")


def run_probe(
    *,
    version_arn: str,
    bucket: str,
    table: str,
    s3_client: Any,
    lambda_client: Any,
    dynamodb_client: Any,
    clock: Any = time.time,
) -> list[Probe]:
    """Steps 1-5 of the module docstring except the report; raises :class:`ProbeFailed`."""
    probes = find_probes(s3_client, bucket)
    keys = [{OBJECT_ID: {"S": f"{bucket}/{probe.key}"}} for probe in probes]
    for key in keys:
        dynamodb_client.delete_item(TableName=table, Key=key)
    # Items record processed_at in UTC ISO form. The items were just deleted, so anything older
    # than this run is impossible; five minutes of slack keep two hosts' clocks out of it.
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(clock() - 300))
    try:
        invoke_version(lambda_client, version_arn, probe_event(bucket, probes, started + "Z"))
        for probe, key in zip(probes, keys, strict=True):
            found = dynamodb_client.get_item(TableName=table, Key=key, ConsistentRead=True)
            check_item(found.get("Item"), probe, started)
    finally:
        for key in keys:
            dynamodb_client.delete_item(TableName=table, Key=key)
    return probes


def lambda_handler(
    event: dict[str, Any],
    context: Any,
    *,
    clients: dict[str, Any] | None = None,
    environment: dict[str, str] | None = None,
) -> dict[str, str]:
    """CodeDeploy's entry point: run the probe, report the outcome, never raise."""
    environment = dict(os.environ if environment is None else environment)
    clients = clients or {
        "s3": boto3.client("s3"),
        "lambda": boto3.client("lambda", config=INVOKE_CONFIG),
        "dynamodb": boto3.client("dynamodb"),
        "codedeploy": boto3.client("codedeploy"),
    }
    status, message = "Succeeded", ""
    try:
        probes = run_probe(
            version_arn=environment["NEW_VERSION"],
            bucket=environment["UPLOADS_BUCKET"],
            table=environment["CATALOGUE_TABLE"],
            s3_client=clients["s3"],
            lambda_client=clients["lambda"],
            dynamodb_client=clients["dynamodb"],
        )
        message = f"{environment['NEW_VERSION']} classified {len(probes)} known photo(s) correctly"
    except ProbeFailed as error:
        status, message = "Failed", str(error)
    except (ClientError, BotoCoreError, KeyError) as error:
        status, message = "Failed", f"the hook could not run the check: {error!r}"
    except Exception as error:  # anything else too: CodeDeploy must hear Failed, not wait an hour
        status, message = "Failed", f"the hook failed unexpectedly: {error!r}"
    # One line, greppable: `aws logs tail <PreTrafficHookLogGroupName>`.
    print(json.dumps({"hook": "pre-traffic", "status": status, "message": message}))
    clients["codedeploy"].put_lifecycle_event_hook_execution_status(
        deploymentId=event["DeploymentId"],
        lifecycleEventHookExecutionId=event["LifecycleEventHookExecutionId"],
        status=status,
    )
    return {"status": status, "message": message}

"""Evaluate a template role's policies against the AWS calls code really makes, as AWS would.

moto has an IAM-enforcing mode (``INITIAL_NO_AUTH_ACTION_COUNT``,
``moto.core.set_initial_no_auth_action_count``), but in moto 5 it authorises DynamoDB, Lambda and
CodeDeploy requests against the resource ``"*"``: a statement scoped to one table never matches,
so every scoped grant reads as denied and nothing can tell the old table from the new one. Its
policy evaluator itself (``moto.iam.access_control.IAMPolicy``: explicit deny wins, action and
resource wildcards, ``NotAction``) is sound, so this module feeds it the real resource ARN of each
call instead:

* :func:`resolve_policies` turns the template's policy documents into plain JSON for given
  parameter values and physical names (``Ref``, ``Fn::GetAtt``, ``Fn::Sub``, ``Fn::If`` with the
  template's own conditions, ``AWS::NoValue``);
* :class:`Enforcer` hooks a boto3 client (botocore's ``before-parameter-build`` event, so the
  calls still reach moto when allowed) and answers a call the role does not allow with the
  ``AccessDenied`` error AWS returns, before moto sees it.

Condition keys: moto's evaluator skips every operator but ``StringEquals``, so the two conditions
the template uses (``StringLike`` on ``s3:prefix``, ``ForAllValues:StringLike`` on
``dynamodb:LeadingKeys``) are evaluated here, and any other operator fails the test rather than
being ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from botocore.exceptions import ClientError
from moto.iam.access_control import IAMPolicy, PermissionResult

ACCOUNT = "123456789012"
NO_VALUE = object()


@dataclass
class StackValues:
    """What CloudFormation would substitute: parameters, pseudo parameters, physical names."""

    region: str
    parameters: dict[str, str]
    refs: dict[str, str]  # logical id -> !Ref value
    attributes: dict[tuple[str, str], str]  # (logical id, attribute) -> !GetAtt value
    stack_name: str = "momee-cataloguer"

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::StackName": self.stack_name,
            "AWS::NoValue": NO_VALUE,
        }
        for source in (pseudo, self.parameters, self.refs):
            if name in source:
                return source[name]
        raise KeyError(f"no value for !Ref {name}")


def _condition(template: dict[str, Any], name: str, values: StackValues) -> bool:
    return bool(_resolve(template["Conditions"][name], template, values))


def _resolve(value: Any, template: dict[str, Any], values: StackValues) -> Any:
    if isinstance(value, list):
        resolved = [_resolve(v, template, values) for v in value]
        return [v for v in resolved if v is not NO_VALUE]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref":
            return values.ref(argument)
        if function == "Fn::GetAtt":
            logical_id, attribute = (
                argument if isinstance(argument, list) else argument.split(".", 1)
            )
            return values.attributes[(logical_id, attribute)]
        if function == "Fn::Sub":
            text = argument if isinstance(argument, str) else argument[0]

            def replace(match: re.Match[str]) -> str:
                name = match.group(1)
                if "." in name and not name.startswith("AWS::"):
                    return str(values.attributes[tuple(name.split(".", 1))])  # type: ignore[index]
                return str(values.ref(name))

            return re.sub(r"\$\{([^}!]+)\}", replace, text)
        if function == "Fn::If":
            name, when_true, when_false = argument
            chosen = when_true if _condition(template, name, values) else when_false
            return _resolve(chosen, template, values)
        if function == "Fn::Equals":
            left, right = (_resolve(v, template, values) for v in argument)
            return left == right
        if function == "Fn::Not":
            return not _resolve(argument[0], template, values)
        if function.startswith("Fn::"):
            raise ValueError(f"cannot resolve {function}")
    return {k: _resolve(v, template, values) for k, v in value.items()}


def resolve_policies(
    template: dict[str, Any], role_id: str, values: StackValues
) -> list[dict[str, Any]]:
    """The role's inline policy documents as CloudFormation would create them."""
    role = template["Resources"][role_id]["Properties"]
    return [_resolve(policy["PolicyDocument"], template, values) for policy in role["Policies"]]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _conditions_hold(conditions: dict[str, Any], context: dict[str, list[str]]) -> bool:
    for operator, keys in conditions.items():
        for key, patterns in keys.items():
            patterns = _as_list(patterns)
            present = context.get(key)
            if operator == "StringLike":
                if present is None or not any(fnmatchcase(v, p) for v in present for p in patterns):
                    return False
            elif operator == "ForAllValues:StringLike":
                # Every value must match; a request without the key matches vacuously (AWS).
                if present and not all(any(fnmatchcase(v, p) for p in patterns) for v in present):
                    return False
            else:
                raise NotImplementedError(f"condition operator {operator} is not evaluated here")
    return True


@dataclass
class Decision:
    action: str
    resource: str
    allowed: bool


@dataclass
class RolePolicies:
    """Identity policies of one role, evaluated per request (no permission boundary, no SCP)."""

    documents: list[dict[str, Any]]
    decisions: list[Decision] = field(default_factory=list)

    def allows(self, action: str, resource: str, context: dict[str, list[str]]) -> bool:
        allowed = False
        for document in self.documents:
            for statement in _as_list(document["Statement"]):
                bare = {k: v for k, v in statement.items() if k != "Condition"}
                result = IAMPolicy(json.dumps({"Version": "2012-10-17", "Statement": [bare]}))
                verdict = result.is_action_permitted(action, resource)
                if verdict is PermissionResult.NEUTRAL:
                    continue
                if not _conditions_hold(statement.get("Condition", {}), context):
                    continue
                if verdict is PermissionResult.DENIED:
                    self.decisions.append(Decision(action, resource, False))
                    return False
                allowed = True
        self.decisions.append(Decision(action, resource, allowed))
        return allowed


# botocore operation -> the IAM action AWS authorises it as, where the names differ.
_ACTIONS = {
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "ListObjects"): "s3:ListBucket",
    ("lambda", "Invoke"): "lambda:InvokeFunction",
}


@dataclass
class Enforcer:
    """Answers calls the role does not allow with AWS's AccessDenied, before moto sees them."""

    policies: RolePolicies
    region: str
    # CodeDeploy authorises PutLifecycleEventHookExecutionStatus on the deployment's group.
    deployment_group_arn: str = ""
    partition_key: str = "object_id"

    def attach(self, client: Any) -> Any:
        service = client.meta.service_model.service_name
        client.meta.events.register(f"before-parameter-build.{service}", self._check)
        return client

    def _resource_and_context(
        self, service: str, operation: str, params: dict[str, Any]
    ) -> tuple[str, dict[str, list[str]]]:
        context: dict[str, list[str]] = {}
        if service == "dynamodb":
            resource = f"arn:aws:dynamodb:{self.region}:{ACCOUNT}:table/{params['TableName']}"
            item = params.get("Key") or params.get("Item") or {}
            keys = [value["S"] for name, value in item.items() if name == self.partition_key]
            if not keys and item:
                # A schema-1 table (bucket + key): its partition key is "bucket".
                keys = [item["bucket"]["S"]] if "bucket" in item else []
            if keys:
                context["dynamodb:LeadingKeys"] = [str(k) for k in keys]
            return resource, context
        if service == "s3":
            if operation in ("ListObjectsV2", "ListObjects"):
                context["s3:prefix"] = [params.get("Prefix", "")]
                return f"arn:aws:s3:::{params['Bucket']}", context
            return f"arn:aws:s3:::{params['Bucket']}/{params['Key']}", context
        if service == "lambda":
            name = params["FunctionName"]
            if not name.startswith("arn:"):
                name = f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{name}"
            if params.get("Qualifier"):
                name += f":{params['Qualifier']}"
            return name, context
        if service == "codedeploy":
            return self.deployment_group_arn, context
        raise NotImplementedError(f"no resource mapping for {service}:{operation}")

    def _check(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.service_name
        service_prefix = model.service_model.signing_name or service
        action = _ACTIONS.get((service, model.name), f"{service_prefix}:{model.name}")
        resource, context = self._resource_and_context(service, model.name, params)
        if not self.policies.allows(action, resource, context):
            code = "AccessDenied" if service == "s3" else "AccessDeniedException"
            raise ClientError(
                {
                    "Error": {
                        "Code": code,
                        "Message": f"not authorized to perform: {action} on resource: {resource}",
                    },
                    "ResponseMetadata": {"HTTPStatusCode": 403},
                },
                model.name,
            )

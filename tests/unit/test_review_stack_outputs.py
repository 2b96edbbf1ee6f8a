"""``--stack``: the table and bucket names come from the deployed stack's outputs."""

from __future__ import annotations

from typing import Any

import pytest

from review.stack_outputs import stack_names


class Outputs:
    def __init__(self, outputs: dict[str, str]) -> None:
        self.outputs = outputs
        self.asked: list[str] = []

    def describe_stacks(self, StackName: str) -> dict[str, Any]:  # noqa: N803 - boto3's name
        self.asked.append(StackName)
        items = [{"OutputKey": k, "OutputValue": v} for k, v in self.outputs.items()]
        return {"Stacks": [{"StackName": StackName, "Outputs": items}]}


def test_names_from_outputs() -> None:
    client = Outputs({"CatalogueTableName": "t-1", "UploadsBucketName": "b-1", "Other": "x"})
    assert stack_names(client, "momee") == ("t-1", "b-1")
    assert client.asked == ["momee"]


def test_a_stack_without_the_outputs_is_named() -> None:
    with pytest.raises(ValueError, match="UploadsBucketName"):
        stack_names(Outputs({"CatalogueTableName": "t"}), "other-stack")

"""Fixtures of the functional tier (moto in-process)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local_stack.resources import create_local_resources


@pytest.fixture
def table() -> Iterator[tuple[Any, str]]:
    """The catalogue table on moto, created from template.yaml: ``(dynamodb client, name)``."""
    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        resources = create_local_resources(
            s3_client=boto3.client("s3"), sqs_client=boto3.client("sqs"), dynamodb_client=dynamodb
        )
        yield dynamodb, resources.table_name

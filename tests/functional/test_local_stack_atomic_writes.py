"""Issue 17: the local stack applies DynamoDB conditional writes atomically per item.

moto's threaded server let two conditional ``UpdateItem`` calls on one item both succeed (2 in
200 trials), which DynamoDB never allows; every concurrency test built on it could pass by luck.
Here several writers race on one fresh item, over and over, through a real moto server (HTTP,
one thread per request): exactly one may win each race.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from local_stack.stack import REGION, moto_server

pytestmark = pytest.mark.functional

WRITERS = 6
RACES = 150


def _client(endpoint: str) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(max_pool_connections=WRITERS * 2),
    )


@pytest.mark.heavy
def test_only_one_of_several_concurrent_conditional_writers_wins() -> None:
    with moto_server() as endpoint:
        dynamodb = _client(endpoint)
        dynamodb.create_table(
            TableName="race",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        clients = [_client(endpoint) for _ in range(WRITERS)]
        double_wins = []
        for race in range(RACES):
            # GIVEN a fresh item, and WRITERS writers released at the same instant
            barrier = threading.Barrier(WRITERS)
            wins: list[int] = []
            refusals: list[str] = []

            def write(
                writer: int,
                race: int = race,
                barrier: Any = barrier,
                wins: Any = wins,
                refusals: Any = refusals,
            ) -> None:
                barrier.wait()
                try:
                    # WHEN each claims it, on the condition that nobody has
                    clients[writer].update_item(
                        TableName="race",
                        Key={"id": {"S": f"item-{race}"}},
                        UpdateExpression="SET #owner = :writer",
                        ConditionExpression="attribute_not_exists(#owner)",
                        ExpressionAttributeNames={"#owner": "owner"},
                        ExpressionAttributeValues={":writer": {"N": str(writer)}},
                    )
                except ClientError as error:
                    refusals.append(error.response["Error"]["Code"])
                    return
                wins.append(writer)

            threads = [threading.Thread(target=write, args=(writer,)) for writer in range(WRITERS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            stored = dynamodb.get_item(TableName="race", Key={"id": {"S": f"item-{race}"}})
            # THEN exactly one wins, the others are refused by the condition
            assert set(refusals) <= {"ConditionalCheckFailedException"}
            assert len(wins) + len(refusals) == WRITERS
            assert len(wins) >= 1
            if len(wins) > 1:
                double_wins.append((race, wins))
            assert stored["Item"]["owner"]["N"] == str(wins[-1])
        assert double_wins == [], f"{len(double_wins)} of {RACES} races had several winners"

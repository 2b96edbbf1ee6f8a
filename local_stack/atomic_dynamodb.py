"""Make moto's DynamoDB apply each request atomically, as real DynamoDB does for one item.

moto's server answers requests on several threads, and its DynamoDB backend checks a condition
expression and applies the update as two separate steps on a shared in-memory item. Two
conditional ``UpdateItem`` calls on one item can therefore both see the condition hold and both
succeed (issue 17 measured 2 in 200 trials). Real DynamoDB evaluates the condition against the
item as it is when the write is applied: "If the condition expression evaluates to true, the
operation succeeds; otherwise, the operation fails" (Amazon DynamoDB Developer Guide, "Condition
expressions",
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.SpecifyingConditions.html
), so of two writers conditioned on the same state only one can win. Concurrency tests of the
worker and the review console would otherwise pass or fail by moto's luck, not by our code.

:func:`serialise_dynamodb` wraps every item-level method of moto's ``DynamoDBBackend`` in one
re-entrant lock (transactions and batches call the single-item methods). That is stricter than
DynamoDB (which serialises per item, not per table), which only removes interleavings; it does
not add any. It is installed once per process, by the local stack's server and by
:func:`local_stack.resources.create_local_resources`, so in-process ``mock_aws`` tests get it
too; the load harness serialises SQS in the same way (``bench.load_with_faults``).
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Final

_ITEM_METHODS: Final[tuple[str, ...]] = (
    "put_item",
    "update_item",
    "delete_item",
    "get_item",
    "batch_write_item",
    "batch_get_item",
    "transact_write_items",
    "transact_get_items",
    "execute_statement",
    "execute_transaction",
    "batch_execute_statement",
    "query",
    "scan",
)
_LOCK: Final[threading.RLock] = threading.RLock()
_MARK: Final[str] = "_momee_serialised"


def serialise_dynamodb() -> None:
    """Wrap moto's DynamoDB item methods in one lock (idempotent, for the whole process)."""
    from moto.dynamodb.models import DynamoDBBackend  # noqa: PLC0415 — moto takes a second to import; only the local stack's servers need it

    for name in _ITEM_METHODS:
        original = getattr(DynamoDBBackend, name, None)
        if original is None or getattr(original, _MARK, False):
            continue
        setattr(DynamoDBBackend, name, _serialised(original))


def _serialised(original: Any) -> Any:
    @functools.wraps(original)
    def call(*arguments: Any, **keywords: Any) -> Any:
        with _LOCK:
            return original(*arguments, **keywords)

    setattr(call, _MARK, True)
    return call

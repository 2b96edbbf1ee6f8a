"""Counting the decode attempts of one object version that ended in a kill, across processes.

A file that makes its decoder run out of memory or time must end REJECTED, never in the DLQ, and
that must hold even when what died was the whole function process (then nothing in it survives
to say which file was decoding). So the count lives in DynamoDB, in the catalogue table, under
``decode-attempts#<bucket>/<key>#<etag>`` (:data:`contracts.catalogue.DECODE_ATTEMPTS_PREFIX`):

* a kill of the decoder process adds one, with its kind (``memory``, ``time``, ``crashed``);
* an attempt that runs **alone** (a retry after a kill, or any file of a message SQS delivers
  again, see :mod:`handler.worker`) adds one *before* it starts, of kind ``crashed`` unless a
  kind is known, and takes it back when it ends without a kill. If the whole process dies
  during it, the one stays: the next receive attributes the death to that file, and to it only,
  because nothing else was decoding.

Only those rare paths write; an ordinary photo on its first delivery costs no extra request.
Every change is an atomic ``ADD``, so two workers holding the same message at once (SQS may
deliver it twice) both count. Records expire with DynamoDB's TTL after the same time as
tombstones (:data:`contracts.catalogue_table.TOMBSTONE_TTL_SECONDS`), well after any message
about the object can still be in flight.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final

from contracts.catalogue import DECODE_ATTEMPTS_PREFIX, EXPIRES_AT, OBJECT_ID, object_id
from contracts.catalogue_table import TOMBSTONE_TTL_SECONDS
from contracts.image import ImageRejected

# A file is REJECTED once this many of its attempts ended in a kill. Two: one attempt beside
# another decode with a share of the memory and CPU, one alone with all of it. Fewer than the
# queue's maxReceiveCount (5, template.yaml), so a poison file never reaches the DLQ even when
# every attempt needs a receive of its own.
MAX_DECODE_ATTEMPTS: Final[int] = 2
REASON_BY_KILL: Final[dict[str, str]] = {
    "memory": "too_large_to_decode",
    # A whole function process dying is, on Lambda, its memory cgroup's OOM kill; a decoder
    # that dies by a signal under its memory limit has almost always failed an allocation.
    "crashed": "too_large_to_decode",
    "time": "too_slow_to_decode",
}


@dataclass(frozen=True)
class Attempts:
    count: int = 0
    kind: str | None = None  # "memory" | "time" | "crashed"


def record_id(bucket: str, key: str, etag: str | None) -> str:
    return f"{DECODE_ATTEMPTS_PREFIX}{object_id(bucket, key)}#{etag or ''}"


def read(dynamodb: Any, table: str, bucket: str, key: str, etag: str | None) -> Attempts:
    response = dynamodb.get_item(
        TableName=table,
        Key={OBJECT_ID: {"S": record_id(bucket, key, etag)}},
        ConsistentRead=True,
    )
    item = response.get("Item")
    if not item:
        return Attempts()
    return Attempts(int(item.get("attempts", {}).get("N", "0")), item.get("kind", {}).get("S"))


def add(
    dynamodb: Any,
    table: str,
    bucket: str,
    key: str,
    etag: str | None,
    *,
    delta: int,
    kind: str | None,
) -> None:
    """Add ``delta`` (+1 or -1) attempts; set the kind when given (else keep it, or ``crashed``
    for a new record)."""
    names = {"#attempts": "attempts", "#kind": "kind", "#expires": EXPIRES_AT}
    values: dict[str, Any] = {
        ":delta": {"N": str(delta)},
        ":expires": {"N": str(int(time.time()) + TOMBSTONE_TTL_SECONDS)},
    }
    if kind is None:
        values[":crashed"] = {"S": "crashed"}
        kind_update = "#kind = if_not_exists(#kind, :crashed)"
    else:
        values[":kind"] = {"S": kind}
        kind_update = "#kind = :kind"
    dynamodb.update_item(
        TableName=table,
        Key={OBJECT_ID: {"S": record_id(bucket, key, etag)}},
        UpdateExpression=f"ADD #attempts :delta SET {kind_update}, #expires = :expires",
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=values,
    )


def poison(attempts: Attempts) -> ImageRejected:
    """The rejection of a file that used up its attempts."""
    kind = attempts.kind or "crashed"
    return ImageRejected(
        REASON_BY_KILL.get(kind, "too_large_to_decode"),  # type: ignore[arg-type]
        f"{attempts.count} decode attempts ended in a kill (last: {kind})",
    )

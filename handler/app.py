"""Lambda entry point (``handler.app.lambda_handler``): SQS batches of S3 notifications, or a
direct S3 event. Thin on purpose; the work is in :mod:`handler.worker`.

* **SQS** (the deployed path): every record of every message is processed in one pass, with one
  batched inference. The batch item SQS knows is the *message*, so a message fails when any of its
  S3 records failed transiently; Powertools' ``BatchProcessor`` reports exactly those messages in
  ``batchItemFailures`` and SQS redelivers only them (to the DLQ after the queue's limit).
  Retrying a whole multi-record message is safe: its records that did succeed are written again
  as no-ops, because catalogue writes are conditional on event order
  (:mod:`contracts.catalogue_table`).
  A message that is not an S3 notification (whatever is wrong inside it) fails the same way, alone,
  and ends in the DLQ, not dropped. When every message of the batch failed, the invocation raises
  (Powertools' default), so Lambda's ``Errors`` metric and its alarm see the outage.
  The invocation's deadline comes from ``context.get_remaining_time_in_millis()``
  (:class:`handler.worker.Deadline`): records not reached in time fail alone.
* **Direct S3 invocation**: any failed record fails the invocation, so Lambda's own retry of
  asynchronous invocations applies.
* **Cold start** (settings, model, table check) happens once per container, in the init phase
  when running on Lambda. If it fails, every invocation fails with the same one-line
  ``ConfigurationError`` and nothing is written. Every receive of a message counts, so after the
  queue's ``maxReceiveCount`` (5; about an hour on AWS) the messages are in the DLQ, to be
  redriven once the configuration is fixed; ``FunctionErrorsAlarm`` fires within 5 minutes.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import replace
from typing import Any, Final

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from handler.cold_start import build_worker
from handler.events import (
    MalformedEvent,
    S3Record,
    is_sqs_event,
    records_from_s3_event,
    records_from_sqs_body,
)
from handler.settings import ConfigurationError, load_settings
from handler.worker import Deadline, DeadlineExceeded, RecordResult, Worker

SERVICE: Final[str] = "momee-cataloguer"
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Momee/Cataloguer")

logger = Logger(service=SERVICE)
metrics = Metrics(service=SERVICE)
# Powertools' default: an entirely failed batch raises BatchProcessingError instead of listing every
# message in batchItemFailures. SQS retries every message either way; raising makes the
# invocation count in Lambda's Errors metric, so an outage (DynamoDB or S3 failing every record)
# trips FunctionErrorsAlarm within minutes instead of only filling the DLQ an hour later.
processor = BatchProcessor(event_type=EventType.SQS)

_worker: Worker | None = None


class RecordsFailed(RuntimeError):
    """Some records of a direct S3 invocation failed; Lambda retries the invocation."""


def get_worker() -> Worker:
    """The container's worker, built on first use. A failure is not cached: the next invocation
    tries again (a model download may have hit a transient error)."""
    global _worker
    if _worker is None:
        settings = load_settings()
        logger.setLevel(settings.log_level)
        _worker = build_worker(settings)
        logger.info(
            "worker ready",
            model_version=_worker.model_version,
            review_threshold=_worker.review_threshold,
            table=_worker.table,
        )
    return _worker


def reset_worker() -> None:
    """Forget the container's worker (tests, and the local stack when switching models)."""
    global _worker
    if _worker is not None:
        _worker.close()
    _worker = None


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    logger.set_correlation_id(getattr(context, "aws_request_id", None))
    try:
        worker = get_worker()
    except ConfigurationError as error:
        logger.error("cold start failed; nothing processed", error=str(error))
        raise
    return handle_event(event, context, worker)


def handle_event(event: dict[str, Any], context: Any, worker: Worker) -> dict[str, Any]:
    started = time.perf_counter()
    deadline = Deadline.from_context(context)
    if is_sqs_event(event):
        return _handle_sqs(event, context, worker, deadline, started)
    results = worker.process(records_from_s3_event(event), deadline)
    for result in results:
        _log_result(result, message_id=None)
    _record_metrics(results, time.perf_counter() - started)
    failed = sum(result.error is not None for result in results)
    if failed:
        raise RecordsFailed(f"{failed} of {len(results)} S3 records failed; see the log")
    return {"processed": len(results)}


def _handle_sqs(
    event: dict[str, Any],
    context: Any,
    worker: Worker,
    deadline: Deadline | None,
    started: float,
) -> dict[str, Any]:
    errors: dict[str, BaseException] = {}
    records: list[S3Record] = []
    owners: list[str] = []
    for message in event["Records"]:
        try:
            parsed = records_from_sqs_body(message["body"])
        except Exception as error:  # anything wrong inside one message fails that message only
            problem = error if isinstance(error, MalformedEvent) else MalformedEvent(repr(error))
            errors[message["messageId"]] = problem
            logger.error(
                "message is not an S3 event", message_id=message["messageId"], error=str(problem)
            )
            continue
        # Above 1, the message was delivered before: its files may be what failed then.
        receive_count = _receive_count(message)
        records.extend(replace(record, receive_count=receive_count) for record in parsed)
        owners.extend([message["messageId"]] * len(parsed))

    results = worker.process(records, deadline)
    for owner, result in zip(owners, results, strict=True):
        _log_result(result, owner)
        if result.error is not None:
            errors.setdefault(owner, result.error)

    malformed = sum(isinstance(error, MalformedEvent) for error in errors.values())
    # Before the response is built: an entirely failed batch raises there.
    _record_metrics(results, time.perf_counter() - started, malformed=malformed)

    def record_handler(record: SQSRecord) -> None:
        error = errors.get(record.message_id)
        if error is not None:
            raise error

    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )


def _receive_count(message: dict[str, Any]) -> int:
    try:
        return max(1, int(message.get("attributes", {}).get("ApproximateReceiveCount", 1)))
    except (TypeError, ValueError, AttributeError):
        return 1


def _log_result(result: RecordResult, message_id: str | None) -> None:
    fields = {
        "message_id": message_id,
        "bucket": result.record.bucket,
        "object_key": result.record.key,
        "event_name": result.record.event_name,
    }
    for kill in result.kills:
        # Seen now, with the file's name, not as Lambda's error count an hour later.
        logger.warning(
            "decoder killed",
            kind=kill.status,
            detail=kill.detail,
            alone=kill.exclusive,
            memory_allowance_mb=kill.allowance_bytes // 2**20,
            seconds=round(kill.wall_seconds, 2),
            receive_count=result.record.receive_count,
            **fields,
        )
    if result.error is not None:
        logger.warning(
            "record failed; it will be retried",
            error=f"{type(result.error).__name__}: {result.error}",
            **fields,
        )
        return
    outcome = result.outcome
    item = outcome.item if outcome is not None else None
    logger.info(
        outcome.action if outcome is not None else "unknown",
        status=item.status.value if item else None,
        category=item.category if item else None,
        confidence=item.confidence if item else None,
        reason=item.reason if item else None,
        **fields,
    )


# One metric per outcome (handler.worker.Action; a test keeps the two in step), all in the
# namespace Momee/Cataloguer, each published on every invocation (0 when nothing happened).
OUTCOME_METRICS: Final[dict[str, str]] = {
    "catalogued": "Catalogued",
    "needs_review": "NeedsReview",
    "rejected": "Rejected",
    "tombstoned": "Tombstoned",
    "stale": "StaleEvents",
    "object_missing": "ObjectMissing",
    "object_recreated": "ObjectRecreated",
    "ignored": "Ignored",
}


# Decoder processes killed (handler.decode_pool), by kind: a crafted file shows up at once.
KILL_METRICS: Final[dict[str, str]] = {
    "memory": "DecoderKilledForMemory",
    "time": "DecoderKilledForTime",
    "crashed": "DecoderCrashed",
}


def _record_metrics(results: list[RecordResult], seconds: float, *, malformed: int = 0) -> None:
    counts = Counter(r.outcome.action for r in results if r.outcome is not None)
    for action, name in OUTCOME_METRICS.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=counts.get(action, 0))
    extra = {
        # Catalogued from what S3 holds now, not the bytes the event described (a 412).
        "ObjectReplaced": sum(r.outcome is not None and r.outcome.replaced for r in results),
        # Records that will be retried; DeadlineExceeded is the part the deadline gave up on.
        "FailedRecords": sum(r.error is not None for r in results),
        "DeadlineExceeded": sum(isinstance(r.error, DeadlineExceeded) for r in results),
        # Messages that are not S3 notifications: they fail alone and end in the DLQ.
        "MalformedMessages": malformed,
    }
    kills = Counter(kill.status for result in results for kill in result.kills)
    for kind, name in KILL_METRICS.items():
        extra[name] = kills.get(kind, 0)
    for name, value in extra.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    metrics.add_metric(name="BatchLatency", unit=MetricUnit.Milliseconds, value=seconds * 1000)


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    # On Lambda, load during the init phase (which runs at full CPU) instead of the first event.
    # A failure here is logged and raised again by the first invocation.
    try:
        get_worker()
    except ConfigurationError as cold_start_error:
        logger.error("cold start failed", error=str(cold_start_error))

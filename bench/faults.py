"""Fault injection for the load harness: AWS failing on the wire, the way it does in production.

Faults are injected at botocore's ``before-send`` event, in place of the HTTP exchange: the
handler returns an HTTP error response (throttling, 500) or raises a read timeout, so everything
above the wire — botocore's retry policy with its back-off, the worker's error handling, the SQS
partial batch response — runs as it would against real AWS. The hooks are registered on boto3's
default session, so every client the worker creates afterwards inherits them without the worker
knowing it is under test.

``permanent_keys`` fail every GetObject attempt with a 500: their messages must end in the DLQ
and nowhere else.
"""

from __future__ import annotations

import functools
import json
import random
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import boto3
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import ReadTimeoutError

# (service id, operation) pairs that fail: the calls the worker makes for one photo, fetching it
# and writing or deleting its catalogue item.
TARGETS: tuple[tuple[str, str], ...] = (
    ("s3", "GetObject"),
    ("dynamodb", "PutItem"),
    ("dynamodb", "UpdateItem"),
    ("dynamodb", "DeleteItem"),
)


@dataclass(frozen=True)
class FaultPlan:
    """What to break: a share of all attempts, and some objects on every attempt."""

    transient_rate: float = 0.10
    permanent_keys: frozenset[str] = frozenset()
    seed: int = 0


@dataclass
class FaultInjector:
    plan: FaultPlan
    injected: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._random = random.Random(self.plan.seed)
        # The worker fetches photos from a thread pool; the random stream and counts are shared.
        self._lock = threading.Lock()

    def install(self, session: boto3.session.Session | None = None) -> None:
        """Register on ``session`` (default: boto3's default session) before clients exist."""
        if session is None:
            boto3.setup_default_session()
            session = boto3.DEFAULT_SESSION
        core = session._session  # the botocore session, whose handlers new clients copy
        for service, operation in TARGETS:
            core.register(
                f"before-send.{service}.{operation}", functools.partial(self._before_send, service)
            )

    def _before_send(
        self, service: str, request: AWSPreparedRequest, **_: object
    ) -> AWSResponse | None:
        if service == "s3" and self._is_permanent(request.url):
            self._count("permanent")
            return _s3_error(request.url, "InternalError", 500)
        with self._lock:
            if self._random.random() >= self.plan.transient_rate:
                return None
            kind = self._random.choice(("throttling", "server_error", "timeout"))
        self._count(kind)
        if kind == "timeout":
            raise ReadTimeoutError(endpoint_url=request.url)
        if service == "s3":
            if kind == "throttling":
                return _s3_error(request.url, "SlowDown", 503)
            return _s3_error(request.url, "InternalError", 500)
        if kind == "throttling":
            return _dynamodb_error(request.url, "ProvisionedThroughputExceededException", 400)
        return _dynamodb_error(request.url, "InternalServerError", 500)

    def _count(self, kind: str) -> None:
        with self._lock:
            self.injected[kind] += 1

    def _is_permanent(self, url: str) -> bool:
        path = unquote(urlsplit(url).path)
        return any(path.endswith("/" + key) for key in self.plan.permanent_keys)


class _Body:
    """The ``raw`` of an AWSResponse: botocore reads it through ``stream()``."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    def stream(self, **_: object) -> Iterator[bytes]:
        yield self._content


def _s3_error(url: str, code: str, status: int) -> AWSResponse:
    body = f"<Error><Code>{code}</Code><Message>injected fault</Message></Error>".encode()
    return AWSResponse(url, status, {"Content-Type": "application/xml"}, _Body(body))


def _dynamodb_error(url: str, code: str, status: int) -> AWSResponse:
    body = json.dumps(
        {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": "injected fault"}
    ).encode()
    return AWSResponse(url, status, {"Content-Type": "application/x-amz-json-1.0"}, _Body(body))


def choose_permanent_keys(keys: Iterable[str], count: int, seed: int) -> frozenset[str]:
    """A reproducible choice of the objects whose failures are made permanent on purpose."""
    ordered = sorted(keys)
    return frozenset(random.Random(seed).sample(ordered, min(count, len(ordered))))

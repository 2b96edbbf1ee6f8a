"""Run the real handler the way Lambda does, on this machine (issue 17)::

    with LambdaLikeRun(environment, memory_mb=1024) as run:
        report = run.drain(sqs, queue_url, queue_arn)

What is reproduced, and how close:

* **one reused process per container**: ``python -m tests.support.lambda_container`` imports
  ``handler.app`` once (cold start) and then serves invocations, one JSON line in, one out, as
  the Lambda runtime does; its decoder processes live as long as it does.
* **the memory limit**: a cgroup v1 ``memory`` group (or v2 ``memory.max``) of
  ``memory_mb`` without swap around the container *and its decoder processes*, as Lambda's
  sandbox counts everything in it; the kernel's OOM killer ends the container at the limit.
  Where no cgroup can be made, ``RLIMIT_DATA`` on the container alone (looser: the decoders
  then have only their own limits).
* **the CPU share**: a cgroup ``cpu`` quota of 1024/1769 of one core (``cpu.cfs_quota_us`` =
  57,885 per 100,000 µs), Lambda's share for 1024 MB ("Lambda allocates CPU power in
  proportion to the amount of memory configured ... at 1,769 MB, a function has the equivalent
  of one vCPU", Lambda Developer Guide, "Configure Lambda function memory"). Without a cpu
  cgroup the share is not reproduced and the report says so.
* **the timeout**: the context's remaining time counts down from ``timeout_s`` (60, the
  template's ``FunctionTimeout``); an invocation that has not answered by then is killed with
  its container, and the batch fails whole, as on Lambda.
* **the queue**: messages come from the local stack's queue, which carries the template's
  redrive policy (5 receives, then the DLQ); what the handler reports in ``batchItemFailures``
  (or the whole batch, when it raised, timed out or died) is made visible again at once
  instead of after the 730 s visibility timeout.

Figures per invocation: the cgroup's peak memory (container + decoders, page cache included,
reset before each invocation), CPU seconds of the whole group (``cpuacct.usage``), wall time,
and how it ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from handler import app
from local_stack.stack import queue_depth, sqs_event

REPOSITORY_ROOT: Final[Path] = Path(__file__).resolve().parents[2]
CGROUP_ROOT: Final[Path] = Path("/sys/fs/cgroup")
MIB: Final[int] = 1024 * 1024
CPU_PERIOD_US: Final[int] = 100_000
LAMBDA_CPU_SHARE: Final[float] = 1024 / 1769


# ----------------------------------------------------------------------------- cgroups ---


class _Groups:
    """cgroup v1 groups of our own for memory, cpu and cpuacct (whichever this machine
    allows); the container joins them between fork and exec."""

    def __init__(self, memory_bytes: int, cpu_share: float | None) -> None:
        name = f"lambda-like-{uuid.uuid4().hex[:10]}"
        self.paths: dict[str, Path] = {}
        settings = {
            "memory": {
                "memory.limit_in_bytes": memory_bytes,
                "memory.memsw.limit_in_bytes": memory_bytes,
            },
            "cpu": (
                {
                    "cpu.cfs_period_us": CPU_PERIOD_US,
                    "cpu.cfs_quota_us": int(CPU_PERIOD_US * cpu_share),
                }
                if cpu_share
                else {}
            ),
            "cpuacct": {},
        }
        for controller, values in settings.items():
            if controller == "cpu" and not values:
                continue
            path = CGROUP_ROOT / controller / name
            try:
                path.mkdir()
                for file_name, value in values.items():
                    target = path / file_name
                    if target.exists():
                        target.write_text(str(value))
            except OSError:  # not allowed here: the report names what was reproduced
                with contextlib.suppress(OSError):
                    path.rmdir()
                continue
            self.paths[controller] = path
        self.memory_bytes = memory_bytes

    @property
    def mechanism(self) -> str:
        memory = "memory cgroup v1" if "memory" in self.paths else "RLIMIT_DATA"
        cpu = f"cpu quota {LAMBDA_CPU_SHARE:.3f} core" if "cpu" in self.paths else "no CPU limit"
        return f"{memory}, {cpu}"

    def join(self) -> None:
        """Runs in the container between fork and exec."""
        for path in self.paths.values():
            (path / "cgroup.procs").write_text(str(os.getpid()))
        if "memory" not in self.paths:
            resource.setrlimit(resource.RLIMIT_DATA, (self.memory_bytes, self.memory_bytes))

    def reset_peak(self) -> None:
        if "memory" in self.paths:
            with contextlib.suppress(OSError):
                (self.paths["memory"] / "memory.max_usage_in_bytes").write_text("0")

    def peak_mb(self) -> float | None:
        return self._read("memory", "memory.max_usage_in_bytes", MIB)

    def cpu_seconds(self) -> float | None:
        return self._read("cpuacct", "cpuacct.usage", 1e9)

    def oom_kills(self) -> int:
        try:
            for line in (self.paths["memory"] / "memory.oom_control").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (KeyError, OSError, ValueError):
            pass
        return 0

    def _read(self, controller: str, file_name: str, unit: float) -> float | None:
        try:
            return int((self.paths[controller] / file_name).read_text()) / unit
        except (KeyError, OSError, ValueError):
            return None

    def remove(self) -> None:
        for path in self.paths.values():
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)  # the last processes are still leaving


# ---------------------------------------------------------------------------- the run ---


@dataclass
class Invocation:
    messages: int
    outcome: str  # "ok" | "raised" | "timeout" | "died (OOM kill)" | "died"
    failed_messages: int
    wall_seconds: float
    cpu_seconds: float | None
    peak_mb: float | None
    cold: bool


@dataclass
class RunReport:
    mechanism: str
    invocations: list[Invocation] = field(default_factory=list)
    dead_letters: int = 0

    @property
    def peak_mb(self) -> float:
        return max((i.peak_mb or 0.0 for i in self.invocations), default=0.0)

    @property
    def cpu_seconds(self) -> float:
        return sum(i.cpu_seconds or 0.0 for i in self.invocations)


class LambdaLikeRun:
    """Containers of the handler under Lambda's limits, fed from an SQS queue."""

    def __init__(
        self,
        environment: dict[str, str],
        *,
        memory_mb: int = 1024,
        timeout_s: float = 60.0,
        cpu_share: float | None = LAMBDA_CPU_SHARE,
    ) -> None:
        self.environment = environment | {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb)}
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self.groups = _Groups(memory_mb * MIB, cpu_share)
        self.process: subprocess.Popen[bytes] | None = None
        self.stderr_path = (
            Path(os.environ.get("TMPDIR", "/tmp")) / f"lambda-like-{uuid.uuid4().hex}.log"
        )

    def __enter__(self) -> LambdaLikeRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop()
        self.groups.remove()

    @property
    def log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def _start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.lambda_container"],
            cwd=REPOSITORY_ROOT,
            env=self.environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr_path.open("ab"),
            preexec_fn=self.groups.join,
        )

    def _stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()
            self.process = None
        # Decoders left behind by a killed container leave with their stdin closed; kill any
        # that remain in the group so the next container starts alone.
        for path in self.groups.paths.values():
            with contextlib.suppress(OSError):
                for pid in (path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), 9)

    def invoke(self, event: dict[str, Any]) -> tuple[Invocation, set[str]]:
        """One invocation; the ids of the messages that failed."""
        all_ids = {record["messageId"] for record in event["Records"]}
        cold = self.process is None
        if cold:
            self._start()
        assert self.process is not None
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.groups.reset_peak()
        cpu_before = self.groups.cpu_seconds()
        kills_before = self.groups.oom_kills()
        started = time.monotonic()
        request = {"event": event, "timeout_ms": int(self.timeout_s * 1000)}
        line = b""
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
            # A cold start happens before the first invocation, outside its timeout (init phase).
            limit = started + self.timeout_s + (120 if cold else 0)
            while not line.endswith(b"\n"):
                ready, _, _ = select.select(
                    [self.process.stdout], [], [], max(0.0, limit - time.monotonic())
                )
                if not ready:
                    break
                chunk = os.read(self.process.stdout.fileno(), 1 << 20)
                if not chunk:
                    break
                line += chunk
        except (BrokenPipeError, OSError):
            pass
        wall = time.monotonic() - started
        cpu_after = self.groups.cpu_seconds()
        cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        peak = self.groups.peak_mb()
        if line.endswith(b"\n"):
            answer = json.loads(line)
            if answer.get("error"):
                outcome, failed = "raised", all_ids
            else:
                outcome = "ok"
                failed = {
                    f["itemIdentifier"] for f in answer["response"].get("batchItemFailures", [])
                }
        else:
            alive = self.process.poll() is None
            outcome = "timeout" if alive else "died"
            if self.groups.oom_kills() > kills_before:
                outcome = "died (OOM kill)"
            failed = all_ids
            self._stop()  # Lambda starts a fresh environment after a timeout or a crash
        return Invocation(len(all_ids), outcome, len(failed), wall, cpu, peak, cold), failed

    def drain(
        self, sqs: Any, queue_url: str, dead_letter_url: str, *, max_invocations: int = 40
    ) -> RunReport:
        """Feed the queue to containers in batches of up to 10 until it is empty."""
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        report = RunReport(self.groups.mechanism)
        for _ in range(max_invocations):
            messages = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                AttributeNames=["All"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
            messages = [m for m in messages if "s3:TestEvent" not in m["Body"]] or messages
            if not messages:
                if queue_depth(sqs, queue_url) == 0:
                    break
                time.sleep(0.05)
                continue
            invocation, failed = self.invoke(sqs_event(messages, queue_arn))
            report.invocations.append(invocation)
            for message in messages:
                if message["MessageId"] in failed:
                    sqs.change_message_visibility(
                        QueueUrl=queue_url,
                        ReceiptHandle=message["ReceiptHandle"],
                        VisibilityTimeout=0,
                    )
                else:
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        report.dead_letters = queue_depth(sqs, dead_letter_url)
        return report


# -------------------------------------------------------------------------- container ---


class _Context:
    """The Lambda context, with the remaining time counting down from the invocation's start."""

    def __init__(self, timeout_ms: int) -> None:
        self._end = time.monotonic() + timeout_ms / 1000
        self.function_name = "momee-cataloguer-lambda-like"
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024"))
        self.invoked_function_arn = (
            "arn:aws:lambda:eu-west-1:123456789012:function:momee-cataloguer-lambda-like"
        )
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = "/aws/lambda/momee-cataloguer-lambda-like"
        self.log_stream_name = "lambda-like"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._end - time.monotonic()) * 1000))


def main() -> None:
    """The container: cold start once, then one invocation per line of stdin."""
    # The answers get a descriptor of their own; file descriptor 1, where the handler's logger
    # and metrics write (they hold sys.stdout since import), now goes to the log.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    app.get_worker()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            response = app.lambda_handler(request["event"], _Context(request["timeout_ms"]))
            answer: dict[str, Any] = {"response": response}
        except Exception as error:  # the invocation fails; the container lives on, as on Lambda
            answer = {"error": f"{type(error).__name__}: {error}"}
        answers.write(json.dumps(answer, default=str) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()

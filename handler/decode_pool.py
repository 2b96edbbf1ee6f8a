"""Decoding untrusted bytes where a kill costs only that one file (issue 17).

**Estimates decide what to try; the operating system decides what is allowed.** A decoder is a
large C library fed hostile bytes, so the worker never runs one in its own process. A
:class:`DecodePool` keeps :data:`DECODE_PROCESSES` long-lived decoder processes
(:mod:`handler.decode_child`, plain ``subprocess`` with pipes) and gives each file to one of them
with three limits:

* **memory**: the child lowers its own ``RLIMIT_DATA`` to what it holds plus the file's
  *allowance* before it opens the header; the kernel refuses any allocation beyond it. The
  allowances of the files decoding at once never add up to more than the **budget**, which is
  measured, not assumed: the function's memory (``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``) minus what
  this process and the idle decoders really hold (their resident set, read from
  ``/proc/<pid>/statm`` at every admission) minus :data:`SAFETY_MARGIN_MB`. So the sandbox's
  memory cgroup, which kills the *whole* function, is never reached by a decode. A file decodes
  first with an equal share of the budget; if its header announces more, or the share runs out,
  it is decoded again **alone with the whole budget** (``exclusive``).
* **CPU time**: ``RLIMIT_CPU`` of :data:`DECODE_SECONDS` per file (``SIGXCPU`` ends the child);
* **wall-clock time**: the parent kills the child (``SIGKILL``) at the per-file deadline, or at
  the invocation's own fetch deadline, whichever comes first.

A killed or crashed child is replaced at once; a child whose resident set has grown by more than
:data:`RECYCLE_GROWTH_MB` after a file is replaced too (memory that glibc does not return).

Why processes started with ``subprocess`` and not ``multiprocessing.Pool``: Lambda's execution
environment has no ``/dev/shm``, so ``multiprocessing.Pool`` and ``Queue`` (POSIX semaphores) fail
there, while ``Process`` and ``Pipe`` work ("Parallel Processing in Python with AWS Lambda", AWS
Compute Blog,
https://aws.amazon.com/blogs/compute/parallel-processing-in-python-with-aws-lambda/
). Plain pipes are also all a decoder needs, and the answer is a JSON header plus raw
pixels, never a pickle. A memory cgroup per decoder is not possible on Lambda (no writable
cgroupfs); ``setrlimit`` is an ordinary system call there.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from contracts.image import CHANNELS, IMAGE_SIZE, DecodedImage, ImageRejected
from handler.decode_child import FRAME, PAGE_BYTES

MIB: Final[int] = 1024 * 1024
# Two decoders: a file that runs into its deadline leaves the other one for the rest of the
# batch. More would not decode faster: a 1024 MB function gets 1024/1769 of one vCPU.
DECODE_PROCESSES: Final[int] = 2
# Per file: CPU seconds (RLIMIT_CPU) and wall-clock seconds (the parent's kill). The slowest
# legitimate file measured (a 50 MP progressive JPEG) takes about 4 s at Lambda's CPU share for
# 1024 MB; 20 s leaves room for two decoders sharing that CPU, and a batch of ten still ends well
# inside the 60 s timeout.
DECODE_SECONDS: Final[float] = 20.0
# Never budgeted: the kernel's own use for the sandbox, pipe buffers, code pages of libraries.
SAFETY_MARGIN_MB: Final[int] = 64
# Below this the budget is this floor (a misconfigured tiny function still decodes small photos).
MINIMUM_BUDGET_MB: Final[int] = 128
RECYCLE_GROWTH_MB: Final[int] = 64
START_SECONDS: Final[float] = 30.0
_PIXELS_BYTES: Final[int] = IMAGE_SIZE * IMAGE_SIZE * CHANNELS

Status = Literal[
    "decoded",  # pixels
    "rejected",  # the contract refused the file: a REJECTED item with its reason
    "needs_more",  # the header announces more memory than this attempt's allowance
    "memory",  # an allocation failed under the memory limit
    "time",  # killed at the per-file deadline, or by RLIMIT_CPU
    "crashed",  # the decoder died some other way
    "given_up",  # killed at the invocation's deadline: not the file's fault
]
KILLS: Final[frozenset[str]] = frozenset({"memory", "time", "crashed"})


@dataclass(frozen=True)
class DecodeAttempt:
    """What one attempt at one file gave, and what it cost."""

    status: Status
    decoded: DecodedImage | None = None
    rejection: ImageRejected | None = None
    detail: str = ""
    allowance_bytes: int = 0
    exclusive: bool = False
    wall_seconds: float = 0.0
    cpu_seconds: float | None = None  # as the child measured it; None when it was killed
    peak_rss_bytes: int | None = None

    @property
    def killed(self) -> bool:
        return self.status in KILLS


class _Child:
    """One decoder process and its pipes."""

    def __init__(self) -> None:
        environment = dict(os.environ)
        # The child imports what this process imports, from the same places (the Lambda task
        # root, a test checkout). One thread for numpy's BLAS: nothing here does linear algebra.
        environment["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
        environment["OPENBLAS_NUM_THREADS"] = "1"
        environment["OMP_NUM_THREADS"] = "1"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "handler.decode_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=environment,
            close_fds=True,
        )
        self.baseline_bytes = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float) -> None:
        answer = self.read(time.monotonic() + timeout)
        if answer is None or answer[0].get("status") != "ready":
            self.kill()
            raise RuntimeError("a decoder process did not start")
        self.baseline_bytes = self.resident_bytes()

    def resident_bytes(self) -> int:
        try:
            with open(f"/proc/{self.pid}/statm") as statm:
                return int(statm.read().split()[1]) * PAGE_BYTES
        except (OSError, ValueError, IndexError):
            return 0

    def send(self, header: dict[str, object], body: bytes) -> bool:
        encoded = json.dumps(header).encode()
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(FRAME.pack(len(encoded), len(body)) + encoded + body)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True

    def read(self, deadline: float) -> tuple[dict[str, object], bytes] | None:
        """One answer frame, or ``None`` if the child died or ``deadline`` passed first."""
        prefix = self._read_exact(FRAME.size, deadline)
        if prefix is None:
            return None
        header_length, body_length = FRAME.unpack(prefix)
        header = self._read_exact(header_length, deadline)
        body = self._read_exact(body_length, deadline) if header is not None else None
        if header is None or body is None:
            return None
        return json.loads(header), body

    def _read_exact(self, length: int, deadline: float) -> bytes | None:
        assert self.process.stdout is not None
        descriptor = self.process.stdout.fileno()
        chunks: list[bytes] = []
        remaining = length
        while remaining > 0:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                return None
            ready, _, _ = select.select([descriptor], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(descriptor, min(remaining, 1 << 20))
            if not chunk:
                return None  # the child is gone
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> int | None:
        """End the child at once; its exit status (a negative signal number)."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process SIGKILL cannot stop
            return None

    def death(self) -> str:
        """Why the child ended by itself: ``time`` for SIGXCPU, else ``crashed``."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            return "crashed"
        return "time" if code == -signal.SIGXCPU else "crashed"


class DecodePool:
    """The container's decoder processes; thread-safe, shared by the worker's fetch threads."""

    def __init__(
        self,
        *,
        function_memory_mb: int,
        processes: int = DECODE_PROCESSES,
        decode_seconds: float = DECODE_SECONDS,
        safety_margin_mb: int = SAFETY_MARGIN_MB,
    ) -> None:
        if processes < 1:
            raise ValueError("a decode pool needs at least one process")
        self.function_memory_bytes = function_memory_mb * MIB
        self.processes = processes
        self.decode_seconds = decode_seconds
        self.safety_margin_bytes = safety_margin_mb * MIB
        self._idle: list[_Child] = []
        self._busy: dict[int, _Child] = {}  # decoders with a file, by pid
        self._exclusive = False
        self._exclusive_waiting = 0
        self._closed = False
        self._condition = threading.Condition()

    # -------------------------------------------------------------------------- lifecycle ---

    def start(self) -> None:
        """Start the decoder processes (at cold start: Lambda's init phase has full CPU)."""
        self._replenish()

    def _replenish(self) -> None:
        """Bring the pool back to :attr:`processes` decoders (one that could not be replaced
        after a kill is started again here, before the next file)."""
        with self._condition:
            if self._closed:
                raise RuntimeError("the decode pool is closed")
            missing = self.processes - len(self._idle) - len(self._busy)
            if missing <= 0:
                return
            children = [_Child() for _ in range(missing)]
            started = []
            for child in children:
                try:
                    child.wait_ready(START_SECONDS)
                except RuntimeError:
                    continue
                started.append(child)
            self._idle.extend(started)
            self._condition.notify_all()
            if not self._idle and not self._busy:
                raise RuntimeError("no decoder process could be started")

    def close(self) -> None:
        with self._condition:
            self._closed = True
            children, self._idle = self._idle, []
            self._condition.notify_all()
        for child in children:
            child.kill()

    @property
    def pids(self) -> list[int]:
        with self._condition:
            return [child.pid for child in self._idle] + list(self._busy)

    # ---------------------------------------------------------------------------- budget ---

    def budget_bytes(self) -> int:
        """The memory decodes may use now: the function's memory minus what this process and
        the decoders hold, measured, minus the safety margin."""
        with self._condition:
            return self._budget_locked()

    def _budget_locked(self) -> int:
        held = _own_resident_bytes()
        held += sum(child.resident_bytes() for child in self._idle)
        # A busy decoder's footprint beyond its baseline is inside its allowance already.
        held += sum(child.baseline_bytes for child in self._busy.values())
        free = self.function_memory_bytes - self.safety_margin_bytes - held
        return max(free, MINIMUM_BUDGET_MB * MIB)

    # ---------------------------------------------------------------------------- decode ---

    def decode(
        self,
        data: bytes,
        *,
        max_bytes: int,
        max_pixels: int,
        exclusive: bool = False,
        give_up_at: float | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> DecodeAttempt:
        """One attempt at ``data`` in a decoder process. Blocks until a decoder (and, when
        ``exclusive``, every decoder) is free; never raises for anything the bytes do.

        ``on_start`` runs once the decoder is this file's and before the bytes are sent: the
        worker records a suspect's attempt there, so a file still *waiting* for the decoders
        when the process dies is not blamed for another file's death.
        """
        self._replenish()
        started = time.monotonic()
        child, allowance = self._acquire(exclusive, give_up_at)
        if child is None:
            return DecodeAttempt("given_up", detail="no decoder was free before the deadline")
        file_deadline = time.monotonic() + self.decode_seconds
        deadline = file_deadline if give_up_at is None else min(file_deadline, give_up_at)
        header = {
            "max_bytes": max_bytes,
            "max_pixels": max_pixels,
            "allowance_bytes": allowance,
            "cpu_seconds": self.decode_seconds,
        }
        common = {"allowance_bytes": allowance, "exclusive": exclusive}
        replace = False
        try:
            if on_start is not None:
                on_start()
            answer = child.read(deadline) if child.send(header, data) else None
            elapsed = time.monotonic() - started
            if answer is None:
                replace = True
                if child.is_alive():  # still decoding at the deadline
                    child.kill()
                    if deadline == file_deadline:
                        status: Status = "time"
                        detail = f"still decoding after {self.decode_seconds:.0f} s"
                    else:
                        status, detail = "given_up", "still decoding at the invocation's deadline"
                else:
                    status = child.death()  # type: ignore[assignment]
                    detail = (
                        "the decoder ran out of its CPU seconds"
                        if status == "time"
                        else f"the decoder died (exit {child.process.returncode})"
                    )
                return DecodeAttempt(status, detail=detail, wall_seconds=elapsed, **common)
            fields, body = answer
            attempt = _attempt_from(fields, body, elapsed, common)
            if child.resident_bytes() > child.baseline_bytes + RECYCLE_GROWTH_MB * MIB:
                replace = True  # memory glibc did not give back: start afresh
            return attempt
        finally:
            self._release(child, replace)

    def _acquire(self, exclusive: bool, give_up_at: float | None) -> tuple[_Child | None, int]:
        with self._condition:
            if exclusive:
                self._exclusive_waiting += 1
            try:
                while True:
                    if self._closed:
                        raise RuntimeError("the decode pool is closed")
                    ready = bool(self._idle) and not self._exclusive
                    if exclusive:
                        ready = ready and not self._busy
                    elif self._exclusive_waiting:
                        ready = False  # an exclusive decode waits for the others to finish
                    if ready:
                        budget = self._budget_locked()
                        allowance = budget if exclusive else budget // self.processes
                        child = self._idle.pop()
                        self._busy[child.pid] = child
                        self._exclusive = exclusive
                        return child, allowance
                    timeout = None if give_up_at is None else give_up_at - time.monotonic()
                    if timeout is not None and timeout <= 0:
                        return None, 0
                    self._condition.wait(timeout)
            finally:
                if exclusive:
                    self._exclusive_waiting -= 1

    def _release(self, child: _Child, replace: bool) -> None:
        if replace:
            child.kill()
            fresh: _Child | None = _Child()
            try:
                fresh.wait_ready(START_SECONDS)  # type: ignore[union-attr]
            except RuntimeError:
                fresh = None  # the next decode starts one again (_replenish)
        else:
            fresh = child
        with self._condition:
            self._busy.pop(child.pid, None)
            self._exclusive = False
            if fresh is not None:
                if self._closed:
                    fresh.kill()
                else:
                    self._idle.append(fresh)
            self._condition.notify_all()


def _attempt_from(
    fields: dict[str, object], body: bytes, elapsed: float, common: dict[str, object]
) -> DecodeAttempt:
    status = str(fields.get("status"))
    cost = {
        "wall_seconds": elapsed,
        "cpu_seconds": _number(fields.get("cpu_seconds")),
        "peak_rss_bytes": _integer(fields.get("peak_rss_bytes")),
    }
    detail = str(fields.get("detail", ""))
    if status == "decoded":
        if len(body) != _PIXELS_BYTES:
            return DecodeAttempt("crashed", detail="the decoder answered a wrong pixel count")
        pixels = np.frombuffer(body, dtype=np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE, CHANNELS)
        decoded = DecodedImage(
            pixels=pixels.copy(),
            width=int(fields["width"]),  # type: ignore[arg-type]
            height=int(fields["height"]),  # type: ignore[arg-type]
            format=str(fields["format"]),
        )
        return DecodeAttempt("decoded", decoded=decoded, **common, **cost)  # type: ignore[arg-type]
    if status == "rejected":
        rejection = ImageRejected(fields["reason"], detail)  # type: ignore[arg-type]
        return DecodeAttempt("rejected", rejection=rejection, detail=detail, **common, **cost)  # type: ignore[arg-type]
    if status in ("needs_more", "memory"):
        return DecodeAttempt(status, detail=detail, **common, **cost)  # type: ignore[arg-type]
    return DecodeAttempt("crashed", detail=f"unexpected answer {status!r}", **common, **cost)  # type: ignore[arg-type]


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _integer(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def _own_resident_bytes() -> int:
    """This process's resident set now (``/proc/self/statm``; the peak is not what it holds)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * PAGE_BYTES
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux: unknown
        return 0

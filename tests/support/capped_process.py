"""Run a command with its memory capped as Lambda caps a function's: ``run_capped(...)``.

Lambda runs a function in a sandbox whose memory (resident pages, the page cache it fills
included) is limited by a cgroup; going over it kills the process. The closest thing on a test
machine is a memory cgroup of our own, and this module makes one when it can (root, a writable
cgroup v1 ``memory`` hierarchy or cgroup v2 with the memory controller): the child joins it
before ``exec`` (``preexec_fn``), so every byte it ever touches is counted, and the kernel's OOM
killer ends it at the limit exactly as on Lambda. Without cgroups it falls back to
``RLIMIT_DATA`` (private writable memory: heap, anonymous mappings, thread arenas once used),
which is looser: libraries' code pages and the page cache are not counted, so the cap is about
50-100 MB more lenient than Lambda's. ``RLIMIT_AS`` is not used: glibc reserves 64 MB of address
space per thread arena and Python's threads their stacks, so a 1024 MB address-space cap fails
allocations long before 1024 MB are really used.

``python -m tests.support.capped_process EVENT.json`` is the child the memory-cap test runs: the
real ``handler.app.lambda_handler`` on one SQS event, its peak RSS printed as JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from handler import app
from local_stack.stack import LocalContext

CGROUP_ROOT: Final[Path] = Path("/sys/fs/cgroup")
MIB: Final[int] = 1024 * 1024


@dataclass(frozen=True)
class CappedRun:
    completed: subprocess.CompletedProcess[str]
    mechanism: str  # "cgroup v1", "cgroup v2" or "RLIMIT_DATA"
    cgroup_peak_mb: float | None  # the cgroup's own peak usage (RSS + page cache), when known
    oom_kills: int | None


class _Cgroup:
    """A memory cgroup of our own, v1 or v2, or None when this machine does not allow one."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @classmethod
    def create(cls, limit_bytes: int) -> _Cgroup | None:
        name = f"capped-{uuid.uuid4().hex[:12]}"
        candidates = [(CGROUP_ROOT / "memory" / name, 1)]
        if (CGROUP_ROOT / "cgroup.controllers").is_file():
            candidates.append((CGROUP_ROOT / name, 2))
        for path, version in candidates:
            try:
                if version == 2:
                    controllers = (CGROUP_ROOT / "cgroup.subtree_control").read_text()
                    if "memory" not in controllers.split():
                        continue
                path.mkdir()
            except OSError:
                continue
            cgroup = cls(path, version)
            try:
                if version == 1:
                    (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
                    swap = path / "memory.memsw.limit_in_bytes"
                    if swap.exists():  # no swapping out of the cap (Lambda has no swap)
                        swap.write_text(str(limit_bytes))
                else:
                    (path / "memory.max").write_text(str(limit_bytes))
                    (path / "memory.swap.max").write_text("0")
            except OSError:
                cgroup.remove()
                continue
            return cgroup
        return None

    def join(self) -> None:
        """Runs in the child between fork and exec."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak_mb(self) -> float | None:
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        try:
            return int((self.path / name).read_text()) / MIB
        except (OSError, ValueError):
            return None

    def oom_kills(self) -> int | None:
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            return None
        return None

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


def run_capped(
    command: list[str], *, limit_mb: int, env: dict[str, str], cwd: Path, timeout: float
) -> CappedRun:
    """Run ``command`` with at most ``limit_mb`` of memory; see the module docstring."""
    limit = limit_mb * MIB
    cgroup = _Cgroup.create(limit)
    if cgroup is not None:
        preexec = cgroup.join
        mechanism = f"cgroup v{cgroup.version}"
    else:

        def preexec() -> None:
            resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

        mechanism = "RLIMIT_DATA"
    try:
        completed = subprocess.run(
            command,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=preexec,
            check=False,
        )
        peak = cgroup.peak_mb() if cgroup is not None else None
        kills = cgroup.oom_kills() if cgroup is not None else None
    finally:
        if cgroup is not None:
            cgroup.remove()
    return CappedRun(completed, mechanism, peak, kills)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    """The child: the real handler on one SQS event (a JSON file), like one Lambda invocation."""
    event = json.loads(Path(sys.argv[1]).read_text())

    response = app.lambda_handler(event, LocalContext())
    print(
        json.dumps(
            {
                "response": response,
                "peak_rss_mb": _status_mb("VmHWM"),
                "peak_virtual_mb": _status_mb("VmPeak"),
                "data_mb": _status_mb("VmData"),
            }
        )
    )


if __name__ == "__main__":
    main()

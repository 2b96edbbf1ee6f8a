"""The decoder process: ``python -m handler.decode_child``, started and fed by
:class:`handler.decode_pool.DecodePool`. Nothing else runs here.

It reads requests from stdin and answers on stdout, one at a time, for as long as the parent
keeps it (see :mod:`handler.decode_pool` for the framing). For each request it

1. lowers its own soft limits: ``RLIMIT_DATA`` (heap and private anonymous mappings, which is
   where every decoder's buffers live) to what it holds now plus the request's allowance, and
   ``RLIMIT_CPU`` to the CPU time it has used plus the request's CPU seconds; the kernel enforces
   both, whatever the decoder does (an allocation beyond the first fails, the second ends the
   process with ``SIGXCPU``);
2. opens the header and decodes with :func:`contracts.image.decode_image`, the contract's own
   function, with ``max_memory`` = the allowance, so a file whose header *announces* more is
   answered ``needs_more`` at once instead of being tried;
3. restores the limits, hands memory back to the system (``malloc_trim``) and answers with the
   pixels, or the rejection, plus what the decode cost (peak RSS, CPU seconds).

The answer carries plain bytes and a small JSON header, never a pickle: this process handles
hostile bytes and the parent does not execute what it sends.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import resource
import struct
import sys
import time
from typing import BinaryIO, Final

from contracts.image import ImageRejected, decode_image, estimate_decode_memory

FRAME: Final[struct.Struct] = struct.Struct(">II")  # header length, body length
PAGE_BYTES: Final[int] = os.sysconf("SC_PAGE_SIZE")
_UNLIMITED: Final[int] = resource.RLIM_INFINITY


def read_frame(stream: BinaryIO) -> tuple[dict[str, object], bytes] | None:
    """One (header, body) frame, or ``None`` at the end of the stream."""
    prefix = stream.read(FRAME.size)
    if len(prefix) < FRAME.size:
        return None
    header_length, body_length = FRAME.unpack(prefix)
    header = json.loads(stream.read(header_length))
    body = stream.read(body_length)
    return header, body


def write_frame(stream: BinaryIO, header: dict[str, object], body: bytes = b"") -> None:
    encoded = json.dumps(header).encode()
    stream.write(FRAME.pack(len(encoded), len(body)) + encoded + body)
    stream.flush()


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    """Start VmHWM again from the current RSS (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:  # pragma: no cover - not Linux: the peak is the lifetime peak
        pass


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def _give_back_memory() -> None:
    """Return freed heap to the system, so the next file starts from the same footprint."""
    with contextlib.suppress(AttributeError):  # not glibc: nothing to trim
        _libc.malloc_trim(0)


def decode_one(header: dict[str, object], data: bytes) -> tuple[dict[str, object], bytes]:
    """Decode ``data`` under the limits ``header`` asks for; the answer's header and body."""
    allowance = int(header["allowance_bytes"])  # type: ignore[arg-type]
    cpu_limit = float(header["cpu_seconds"])  # type: ignore[arg-type]
    # The header's own estimate, read before the limits are set (see the "corrupt" case below).
    near_the_allowance = _near_the_allowance(data, header, allowance)
    _reset_peak()
    cpu_before = _cpu_seconds()
    data_now = _status_kib("VmData") * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (data_now + allowance, _UNLIMITED))
    resource.setrlimit(resource.RLIMIT_CPU, (int(cpu_before + cpu_limit) + 1, _UNLIMITED))
    answer: dict[str, object]
    body = b""
    try:
        decoded = decode_image(
            data,
            max_bytes=int(header["max_bytes"]),  # type: ignore[arg-type]
            max_pixels=int(header["max_pixels"]),  # type: ignore[arg-type]
            max_memory=allowance,
        )
    except ImageRejected as rejection:
        if rejection.reason == "too_much_memory":
            # Either the header announced more than the allowance (the parent may try again
            # with more) or an allocation failed under the limit (a kill for memory).
            status = "memory" if isinstance(rejection.__cause__, MemoryError) else "needs_more"
            answer = {"status": status, "reason": rejection.reason, "detail": rejection.detail}
        elif rejection.reason == "corrupt" and near_the_allowance:
            # A C decoder whose allocation fails under RLIMIT_DATA reports a decode error, not a
            # MemoryError (libwebp: "failed to decode"). When the header itself announced a peak
            # close to the allowance, the limit is the likelier cause: ask for more memory, and
            # the parent rejects the file as too_much_memory once the whole budget was tried.
            detail = f"decoding failed near its memory allowance: {rejection.detail}"
            answer = {"status": "needs_more", "reason": "too_much_memory", "detail": detail}
        else:
            answer = {"status": "rejected", "reason": rejection.reason, "detail": rejection.detail}
    except MemoryError:
        answer = {"status": "memory", "detail": "an allocation failed under the memory limit"}
    else:
        answer = {
            "status": "decoded",
            "width": decoded.width,
            "height": decoded.height,
            "format": decoded.format,
            "shape": list(decoded.pixels.shape),
        }
        body = decoded.pixels.tobytes()
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (_UNLIMITED, _UNLIMITED))
        resource.setrlimit(resource.RLIMIT_CPU, (_UNLIMITED, _UNLIMITED))
    answer["peak_rss_bytes"] = _status_kib("VmHWM") * 1024
    answer["cpu_seconds"] = round(_cpu_seconds() - cpu_before, 4)
    _give_back_memory()
    return answer, body


def _near_the_allowance(data: bytes, header: dict[str, object], allowance: int) -> bool:
    """Whether the header's own estimate of the decode's peak is at least 3/4 of ``allowance``."""
    try:
        cost = estimate_decode_memory(
            data,
            max_bytes=int(header["max_bytes"]),  # type: ignore[arg-type]
            max_pixels=int(header["max_pixels"]),  # type: ignore[arg-type]
        )
    except (ImageRejected, MemoryError, OSError, ValueError):
        return False
    return cost.peak_bytes * 4 >= allowance * 3


def main() -> None:
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    # Nothing else may write to the answer stream: a stray print would corrupt the framing.
    sys.stdout = sys.stderr
    write_frame(answers, {"status": "ready", "pid": os.getpid(), "at": time.time()})
    while (frame := read_frame(requests)) is not None:
        header, data = frame
        answer, body = decode_one(header, data)
        write_frame(answers, answer, body)


if __name__ == "__main__":
    main()

"""Admission of image decodes against the container's memory (issue 9).

The worker decodes several objects at once (``IO_THREADS``). On Lambda, going over the function's
memory kills the process, and the whole batch comes back five times and ends in the dead-letter
queue with nothing written. So every decode first asks :class:`DecodeBudget` for the memory that
:func:`contracts.image.estimate_decode_memory` says it will need at its peak (read from the
header: size, mode, format, JPEG progression; nothing decoded yet):

* a decode whose estimate is above the **whole** budget can never fit: the object is REJECTED
  (``too_much_memory``) at once;
* any other waits until the decodes running beside it have given enough back, then runs.

The budget is the function's memory (``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``, which Lambda sets; the
setting ``FUNCTION_MEMORY_MB`` when it is not) minus :data:`RUNTIME_RESERVE_MB` for everything
that is not a decode. It is a fixed function of the configuration, not of the process's current
RSS, so whether a file is refused does not depend on which container it meets.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from contracts.image import ImageRejected

MIB: Final[int] = 1024 * 1024
# Everything but the decodes: the Python runtime with boto3, Powertools and numpy (~90 MB), LiteRT
# and the model (~60 MB for MobileNetV2 float32), inference on a batch of 10 (~40 MB), up to
# IO_THREADS S3 bodies of MAX_IMAGE_BYTES held while waiting (80 MB), and allocator slack
# (arenas of threads that decoded before). Checked by tests/reliability/test_memory_cap.py, which
# runs the real handler under a 1024 MB cap.
RUNTIME_RESERVE_MB: Final[int] = 384
# Below this, the budget is this floor (a misconfigured tiny function still decodes small photos).
MINIMUM_BUDGET_MB: Final[int] = 128


class DecodeBudget:
    """A byte budget shared by the decoding threads of one container."""

    def __init__(self, total_bytes: int) -> None:
        if total_bytes <= 0:
            raise ValueError(f"a decode budget must be positive, not {total_bytes}")
        self.total_bytes = total_bytes
        self._available = total_bytes
        self._condition = threading.Condition()

    @classmethod
    def for_function_memory(
        cls, memory_mb: int, *, reserve_mb: int = RUNTIME_RESERVE_MB
    ) -> DecodeBudget:
        return cls(max(memory_mb - reserve_mb, MINIMUM_BUDGET_MB) * MIB)

    @property
    def available_bytes(self) -> int:
        with self._condition:
            return self._available

    @contextmanager
    def reserve(self, cost_bytes: int) -> Iterator[None]:
        """Hold ``cost_bytes`` of the budget for the ``with`` block, waiting for it if needed.

        Raises :class:`ImageRejected` (``too_much_memory``) for a cost the whole budget cannot
        hold: waiting would never end.
        """
        if cost_bytes > self.total_bytes:
            raise ImageRejected(
                "too_much_memory",
                f"decoding needs about {cost_bytes // MIB} MiB; this function's decode budget "
                f"is {self.total_bytes // MIB} MiB",
            )
        cost_bytes = max(cost_bytes, 0)
        with self._condition:
            self._condition.wait_for(lambda: self._available >= cost_bytes)
            self._available -= cost_bytes
        try:
            yield
        finally:
            with self._condition:
                self._available += cost_bytes
                self._condition.notify_all()

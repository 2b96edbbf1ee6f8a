"""Progress on long phases (hash, decode, features, evaluation): counts, rate and time left.

On a terminal a tqdm bar redraws in place on stderr. Otherwise (a log file, a notebook's captured
output, a test) a plain line goes to stdout once the phase has run 5 seconds and then every 30
seconds — ``decode: 1,200/21,008 (5.7%), 95 img/s, about 3 min 28 s left`` — so a user knows within
seconds whether a phase takes two minutes or two hours, and a short phase prints nothing. Training
epochs use Keras' own progress bar.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Final

from tqdm import tqdm

FIRST_REPORT_S: Final[float] = 5.0
REPORT_EVERY_S: Final[float] = 30.0


def interactive() -> bool:
    return sys.stderr.isatty()


class Progress:
    """``with Progress("decode", total=N) as bar: bar.update(k)``."""

    def __init__(self, label: str, *, total: int, initial: int = 0, unit: str = "img") -> None:
        self.label, self.total, self.unit = label, total, unit
        self.done = initial
        self._initial = initial
        self._started = time.monotonic()
        self._next_report = self._started + FIRST_REPORT_S
        self._reported = False
        self._bar: Any = None
        if interactive():
            self._bar = tqdm(
                total=total, initial=initial, desc=label, unit=unit, file=sys.stderr, leave=False
            )

    def update(self, count: int = 1) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        if now >= self._next_report:
            self._next_report = now + REPORT_EVERY_S
            self._reported = True
            print(self.line(now), flush=True)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self._started, 1e-9)
        rate = (self.done - self._initial) / elapsed
        text = f"{self.label}: {self.done:,}/{self.total:,}"
        if self.total:
            text += f" ({self.done / self.total:.1%})"
        text += f", {rate:,.1f} {self.unit}/s"
        if rate > 0 and self.done < self.total:
            text += f", about {_duration((self.total - self.done) / rate)} left"
        return text

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._reported:
            elapsed = time.monotonic() - self._started
            print(f"{self.label}: {self.done:,} {self.unit} in {_duration(elapsed)}", flush=True)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"

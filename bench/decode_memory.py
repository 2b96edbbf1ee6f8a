"""Benchmark: extra memory of one decode by the image function, per hostile or large file (issue 9).

``python -m bench.decode_memory [--repeats 1]``

For each file of :mod:`tests.support.hostile_images` (16-bit grey PNG, lossless RGBA WebP, RGBA
PNG, float TIFF, progressive 50 MP JPEG, 48 MP HEIC) plus an ordinary 12 MP phone JPEG, a fresh
Python process imports :mod:`contracts.image`, reads the bytes, resets its peak RSS
(``/proc/self/clear_refs``), decodes once with :func:`contracts.image.decode_image` and reports
``VmHWM − VmRSS before``: the extra resident memory that decode needed at its peak. Also printed:
the module's own estimate (:func:`contracts.image.estimate_decode_memory`, when the module has
one), the outcome (size and format, or the rejection reason) and the decode time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from PIL import Image

import contracts.image as image_module
from bench.worker import phone_jpeg
from tests.support.hostile_images import DESCRIPTIONS, hostile_files

REPOSITORY_ROOT: Final[Path] = Path(__file__).resolve().parent.parent
MB: Final[int] = 1024 * 1024


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def child(path: Path) -> dict[str, Any]:
    """Runs in the measuring process: one decode, its extra peak memory and time."""
    data = path.read_bytes()
    estimate = getattr(image_module, "estimate_decode_memory", None)
    estimated = None
    if estimate is not None:
        try:
            estimated = estimate(data).peak_bytes / MB
        except image_module.ImageRejected as rejection:
            estimated = f"({rejection.reason})"
    # Warm up Pillow's lazy plugin imports on a tiny image so they are not counted.

    Image.init()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current RSS
    before = _status("VmRSS")
    started = time.perf_counter()
    try:
        decoded = image_module.decode_image(data)
        outcome = f"{decoded.width}×{decoded.height} {decoded.format}"
    except image_module.ImageRejected as rejection:
        outcome = f"rejected: {rejection.reason}"
    seconds = time.perf_counter() - started
    return {
        "extra_mb": (_status("VmHWM") - before) / MB,
        "estimate_mb": estimated,
        "seconds": seconds,
        "outcome": outcome,
    }


def phone_jpeg_12mp() -> bytes:
    return phone_jpeg((4032, 3024), seed=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs per file; the max is shown")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child is not None:
        print(json.dumps(child(arguments.child)))
        return

    files = {DESCRIPTIONS[name]: data for name, data in hostile_files().items()}
    files["ordinary 12 MP phone JPEG 4032×3024"] = phone_jpeg_12mp()
    rows = []
    with tempfile.TemporaryDirectory(prefix="decode-memory-") as directory:
        for label, data in files.items():
            path = Path(directory) / "input.bin"
            path.write_bytes(data)
            runs = []
            for _ in range(arguments.repeats):
                completed = subprocess.run(
                    [sys.executable, "-m", "bench.decode_memory", "--child", str(path)],
                    cwd=REPOSITORY_ROOT,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if completed.returncode != 0:
                    runs.append(
                        {
                            "extra_mb": float("nan"),
                            "estimate_mb": None,
                            "seconds": 0,
                            "outcome": f"process died ({completed.returncode}): "
                            f"{completed.stderr.strip().splitlines()[-1:]}",
                        }
                    )
                else:
                    runs.append(json.loads(completed.stdout.strip().splitlines()[-1]))
            worst = max(runs, key=lambda run: run["extra_mb"])
            rows.append((label, len(data), worst))
    print(f"{'file':40} {'on disk':>10} {'extra MB':>9} {'estimate':>9} {'seconds':>8}  outcome")
    for label, size, run in rows:
        estimate = run["estimate_mb"]
        shown = f"{estimate:9.0f}" if isinstance(estimate, float) else f"{estimate or '-':>9}"
        print(
            f"{label:40} {size / 1024:9.0f}K {run['extra_mb']:9.0f} {shown} "
            f"{run['seconds']:8.2f}  {run['outcome']}"
        )


if __name__ == "__main__":
    main()

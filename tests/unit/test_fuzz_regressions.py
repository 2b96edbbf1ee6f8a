"""Crashers found by the coverage-guided fuzzer (``python -m bench.fuzz_image``), kept as files.

Each file under ``tests/data/fuzz_regressions/`` once made the image function raise something
other than :class:`ImageRejected`, which the worker would have retried until the dead-letter
queue. Each must now end as a ``corrupt`` rejection:

* ``heif-security-limit-runtimeerror.bin``: a HEIC declaring 64×2147483712 pixels; pillow_heif
  raised ``RuntimeError: ... Security limit exceeded`` while opening it.
* ``avif-missing-item-runtimeerror.bin``: a HEIF/AVIF container without its image item; Pillow's
  AVIF plugin raised ``RuntimeError: Failed to decode image: Missing or empty image item``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.image import ImageRejected, decode_image

REGRESSIONS = Path(__file__).resolve().parents[1] / "data" / "fuzz_regressions"
FILES = sorted(REGRESSIONS.glob("*.bin"))


def test_there_are_regression_files():
    assert len(FILES) >= 2


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_every_crasher_is_now_a_rejection(path: Path):
    with pytest.raises(ImageRejected) as raised:
        decode_image(path.read_bytes())
    assert raised.value.reason == "corrupt"
    assert raised.value.detail  # the decoder's own message is kept for the log

"""Issue 17: decoder processes under limits the operating system enforces.

Each test starts a real :class:`handler.decode_pool.DecodePool` (two ``python -m
handler.decode_child`` processes, about half a second) and feeds it small crafted files.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from contracts.image import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS, decode_image
from handler.decode_pool import MIB, SAFETY_MARGIN_MB, DecodePool, _own_resident_bytes
from sample_data.photos import draw_sample_image
from tests.support.crafted_images import crafted_file

LIMITS = {"max_bytes": DEFAULT_MAX_IMAGE_BYTES, "max_pixels": DEFAULT_MAX_IMAGE_PIXELS}


def _photo() -> bytes:
    buffer = io.BytesIO()
    drawn = draw_sample_image("stroller", np.random.default_rng(3), size=320)
    drawn.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pool() -> Iterator[DecodePool]:
    # The function's 1024 MB on top of what this pytest process already holds (tests/conftest.py).
    decoders = DecodePool(
        function_memory_mb=_own_resident_bytes() // MIB + 1024, decode_seconds=1.5
    )
    decoders.start()
    yield decoders
    decoders.close()


def test_a_photo_decodes_to_the_contract_s_own_pixels(pool: DecodePool) -> None:
    data = _photo()
    attempt = pool.decode(data, **LIMITS)
    assert attempt.status == "decoded"
    assert attempt.decoded is not None
    in_process = decode_image(data)
    # The child runs contracts.image itself: bit-identical pixels, same size and format.
    np.testing.assert_array_equal(attempt.decoded.pixels, in_process.pixels)
    assert (attempt.decoded.width, attempt.decoded.height, attempt.decoded.format) == (
        in_process.width,
        in_process.height,
        in_process.format,
    )
    assert attempt.cpu_seconds is not None
    assert attempt.peak_rss_bytes is not None


def test_a_bad_file_is_the_contract_s_rejection(pool: DecodePool) -> None:
    attempt = pool.decode(b"<html>not a photo</html>", **LIMITS)
    assert attempt.status == "rejected"
    assert attempt.rejection is not None
    assert attempt.rejection.reason == "not_an_image"


def test_a_file_past_its_deadline_is_killed_and_its_decoder_replaced(pool: DecodePool) -> None:
    # GIVEN a few-KB RLE bitmap that costs seconds of CPU, and a 1.5 s per-file deadline
    slow = crafted_file("bmp-rle-lines")
    before = set(pool.pids)
    # WHEN it is decoded
    started = time.monotonic()
    attempt = pool.decode(slow, **LIMITS)
    # THEN it is killed at the deadline, not when it would have finished
    assert attempt.status == "time"
    assert attempt.killed
    assert time.monotonic() - started < 1.5 + 3.0
    # AND its decoder is replaced: the pool is whole and decodes the next photo
    assert len(pool.pids) == len(before)
    assert len(before - set(pool.pids)) == 1
    assert pool.decode(_photo(), **LIMITS).status == "decoded"


def test_an_invocation_deadline_gives_up_without_blaming_the_file(pool: DecodePool) -> None:
    slow = crafted_file("bmp-rle-lines")
    attempt = pool.decode(slow, give_up_at=time.monotonic() + 0.5, **LIMITS)
    assert attempt.status == "given_up"
    assert not attempt.killed


def test_memory_beyond_the_allowance_is_refused_by_the_kernel() -> None:
    # GIVEN a pool whose budget is the 128 MB floor (a function barely larger than what it holds)
    held = _own_resident_bytes() // MIB
    pool = DecodePool(function_memory_mb=held + 2 * 60 + SAFETY_MARGIN_MB, decode_seconds=60)
    pool.start()
    try:
        # WHEN a JPEG whose millions of empty segments Pillow keeps as Python objects is opened
        segments = crafted_file("jpeg-empty-segments", scale=0.5)
        attempt = pool.decode(segments, exclusive=True, **LIMITS)
        # THEN an allocation fails under RLIMIT_DATA: a kill for memory, not a dead function
        assert attempt.status == "memory", attempt
        assert attempt.allowance_bytes <= 128 * MIB
        assert pool.decode(_photo(), exclusive=True, **LIMITS).status == "decoded"
    finally:
        pool.close()


def test_a_header_announcing_more_than_the_share_asks_for_more() -> None:
    # 7000×7000 RGBA: about 250 MiB announced by the header alone, above a 128 MiB share.
    buffer = io.BytesIO()
    Image.new("RGBA", (7000, 7000), (1, 2, 3, 4)).save(buffer, "PNG", compress_level=1)
    held = _own_resident_bytes() // MIB
    pool = DecodePool(function_memory_mb=held + 2 * 60 + SAFETY_MARGIN_MB + 256)
    pool.start()
    try:
        started = time.monotonic()
        attempt = pool.decode(buffer.getvalue(), **LIMITS)
        assert attempt.status == "needs_more"
        assert time.monotonic() - started < 5  # refused from the header: nothing decoded
        # Alone, with the whole budget, it fits.
        assert pool.decode(buffer.getvalue(), exclusive=True, **LIMITS).status == "decoded"
    finally:
        pool.close()


def test_the_budget_is_what_the_function_does_not_already_hold(pool: DecodePool) -> None:
    # GIVEN the budget now
    before = pool.budget_bytes()
    expected = pool.function_memory_bytes - SAFETY_MARGIN_MB * MIB - _own_resident_bytes()
    assert before <= expected  # the decoders' own footprint comes off too
    # WHEN this process comes to hold 200 MB more (a warm container after heavy batches)
    ballast = np.ones(200 * MIB, dtype=np.uint8)
    try:
        after = pool.budget_bytes()
    finally:
        del ballast
    # THEN the budget shrinks by as much: measured, not a fixed reserve
    assert before - after == pytest.approx(200 * MIB, rel=0.1)

"""Hostile input at scale (issue 6, item 2): random and mutated bytes given to the image function.

The only acceptable outcomes are a valid model input or an ImageRejected with a known reason:
never another exception, and never unbounded memory. Memory is capped with RLIMIT_AS in a child
process, so a decoder that tried to allocate for a huge declared size would fail the test instead
of slowing the machine down.
"""

from __future__ import annotations

import io
import resource
import struct
import zlib
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from contracts.image import IMAGE_SIZE, ImageRejected, RejectionReason, image_to_tensor

KNOWN_REASONS = set(get_args(RejectionReason))


def _seed_images() -> dict[str, bytes]:
    """Small real files in every format a seller might upload: the seeds of the mutations."""
    rng = np.random.default_rng(7)
    picture = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    files = {}
    for image_format, options in (
        ("JPEG", {"quality": 80}),
        ("PNG", {}),
        ("WEBP", {"quality": 80}),
        ("GIF", {}),
        ("HEIF", {}),
    ):
        buffer = io.BytesIO()
        picture.save(buffer, image_format, **options)
        files[image_format] = buffer.getvalue()
    return files


SEED_IMAGES = _seed_images()


def _check(data: bytes) -> None:
    """Either a model input or a typed rejection; any other exception propagates and fails."""
    outcome: np.ndarray | ImageRejected
    try:
        outcome = image_to_tensor(data)
    except ImageRejected as rejection:
        outcome = rejection
    if isinstance(outcome, ImageRejected):
        assert outcome.reason in KNOWN_REASONS
    else:
        assert outcome.dtype == np.uint8
        assert outcome.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)


def _png_with_declared_size(width: int, height: int, bit_depth: int, colour_type: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 256))
        + chunk(b"IEND", b"")
    )


def _jpeg_with_declared_size(width: int, height: int) -> bytes:
    """A real JPEG whose SOF0 marker is rewritten to claim another size."""
    data = bytearray(SEED_IMAGES["JPEG"])
    marker = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, marker + 5, height, width)
    return bytes(data)


FUZZ_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ_SETTINGS
@given(data=st.binary(max_size=4096))
def test_random_bytes(data):
    _check(data)


@FUZZ_SETTINGS
@given(
    image_format=st.sampled_from(sorted(SEED_IMAGES)),
    cut=st.floats(min_value=0.0, max_value=1.0),
)
def test_truncations(image_format, cut):
    original = SEED_IMAGES[image_format]
    _check(original[: int(len(original) * cut)])


@FUZZ_SETTINGS
@given(
    image_format=st.sampled_from(sorted(SEED_IMAGES)),
    flips=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=0.999), st.integers(0, 7)),
        min_size=1,
        max_size=12,
    ),
)
def test_bit_flips(image_format, flips):
    mutated = bytearray(SEED_IMAGES[image_format])
    for position, bit in flips:
        mutated[int(position * len(mutated))] ^= 1 << bit
    _check(bytes(mutated))


@FUZZ_SETTINGS
@given(
    width=st.integers(min_value=0, max_value=2**31 - 1),
    height=st.integers(min_value=0, max_value=2**31 - 1),
    bit_depth=st.sampled_from([1, 2, 4, 8, 16]),
    colour_type=st.sampled_from([0, 2, 3, 4, 6]),
)
def test_huge_declared_png_dimensions(width, height, bit_depth, colour_type):
    _check(_png_with_declared_size(width, height, bit_depth, colour_type))


@FUZZ_SETTINGS
@given(width=st.integers(0, 65535), height=st.integers(0, 65535))
def test_huge_declared_jpeg_dimensions(width, height):
    _check(_jpeg_with_declared_size(width, height))


def _virtual_memory_bytes() -> int:
    """This process's current address-space size (VmSize), which the cap must start above."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.fixture(autouse=True, scope="module")
def _cap_address_space():
    """Fail loudly rather than swap: no input may make the decoder allocate gigabytes.

    The cap is generous for numpy/Pillow (which map their libraries) but far below what a
    decoder would need for a 50-megapixel-plus bomb; it is restored after the module.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _virtual_memory_bytes() + 1536 * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

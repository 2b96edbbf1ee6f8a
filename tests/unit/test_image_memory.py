"""Issue 9 (image half): decoding within a memory budget, cheap refusals, every error classified.

* The strip pipeline gives bit-identical pixels to flattening and resizing the whole picture
  (the previous implementation, kept here as the reference), for every mode and orientation.
* The estimate is made from the header alone and bounds what a decode really takes.
* A progressive JPEG with too many scans is refused without being decoded.
* Any exception while decoding is the file's rejection (``corrupt``), never another exception.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

import contracts.image as image_module
from contracts.image import (
    IMAGE_SIZE,
    MAX_JPEG_SCANS,
    ImageRejected,
    count_jpeg_scans,
    decode_image,
    estimate_decode_memory,
)
from tests.support.hostile_images import progressive_jpeg_with_scans


def encode(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def reference_pixels(data: bytes) -> np.ndarray:
    """The image function on the whole picture: orient, flatten, resize rows then columns."""
    image = Image.open(io.BytesIO(data))
    if image.format in ("JPEG", "MPO"):
        image.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))
    image.seek(0)
    oriented = ImageOps.exif_transpose(image)
    flattened = image_module._flatten(oriented)
    rows = flattened.resize((IMAGE_SIZE, flattened.height), Image.Resampling.BILINEAR)
    resized = rows.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def _picture(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    width, height = size
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width)).astype(np.uint16))
    if mode == "F":
        values = rng.random((height, width), dtype=np.float32) * 3.0
        values[0, :5] = np.nan
        return Image.fromarray(values)
    if mode == "I":
        return Image.fromarray(rng.integers(-50, 100_000, (height, width)).astype(np.int32))
    rgba = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
    if mode == "P":
        return rgba.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    return rgba.convert(mode)


def _with_orientation(
    mode: str, image_format: str, orientation: int, size: tuple[int, int] = (301, 177)
) -> bytes:
    picture = _picture(mode, size, seed=orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    options: dict[str, Any] = {"exif": exif}
    if image_format == "PNG" and mode == "P":
        options["transparency"] = 3
    if image_format == "TIFF":
        options = {"tiffinfo": {0x0112: orientation}}
    if image_format == "HEIF":
        options["enc_params"] = {"preset": "ultrafast"}
    return encode(picture, image_format, **options)


CASES = [
    ("RGB", "JPEG"),
    ("CMYK", "JPEG"),
    ("L", "JPEG"),
    ("RGBA", "PNG"),
    ("LA", "PNG"),
    ("P", "PNG"),
    ("I;16", "PNG"),
    ("1", "PNG"),
    ("RGBA", "WEBP"),
    ("F", "TIFF"),
    ("I", "TIFF"),
    ("RGB", "HEIF"),
    ("RGBA", "HEIF"),
]


ORIENTED_CASES = [
    (mode, image_format, orientation, size)
    for mode, image_format in CASES
    for orientation, size in (((1, (301, 177)), (6, (177, 301))))
] + [
    (mode, image_format, orientation, size)
    for mode, image_format in (("RGBA", "PNG"), ("RGB", "HEIF"), ("I;16", "PNG"))
    for orientation in range(2, 9)
    for size in ((301, 177), (177, 301))
    if (orientation, size) != (6, (177, 301))
]


@pytest.mark.parametrize(("mode", "image_format", "orientation", "size"), ORIENTED_CASES)
def test_strips_give_the_same_pixels_as_the_whole_picture(
    mode, image_format, orientation, size, monkeypatch
):
    # GIVEN a landscape or portrait picture in some mode and format, with an EXIF orientation
    # (every mode with none and with a quarter turn; every orientation for three modes)
    data = _with_orientation(mode, image_format, orientation, size)
    # WHEN it is decoded in strips of a few rows (many strips, uneven last one)
    monkeypatch.setattr(image_module, "_STRIP_PIXELS", 1000)
    decoded = decode_image(data)
    # THEN the pixels are exactly those of the same steps on the whole picture
    assert np.array_equal(decoded.pixels, reference_pixels(data))


def test_large_sixteen_bit_and_float_pictures_match_the_reference():
    # Wider than one default strip: several strips of the real size.
    ramp = np.linspace(0, 65535, 1500 * 1100).reshape(1100, 1500).astype(np.uint16)
    for data in (
        encode(Image.fromarray(ramp), "PNG"),
        encode(Image.fromarray(ramp.astype(np.float32) / 1000), "TIFF"),
    ):
        assert np.array_equal(decode_image(data).pixels, reference_pixels(data))


def test_landscape_pixels_are_pillows_one_call_resize():
    # Landscape and square pictures: Pillow's resize runs the horizontal pass first too, so the
    # band pipeline equals one resize call on the whole flattened picture (as before version 3).
    data = _with_orientation("RGBA", "PNG", 1, (301, 177))
    whole = image_module._flatten(Image.open(io.BytesIO(data)))
    expected = np.asarray(whole.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR))
    assert np.array_equal(decode_image(data).pixels, expected)


# ----------------------------------------------------------------------------- estimate ---


def test_estimate_reads_only_the_header():
    # GIVEN a PNG whose pixel data is missing entirely
    whole = encode(Image.new("RGBA", (4000, 3000)), "PNG")
    header_only = whole[: whole.index(b"IDAT") + 16]
    # WHEN its cost is estimated THEN no decoding is attempted: the cost is from the header
    cost = estimate_decode_memory(header_only)
    assert (cost.width, cost.height, cost.mode, cost.format) == (4000, 3000, "RGBA", "PNG")
    assert cost.peak_bytes >= 4000 * 3000 * 4


def test_estimate_knows_jpeg_draft_and_progressive_coefficients():
    picture = Image.new("RGB", (4000, 3000), (10, 20, 30))
    baseline = estimate_decode_memory(encode(picture, "JPEG"))
    progressive = estimate_decode_memory(encode(picture, "JPEG", progressive=True, subsampling=0))
    # Baseline decodes at 1/8 scale; progressive keeps 3 × 500 × 375 blocks of 128 bytes.
    assert (baseline.width, baseline.height) == (500, 375)
    assert progressive.peak_bytes - baseline.peak_bytes == 3 * 500 * 375 * 128


def test_too_much_memory_is_refused_before_decoding():
    data = encode(Image.new("RGBA", (3000, 3000)), "PNG")
    cost = estimate_decode_memory(data)
    with pytest.raises(ImageRejected) as raised:
        decode_image(data, max_memory=cost.peak_bytes - 1)
    assert raised.value.reason == "too_much_memory"
    assert decode_image(data, max_memory=cost.peak_bytes).width == 3000


# -------------------------------------------------------------------------------- scans ---


def test_scans_are_counted_in_the_byte_stream():
    picture = Image.new("RGB", (64, 64), (1, 2, 3))
    assert count_jpeg_scans(encode(picture, "JPEG")) == 1
    assert count_jpeg_scans(encode(picture, "JPEG", progressive=True)) >= 6
    assert count_jpeg_scans(progressive_jpeg_with_scans(3000)) == 3000


def test_ff_da_bytes_inside_other_segments_are_not_scans():
    # A comment segment full of FF DA pairs: an upper bound by counting bytes, not a scan.
    data = encode(Image.new("RGB", (32, 32)), "JPEG", comment=b"\xff\xda" * (MAX_JPEG_SCANS + 5))
    assert count_jpeg_scans(data) == 1
    assert decode_image(data).width == 32


def test_a_jpeg_with_25000_scans_is_refused_without_decoding(monkeypatch):
    data = progressive_jpeg_with_scans(25_000)

    def no_decoding(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the pixels must not be decoded")

    monkeypatch.setattr(image_module, "_to_rgb", no_decoding)
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    for call in (decode_image, estimate_decode_memory):
        with pytest.raises(ImageRejected) as raised:
            call(data)
        assert raised.value.reason == "too_many_scans"


def test_a_jpeg_at_the_scan_limit_still_decodes():
    data = progressive_jpeg_with_scans(MAX_JPEG_SCANS)
    assert decode_image(data).pixels.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)


# ------------------------------------------------------------------------ every failure ---


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("Security limit exceeded"),
        struct.error("unpack requires a buffer of 2 bytes"),
        KeyError("missing"),
        ZeroDivisionError("division by zero"),
        MemoryError(),
    ],
)
def test_any_exception_while_decoding_is_a_rejection(error, monkeypatch):
    def failing(*args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(image_module, "_resize_in_strips", failing)
    with pytest.raises(ImageRejected) as raised:
        decode_image(encode(Image.new("RGB", (20, 20)), "PNG"))
    expected = "too_much_memory" if isinstance(error, MemoryError) else "corrupt"
    assert raised.value.reason == expected
    assert type(error).__name__ in raised.value.detail or expected == "too_much_memory"

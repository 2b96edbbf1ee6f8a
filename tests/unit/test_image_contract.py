"""Contract 1: every input becomes uint8[224, 224, 3] RGB or a typed rejection with a reason."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from contracts.image import (
    IMAGE_SIZE,
    ImageRejected,
    decode_image,
    image_to_tensor,
)


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG that declares a huge size with almost no data: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def assert_model_input(pixels: np.ndarray) -> None:
    assert pixels.dtype == np.uint8
    assert pixels.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)


@pytest.mark.parametrize(
    ("mode", "image_format", "expected_corner"),
    [
        ("RGB", "JPEG", None),
        ("CMYK", "JPEG", None),
        ("L", "PNG", None),
        ("P", "PNG", None),
        ("RGBA", "PNG", (255, 255, 255)),  # fully transparent pixels become white, not black
        ("LA", "PNG", (255, 255, 255)),
        ("RGB", "WEBP", None),
        ("RGB", "HEIF", None),
        ("RGB", "BMP", None),
        ("RGB", "TIFF", None),
    ],
)
def test_every_mode_and_format_becomes_rgb(mode, image_format, expected_corner):
    # GIVEN a small image in some mode and format
    image = Image.new(mode, (64, 48))
    # WHEN it is decoded
    pixels = image_to_tensor(encode(image, image_format))
    # THEN it is a model input
    assert_model_input(pixels)
    if expected_corner is not None:
        assert tuple(pixels[0, 0]) == expected_corner


def test_sixteen_bit_grey_is_scaled_not_clipped():
    mid_grey = np.full((32, 32), 32768, dtype=np.uint16)
    pixels = image_to_tensor(encode(Image.fromarray(mid_grey), "PNG"))
    assert_model_input(pixels)
    assert abs(int(pixels[0, 0, 0]) - 128) <= 1


def test_animated_gif_uses_its_first_frame():
    frames = [Image.new("RGB", (40, 40), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    pixels = image_to_tensor(buffer.getvalue())
    red, _green, blue = (int(value) for value in pixels[20, 20])
    assert red > 200
    assert blue < 50


def test_exif_orientation_is_applied():
    # GIVEN a landscape JPEG whose EXIF says "rotate 90°", left half black, right half white
    array = np.zeros((100, 200, 3), dtype=np.uint8)
    array[:, 100:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(array), "JPEG", exif=exif, quality=95)
    # WHEN decoded
    decoded = decode_image(data)
    # THEN the reported size is the portrait one and the halves are now top and bottom
    assert (decoded.width, decoded.height) == (100, 200)
    top, bottom = decoded.pixels[10, 112].mean(), decoded.pixels[-10, 112].mean()
    assert abs(top - bottom) > 200


def test_large_jpeg_reports_its_original_size():
    data = encode(Image.new("RGB", (4000, 3000), (10, 120, 200)), "JPEG")
    decoded = decode_image(data)
    assert (decoded.width, decoded.height, decoded.format) == (4000, 3000, "JPEG")
    assert_model_input(decoded.pixels)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"<html><body>not a photo</body></html>", "not_an_image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "unsupported_format"),
        (png_declaring(100_000, 100_000), "too_many_pixels"),
        (png_declaring(8_000, 8_000), "too_many_pixels"),  # below Pillow's own limit, above ours
    ],
)
def test_refusals_carry_a_reason(data, reason):
    with pytest.raises(ImageRejected) as raised:
        image_to_tensor(data)
    assert raised.value.reason == reason


def test_truncated_jpeg_is_corrupt():
    noise = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "JPEG")
    with pytest.raises(ImageRejected) as raised:
        image_to_tensor(data[: len(data) // 2])
    assert raised.value.reason == "corrupt"


def test_byte_and_pixel_limits_are_per_call():
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageRejected) as too_large:
        image_to_tensor(data, max_bytes=len(data) - 1)
    assert too_large.value.reason == "too_large"
    with pytest.raises(ImageRejected) as too_many:
        image_to_tensor(data, max_pixels=9_999)
    assert too_many.value.reason == "too_many_pixels"


def test_decoding_is_deterministic():
    noise = np.random.default_rng(1).integers(0, 255, (500, 700, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "JPEG")
    assert np.array_equal(image_to_tensor(data), image_to_tensor(data))

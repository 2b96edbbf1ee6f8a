"""Large and hostile, yet legitimate, image files for the memory and time tests (issue 9).

Each is inside ``MAX_IMAGE_BYTES`` and ``MAX_IMAGE_PIXELS`` and small on disk (flat colour
compresses to almost nothing), but decodes to tens of megapixels::

    from tests.support.hostile_images import hostile_files

    files = hostile_files()          # {name: bytes}, built once per process and cached on disk

The 48-megapixel HEIC takes a few seconds to encode, so the bytes are cached under
``.cache/hostile-images/<key>/`` (key = this file's source + Pillow and pillow_heif versions).
"""

from __future__ import annotations

import hashlib
import io
import struct
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image

import contracts.image  # noqa: F401 - registers the HEIF plugin for saving

REPOSITORY_ROOT: Final[Path] = Path(__file__).resolve().parents[2]
CACHE_DIR: Final[Path] = REPOSITORY_ROOT / ".cache" / "hostile-images"

# name -> what it is, as in the issue's memory table.
DESCRIPTIONS: Final[dict[str, str]] = {
    "grey16-7071.png": "16-bit grey PNG 7071×7071",
    "rgba-7000.webp": "lossless RGBA WebP 7000×7000",
    "rgba-7000.png": "RGBA PNG 7000×7000",
    "float-7071.tif": "float TIFF 7071×7071",
    "progressive-50mp.jpg": "progressive 50 MP JPEG 8000×6250",
    "iphone-48mp.heic": "48 MP HEIC 8064×6048",
}

_memory_cache: dict[str, bytes] = {}


def _encode(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def _flat_with_ramp(width: int, height: int, mode: str, value: float, top: float) -> Image.Image:
    """A flat image whose first 64 rows ramp up to ``top``: compresses to almost nothing, fast,
    and keeps a known full range (the 16-bit and float paths scale by range)."""
    dtype = {"I;16": np.uint16, "F": np.float32}[mode]
    pixels = np.full((height, width), value, dtype=dtype)
    pixels[:64] = np.linspace(0, top, width, dtype=np.float64).astype(dtype)[None, :]
    return Image.fromarray(pixels)


def build(name: str) -> bytes:
    """The bytes of one file of :data:`DESCRIPTIONS`."""
    if name == "grey16-7071.png":
        return _encode(_flat_with_ramp(7071, 7071, "I;16", 30000, 65535), "PNG")
    if name == "rgba-7000.webp":
        image = Image.new("RGBA", (7000, 7000), (200, 40, 40, 128))
        return _encode(image, "WEBP", lossless=True, method=0)
    if name == "rgba-7000.png":
        image = Image.new("RGBA", (7000, 7000), (40, 200, 40, 128))
        return _encode(image, "PNG", compress_level=1)
    if name == "float-7071.tif":
        image = _flat_with_ramp(7071, 7071, "F", 0.25, 1.0)
        return _encode(image, "TIFF", compression="tiff_adobe_deflate")
    if name == "progressive-50mp.jpg":
        image = Image.new("RGB", (8000, 6250), (120, 90, 60))
        return _encode(image, "JPEG", progressive=True, quality=75, subsampling=0)
    if name == "iphone-48mp.heic":
        image = Image.new("RGB", (8064, 6048), (30, 60, 200))
        return _encode(image, "HEIF", quality=30, enc_params={"preset": "ultrafast"})
    raise KeyError(name)


def _cache_key() -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for package in ("pillow", "pillow-heif"):
        digest.update(metadata.version(package).encode())
    return digest.hexdigest()[:16]


def hostile_file(name: str) -> bytes:
    """One file, built once and cached in memory and under ``.cache/hostile-images/``."""
    if name in _memory_cache:
        return _memory_cache[name]
    path = CACHE_DIR / _cache_key() / name
    if path.is_file():
        data = path.read_bytes()
    else:
        data = build(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(path.suffix + f".{np.random.default_rng().integers(1 << 30)}")
        staging.write_bytes(data)
        staging.replace(path)  # atomic: concurrent test workers never read half a file
    _memory_cache[name] = data
    return data


def hostile_files() -> dict[str, bytes]:
    """Every file of :data:`DESCRIPTIONS`; the missing ones are built in parallel (the encoders
    release the GIL), about 15 s on two cores, then read from the cache."""
    with ThreadPoolExecutor(max_workers=len(DESCRIPTIONS)) as pool:
        return dict(zip(DESCRIPTIONS, pool.map(hostile_file, DESCRIPTIONS), strict=True))


def progressive_jpeg_with_scans(scans: int, *, size: int = 64) -> bytes:
    """A progressive JPEG with ``scans`` scans, built directly as a byte stream.

    A real small progressive JPEG is cut after its first (DC) scan; the remaining scans are
    copies of a refinement scan header with a tiny empty entropy segment, repeated. The file is
    about 20 bytes per scan (25,000 scans: ~0.5 MB). Decoding it would take libjpeg minutes of
    work per megapixel; the image function must refuse it by counting the SOS markers.
    """
    image = Image.new("RGB", (size, size), (128, 128, 128))
    data = _encode(image, "JPEG", progressive=True, quality=75)
    first_sos = data.index(b"\xff\xda")
    second_sos = data.index(b"\xff\xda", first_sos + 2)
    head = data[:second_sos]  # everything up to and including the DC scan
    # A DC refinement scan of component 0 (Ss=0, Se=0, Ah=1, Al=0) with one zero byte of data.
    sos_body = struct.pack(">BBB", 1, 1, 0x00) + bytes((0, 0, 0x10))
    scan = b"\xff\xda" + struct.pack(">H", len(sos_body) + 2) + sos_body + b"\x00"
    return head + scan * (scans - 1) + b"\xff\xd9"

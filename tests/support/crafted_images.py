"""Crafted uploads of issue 17: small, inside every stated limit (≤ 20 MB, ≤ 50 MP), and each
built to cost what its header does not announce::

    from tests.support.crafted_images import CRAFTED, crafted_file

    data = crafted_file("tiff-huge-tile")      # bytes, built in well under a second
    CRAFTED["tiff-huge-tile"].outcome          # what the worker must make of it

Three classes, as the issue lists them:

* **memory the header estimate cannot see**: a TIFF whose one tile is declared far larger than
  the image; a TIFF with millions of strip offsets (Pillow reads them into Python tuples while
  the header is still being parsed); a JPEG with millions of empty segments and a PNG with
  millions of empty chunks (Python objects per segment just to open them). What cannot fit the
  limits is REJECTED (``too_large_to_decode``, ``too_slow_to_decode``, or ``corrupt`` when the
  decoder turns a refused allocation into an error); what is a valid image and fits them may be
  catalogued. ``outcomes`` lists what each may become.
* **legitimate, but dearer than estimated**: a baseline JPEG written with one scan per component,
  which libjpeg buffers whole like a progressive one. It must be CATALOGUED.
* **time nothing bounds**: a JPEG padded with millions of fill bytes before its frame header
  (Pillow walks them one byte at a time in Python), and a few-KB RLE8 bitmap whose end-of-line
  codes Pillow pads one byte at a time: REJECTED ``too_slow_to_decode`` when the deadline is
  shorter than they need.

``scale`` shrinks every file (0 < scale ≤ 1) for the quick tier; ``scale=1`` is the issue's size.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image

MIB: Final[int] = 1024 * 1024


@dataclass(frozen=True)
class Crafted:
    description: str
    kind: str  # "memory" | "time" | "legitimate"
    # Outcomes the worker may give it: a REJECTED reason, or "catalogued".
    outcomes: frozenset[str]


CRAFTED: Final[dict[str, Crafted]] = {
    "tiff-huge-tile": Crafted(
        "1 MB TIFF whose one tile is declared 16384×16384 (image 512×512)",
        "memory",
        frozenset({"too_large_to_decode", "corrupt"}),
    ),
    "tiff-strip-offsets": Crafted(
        "TIFF with 4 million strip offsets (1×4,000,000 pixels)",
        "memory",
        # Pillow builds the tuples in Python: at Lambda's CPU share the per-file deadline may
        # come before the memory limit does.
        frozenset({"too_large_to_decode", "too_slow_to_decode"}),
    ),
    "jpeg-empty-segments": Crafted(
        "JPEG with 4 million empty APP segments before its frame",
        "memory",
        # A valid 64×64 JPEG once its ~600 MB of segment objects fit in the decode budget alone
        # and its ~12 CPU-seconds in the deadline: then it is catalogued, which is fine.
        frozenset({"too_large_to_decode", "too_slow_to_decode", "catalogued"}),
    ),
    "png-empty-chunks": Crafted(
        "PNG with 1.2 million empty text chunks before its data",
        "memory",
        frozenset({"too_large_to_decode", "too_slow_to_decode", "catalogued"}),
    ),
    "jpeg-scan-per-component": Crafted(
        "legitimate baseline JPEG 8000×6000, one scan per component",
        "legitimate",
        frozenset({"catalogued"}),
    ),
    "jpeg-fill-bytes": Crafted(
        "JPEG with 18 million fill bytes before its frame header",
        "time",
        frozenset({"too_slow_to_decode"}),
    ),
    "bmp-rle-lines": Crafted(
        "1 KB RLE8 bitmap 200000×250: one pixel and an end of line per row",
        "time",
        # A valid bitmap: alone, at the default 20 s, it may just finish (18 CPU-s measured).
        frozenset({"too_slow_to_decode", "catalogued"}),
    ),
}


def crafted_file(name: str, *, scale: float = 1.0) -> bytes:
    """The bytes of one crafted file of :data:`CRAFTED`."""
    builders = {
        "tiff-huge-tile": _tiff_huge_tile,
        "tiff-strip-offsets": _tiff_strip_offsets,
        "jpeg-empty-segments": _jpeg_empty_segments,
        "png-empty-chunks": _png_empty_chunks,
        "jpeg-scan-per-component": _jpeg_scan_per_component,
        "jpeg-fill-bytes": _jpeg_fill_bytes,
        "bmp-rle-lines": _bmp_rle_lines,
    }
    return builders[name](scale)


# ------------------------------------------------------------------------------------- TIFF ---


def _tiff(entries: list[tuple[int, int, int, bytes]], payload: bytes) -> bytes:
    """A little-endian TIFF: header, ``payload`` (data and arrays), then one IFD.

    ``entries`` are (tag, type, count, value bytes); values longer than 4 bytes are appended to
    the payload and referenced by offset.
    """
    header_size = 8
    blob = bytearray(payload)
    fields = []
    for tag, kind, count, value in sorted(entries):
        if len(value) <= 4:
            fields.append(struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0"))
        else:
            offset = header_size + len(blob)
            blob += value
            if len(blob) % 2:
                blob += b"\0"
            fields.append(struct.pack("<HHII", tag, kind, count, offset))
    ifd_offset = header_size + len(blob)
    ifd = struct.pack("<H", len(fields)) + b"".join(fields) + struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", ifd_offset) + bytes(blob) + ifd


_SHORT, _LONG = 3, 4


def _short(value: int) -> bytes:
    return struct.pack("<H", value)


def _long(value: int) -> bytes:
    return struct.pack("<I", value)


def _tiff_huge_tile(scale: float) -> bytes:
    """One deflate tile declared ``tile``×``tile`` RGB for a 512×512 image: libtiff sizes its
    tile buffer from the declaration (16384² × 3 bytes = 768 MiB), the estimate from the image.
    The compressed tile holds about a megabyte of zeros' worth of data."""
    tile = max(16, int(16384 * scale) // 16 * 16)
    compressor = zlib.compressobj(9)
    zeros = bytes(MIB)
    chunks = [compressor.compress(zeros) for _ in range(min(tile * tile * 3 // MIB, 64))]
    compressed = b"".join(chunks) + compressor.flush()
    offset = 8
    entries = [
        (256, _LONG, 1, _long(512)),  # ImageWidth
        (257, _LONG, 1, _long(512)),  # ImageLength
        (258, _SHORT, 3, _short(8) * 3),  # BitsPerSample
        (259, _SHORT, 1, _short(8)),  # Compression: Adobe deflate
        (262, _SHORT, 1, _short(2)),  # Photometric: RGB
        (277, _SHORT, 1, _short(3)),  # SamplesPerPixel
        (284, _SHORT, 1, _short(1)),  # PlanarConfiguration: contiguous
        (322, _LONG, 1, _long(tile)),  # TileWidth
        (323, _LONG, 1, _long(tile)),  # TileLength
        (324, _LONG, 1, _long(offset)),  # TileOffsets
        (325, _LONG, 1, _long(len(compressed))),  # TileByteCounts
    ]
    return _tiff(entries, compressed)


def _tiff_strip_offsets(scale: float) -> bytes:
    """A 1-pixel-wide grey TIFF of ``rows`` rows, one row per strip: StripOffsets and
    StripByteCounts hold ``rows`` SHORTs each (16 MB at 4 million), all pointing at one byte."""
    rows = max(1000, int(4_000_000 * scale))
    pixel_offset = 8
    payload = b"\x80\0"
    entries = [
        (256, _LONG, 1, _long(1)),
        (257, _LONG, 1, _long(rows)),
        (258, _SHORT, 1, _short(8)),
        (259, _SHORT, 1, _short(1)),  # no compression
        (262, _SHORT, 1, _short(1)),  # BlackIsZero
        (273, _SHORT, rows, _short(pixel_offset) * rows),  # StripOffsets
        (277, _SHORT, 1, _short(1)),
        (278, _LONG, 1, _long(1)),  # RowsPerStrip
        (279, _SHORT, rows, _short(1) * rows),  # StripByteCounts
    ]
    return _tiff(entries, payload)


# ------------------------------------------------------------------------------------- JPEG ---


def _small_jpeg(size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (90, 140, 200)).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def _jpeg_empty_segments(scale: float) -> bytes:
    """``count`` empty APP1 segments (FF E1 00 02) between SOI and the rest of a small JPEG."""
    count = max(1000, int(4_000_000 * scale))
    data = _small_jpeg()
    return data[:2] + b"\xff\xe1\x00\x02" * count + data[2:]


def _jpeg_fill_bytes(scale: float) -> bytes:
    """``count`` fill bytes (0xFF, allowed before any marker) before the frame header."""
    count = max(1000, int(18_000_000 * scale))
    data = _small_jpeg()
    frame = data.index(b"\xff\xc0")
    return data[:frame] + b"\xff" * count + data[frame:]


def _jpeg_scan_per_component(scale: float) -> bytes:
    """A baseline (SOF0) colour JPEG whose three components are coded in three scans.

    Built from three greyscale JPEGs encoded with the same quantisation table and the standard
    Huffman tables: each one's entropy-coded data is exactly a non-interleaved scan of one
    component, so the three are spliced under one frame header with three components.
    """
    width = max(64, int(8000 * scale) // 8 * 8)
    height = max(64, int(6000 * scale) // 8 * 8)
    rng = np.random.default_rng(5)
    tile = rng.integers(0, 256, size=(64, 64), dtype=np.uint8)
    quality = {0: list(range(1, 65))}
    scans = []
    header = b""
    for component in range(3):
        plane = np.full((height, width), 60 + 70 * component, dtype=np.uint8)
        plane[:64, :64] = tile  # a little texture; the rest is flat and codes to almost nothing
        buffer = io.BytesIO()
        Image.fromarray(plane, "L").save(buffer, "JPEG", qtables=quality, optimize=False)
        grey = buffer.getvalue()
        sos = grey.index(b"\xff\xda")
        length = struct.unpack(">H", grey[sos + 2 : sos + 4])[0]
        entropy = grey[sos + 2 + length : grey.rindex(b"\xff\xd9")]
        scans.append((component + 1, entropy))
        if component == 0:
            header = grey[2 : grey.index(b"\xff\xc0")]  # APP0, DQT (and DHT when before SOF)
            tables = grey[grey.index(b"\xff\xc0") : sos]  # SOF0, DHT
            sof_length = struct.unpack(">H", tables[2:4])[0]
            dht = tables[2 + sof_length :]
    frame = struct.pack(">BHHB", 8, height, width, 3) + b"".join(
        struct.pack(">BBB", index, 0x11, 0) for index in (1, 2, 3)
    )
    out = bytearray(b"\xff\xd8" + header)
    out += b"\xff\xc0" + struct.pack(">H", len(frame) + 2) + frame + dht
    for index, entropy in scans:
        sos_body = struct.pack(">BBB", 1, index, 0x00) + bytes((0, 63, 0))
        out += b"\xff\xda" + struct.pack(">H", len(sos_body) + 2) + sos_body + entropy
    return bytes(out + b"\xff\xd9")


# -------------------------------------------------------------------------------------- PNG ---


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_empty_chunks(scale: float) -> bytes:
    """``count`` minimal tEXt chunks (a one-letter keyword, no text) before the image data:
    Pillow keeps every one in the image's info and text dictionaries while opening it."""
    count = max(1000, int(1_200_000 * scale))
    ihdr = struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0)
    raw = b"".join(b"\0" + bytes(8) for _ in range(8))
    letters = bytes(range(0x21, 0x7F)) + bytes(range(0xA1, 0x100))
    chunks = [_png_chunk(b"tEXt", _keyword(index, letters) + b"\0") for index in range(count)]
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + b"".join(chunks)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def _keyword(index: int, letters: bytes) -> bytes:
    """A distinct three-letter Latin-1 keyword for every index below ``len(letters) ** 3``."""
    base = len(letters)
    return bytes(
        (letters[index % base], letters[index // base % base], letters[index // base**2 % base])
    )


# -------------------------------------------------------------------------------------- BMP ---


def _bmp_rle_lines(scale: float) -> bytes:
    """An RLE8 bitmap 200000×``lines`` whose data is only end-of-line codes (00 00): Pillow's
    Python RLE decoder pads each line with one ``bytearray +=`` per pixel."""
    width = 200_000
    lines = max(2, int(250 * scale))
    pixels = b"\x01\x00\x00\x00" * lines + b"\x00\x01"  # one pixel, then end of line
    palette = b"".join(struct.pack("<BBBB", value, value, value, 0) for value in range(256))
    info = struct.pack("<IiiHHIIiiII", 40, width, lines, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return header + info + palette + pixels

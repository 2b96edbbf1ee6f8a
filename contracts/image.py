"""Contract 1: image bytes -> model input, defined once for training and serving.

Training's prepare step and the Lambda worker both call :func:`image_to_tensor`, so the model
sees identical pixels in both places. This module imports only Pillow (with its HEIF plugin when
installed) and numpy, because the worker's image carries no TensorFlow.

Choices made here, and why:

* **Resize by squashing** to 224x224 (no crop, no letterbox), as the reference system's
  ``flow_from_directory(target_size=(224, 224))`` did: product photos often fill the frame, and a
  centre crop would cut off the handle of a stroller or the legs of a baby bed.
* **Bilinear resampling with Pillow's antialiasing** instead of the reference's nearest-neighbour,
  because nearest-neighbour aliasing depends on the source resolution.
* **JPEG draft mode.** Large phone JPEGs are decoded at 1/2, 1/4 or 1/8 scale by the JPEG decoder
  itself (``Image.draft``), never below the output size. The decoder's reduction averages whole
  8x8 blocks (an area filter), so the final bilinear resize to 224 loses nothing that matters, and
  decoding a 1-megapixel photo takes half the time it takes at full size (measured 5.2 -> 2.7 ms;
  12 megapixels 13.9 -> 10.5 ms). Because training's prepare step calls this same function, the
  model is trained on exactly the pixels the worker produces.
* **Transparency is composited onto white**, the usual background of product photos, rather than
  onto black, which is what a bare ``convert("RGB")`` does.
* **High bit depth** (16-bit and 32-bit grey, float) is scaled to 8 bits by its full range of the
  type, not clipped, which would turn most 16-bit images white.
* **Memory (issue 9).** Only the decoded picture ever exists at full size: orientation, flattening
  and the horizontal half of the resize run on bands of about a megapixel (bit-identical to doing
  them on the whole picture), HEIF pixels are read from libheif's buffer without Pillow's copy.
  :func:`estimate_decode_memory` tells from the header alone what a decode will need at its peak
  (the worker admits decodes against its memory budget with it); ``max_memory`` refuses, as
  ``too_much_memory``, what can never fit.
* **Time.** A JPEG with more than :data:`MAX_JPEG_SCANS` scans is refused (``too_many_scans``)
  by counting its SOS markers before decoding.
* **Every decoding error is the file's rejection** (``corrupt``), whatever its type: the bytes
  alone decide it, so retrying can never help (see :func:`_guarded` for ``MemoryError``).

Change :data:`IMAGE_FUNCTION_VERSION` whenever the output pixels change for any input: the
prepare cache is keyed on it, so stale cached arrays are never reused.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:
    # iPhones upload HEIC. The plugin registers itself with Pillow; without it HEIF files are
    # reported as an unsupported format instead of failing in an unexpected way.
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED: Final[bool] = True
except ImportError:  # pragma: no cover - the plugin is in both requirement files
    HEIF_SUPPORTED = False  # type: ignore[misc]

IMAGE_SIZE: Final[int] = 224
CHANNELS: Final[int] = 3
IMAGE_FUNCTION_VERSION: Final[str] = "3"
DEFAULT_MAX_IMAGE_BYTES: Final[int] = 20 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS: Final[int] = 50_000_000
# A progressive JPEG is refused above this many scans, counted in the byte stream before any
# decoding: each scan makes libjpeg walk the whole image again (25,000 scans of a 3 MB file
# take 72 s). Encoders write about 10 (libjpeg's simple progression) and rarely more than 20;
# libjpeg-turbo's own fuzz targets stop at 500, its TJPARAM_SCANLIMIT defaults to no limit.
MAX_JPEG_SCANS: Final[int] = 100

# Formats a seller's camera or phone produces (AVIF: Pillow 11.3+ reads it with its bundled
# libavif; Android phones and web exports write it). Anything else Pillow happens to parse (EPS,
# ICO, PSD, ...) is refused: those decoders are rarely exercised and some shell out or allocate
# freely.
SUPPORTED_FORMATS: Final[frozenset[str]] = frozenset(
    {"JPEG", "MPO", "PNG", "WEBP", "GIF", "HEIF", "AVIF", "BMP", "TIFF"}
)

# Decoding at reduced scale stops once the image would be smaller than this multiple of the output.
_DRAFT_MARGIN: Final[int] = 1
_EXIF_ORIENTATION: Final[int] = 0x0112
# Pixels per strip of the conversion pipeline (see _to_rgb): temporaries stay a few MB.
_STRIP_PIXELS: Final[int] = 1 << 20
_TRANSPOSE: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

RejectionReason = Literal[
    "empty",
    "too_large",
    "not_an_image",
    "unsupported_format",
    "too_many_pixels",
    "too_many_scans",
    "too_much_memory",
    "corrupt",
    # Given by the worker, not by this module: the decoder process was killed for memory (or
    # died) or for time on every attempt it had (handler.decode_attempts).
    "too_large_to_decode",
    "too_slow_to_decode",
]


class ImageRejected(ValueError):
    """The bytes cannot become a model input. ``reason`` is short and machine-readable."""

    def __init__(self, reason: RejectionReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectionReason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    """The model input plus what the catalogue records about the original picture."""

    pixels: np.ndarray  # uint8 [IMAGE_SIZE, IMAGE_SIZE, 3], RGB
    width: int  # of the original, after EXIF orientation
    height: int
    format: str


def image_to_tensor(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_memory: int | None = None,
) -> np.ndarray:
    """Return ``uint8[224, 224, 3]`` RGB pixels for the image in ``data``.

    Raises :class:`ImageRejected` for anything that is not a usable image.
    """
    return decode_image(
        data, max_bytes=max_bytes, max_pixels=max_pixels, max_memory=max_memory
    ).pixels


def estimate_decode_memory(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> DecodeCost:
    """What decoding ``data`` will cost in memory, from its header alone (no pixel is decoded).

    Raises :class:`ImageRejected` for whatever the header already refuses (format, declared
    size, JPEG scan count), exactly as :func:`decode_image` would.
    """
    with _open_checked(data, max_bytes=max_bytes, max_pixels=max_pixels) as image:
        return _guarded(lambda: decode_cost(image))


def decode_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_memory: int | None = None,
) -> DecodedImage:
    """Like :func:`image_to_tensor`, also returning the original size and format.

    ``max_memory`` (bytes): refuse, as ``too_much_memory``, an image whose estimated decoding
    peak (:func:`estimate_decode_memory`) is above it. ``None``: no such limit (training).
    """
    with _open_checked(data, max_bytes=max_bytes, max_pixels=max_pixels) as image:
        image_format = image.format or "unknown"
        declared_size = image.size  # before a JPEG draft scales it
        if max_memory is not None:
            cost = _guarded(lambda: decode_cost(image))
            if cost.peak_bytes > max_memory:
                raise ImageRejected(
                    "too_much_memory",
                    f"decoding this {cost.width}x{cost.height} {image_format} ({cost.mode}) "
                    f"needs about {cost.peak_bytes // 2**20} MiB, more than the "
                    f"{max_memory // 2**20} MiB allowed",
                )
        rgb, width, height = _guarded(lambda: _to_rgb(image, data, declared_size))
    pixels = np.asarray(rgb, dtype=np.uint8)
    if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE, CHANNELS):  # pragma: no cover - defensive
        raise ImageRejected("corrupt", f"decoded to an unexpected shape {pixels.shape}")
    return DecodedImage(pixels=pixels, width=width, height=height, format=image_format)


def preview_jpeg(
    data: bytes,
    *,
    long_side: int,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_memory: int | None = None,
    quality: int = 85,
) -> bytes:
    """A JPEG of the image in ``data`` for a person to look at: the first frame, oriented as a
    viewer shows it, flattened to RGB, at most ``long_side`` pixels on its longer side.

    The same opening and the same limits as :func:`decode_image` (so anything the worker accepts
    can be shown, HEIC included, and anything it refuses is refused here with the same reason),
    for the review console, whose browser cannot show every format the worker accepts.
    """
    with _open_checked(data, max_bytes=max_bytes, max_pixels=max_pixels) as image:
        if max_memory is not None:
            cost = _guarded(lambda: decode_cost(image))
            if cost.peak_bytes > max_memory:
                raise ImageRejected(
                    "too_much_memory",
                    f"showing this {cost.width}x{cost.height} image needs about "
                    f"{cost.peak_bytes // 2**20} MiB, more than the "
                    f"{max_memory // 2**20} MiB allowed",
                )

        def render() -> bytes:
            if image.format in ("JPEG", "MPO"):
                image.draft("RGB", (long_side, long_side))  # decode at a fraction of the size
            image.seek(0)
            oriented = ImageOps.exif_transpose(image)
            if oriented.mode in ("RGBA", "LA", "PA", "P"):
                oriented = oriented.convert("RGBA")
                flat = Image.new("RGB", oriented.size, "white")
                flat.paste(oriented, mask=oriented.getchannel("A"))
                oriented = flat
            elif oriented.mode != "RGB":
                oriented = oriented.convert("RGB")
            oriented.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            oriented.save(buffer, format="JPEG", quality=quality)
            return buffer.getvalue()

        return _guarded(render)


def _guarded(step):  # type: ignore[no-untyped-def]
    """Run one decoding step: every exception it raises is this file's rejection, never a retry.

    Pillow and its plugins signal damaged data with almost any exception type (OSError,
    SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error from an EXIF block,
    pillow_heif's RuntimeError "Security limit exceeded", ...). Since the bytes alone decide
    the outcome, all of them mean ``corrupt``. ``MemoryError`` means an allocation failed: the
    decode needed more than the process could get. The budget (see :func:`decode_cost`) is
    what keeps that from happening to legitimate files, so one that still fails is refused as
    ``too_much_memory`` instead of being retried until it reaches the dead-letter queue. (A
    process killed by the kernel for memory raises nothing; only the budget prevents that.)
    """
    try:
        return step()
    except ImageRejected:
        raise
    except Image.DecompressionBombError as error:
        raise ImageRejected("too_many_pixels", str(error)) from error
    except MemoryError as error:
        raise ImageRejected(
            "too_much_memory", "decoding needs more memory than the process could get"
        ) from error
    except Exception as error:
        raise ImageRejected(
            "corrupt", f"the pixel data cannot be decoded ({type(error).__name__}: {error})"
        ) from error


class _open_checked:  # noqa: N801 - used as a context manager, like open()
    """Open ``data`` lazily and apply every check that needs only the header."""

    def __init__(self, data: bytes, *, max_bytes: int, max_pixels: int) -> None:
        self.data = data
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.image: Image.Image | None = None

    def __enter__(self) -> Image.Image:
        data = self.data
        if len(data) == 0:
            raise ImageRejected("empty", "the file has no bytes")
        if len(data) > self.max_bytes:
            raise ImageRejected(
                "too_large", f"{len(data)} bytes is more than the limit of {self.max_bytes}"
            )
        try:
            # Pillow's own bomb check warns or raises depending on a global; ours is explicit
            # and per call, so the global check is silenced here and replaced by the test below.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError as error:
            raise ImageRejected(
                "not_an_image", "the bytes are not an image Pillow recognises"
            ) from error
        except Image.DecompressionBombError as error:
            raise ImageRejected("too_many_pixels", str(error)) from error
        except MemoryError as error:
            raise ImageRejected("too_much_memory", "the header alone is too large") from error
        except Exception as error:
            raise ImageRejected("corrupt", f"the header cannot be read ({error})") from error
        self.image = image
        try:
            self._check(image)
        except BaseException:
            image.close()
            raise
        return image

    def _check(self, image: Image.Image) -> None:
        image_format = image.format or "unknown"
        if image_format not in SUPPORTED_FORMATS:
            raise ImageRejected("unsupported_format", f"{image_format} images are not accepted")
        width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageRejected("corrupt", f"declared size {width}x{height} is empty")
        # Checked on the declared size before a single pixel is decoded.
        if width * height > self.max_pixels:
            raise ImageRejected(
                "too_many_pixels",
                f"{width}x{height} is more than the limit of {self.max_pixels} pixels",
            )
        if image_format in ("JPEG", "MPO"):
            scans = count_jpeg_scans(self.data, stop_after=MAX_JPEG_SCANS)
            if scans > MAX_JPEG_SCANS:
                raise ImageRejected(
                    "too_many_scans",
                    f"more than {MAX_JPEG_SCANS} scans; each one is another pass over the image",
                )

    def __exit__(self, *exc_info: object) -> None:
        if self.image is not None:
            self.image.close()


def count_jpeg_scans(data: bytes, *, stop_after: int | None = None) -> int:
    """The number of scans (SOS markers) of the first JPEG image in ``data``, without decoding.

    Walks the marker segments from SOI; inside entropy-coded data a 0xFF byte is always followed
    by 0x00 (stuffing), a restart marker or fill bytes, so the next real marker is found by
    skipping those. Counting stops at EOI, at the end of the data or once ``stop_after`` is
    passed. With ``stop_after``, a cheap pre-check comes first: the number of FF DA byte pairs in
    the whole file is an upper bound, and when it is not above ``stop_after`` that bound is
    returned without the walk (all a limit check needs; ordinary files never need the walk).
    """
    if stop_after is not None:
        octets = np.frombuffer(data, dtype=np.uint8)
        pairs = int(np.count_nonzero((octets[:-1] == 0xFF) & (octets[1:] == 0xDA)))
        if pairs <= stop_after:  # 1 ms for 3 MB, a third of bytes.count's time
            return pairs
    scans = 0
    position = 2  # after SOI
    end = len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            position = data.find(b"\xff", position)
            if position < 0:
                break
            continue
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if marker in (0x01, 0x00) or 0xD0 <= marker <= 0xD7:  # standalone
            position += 2
            continue
        length = (data[position + 2] << 8) | data[position + 3]
        position += 2 + length
        if marker != 0xDA:
            continue
        scans += 1
        if stop_after is not None and scans > stop_after:
            break
        # Skip the entropy-coded data: stop at an FF that starts a real marker.
        while True:
            position = data.find(b"\xff", position)
            if position < 0 or position + 1 >= end:
                return scans
            following = data[position + 1]
            if following == 0x00 or 0xD0 <= following <= 0xD7:
                position += 2
                continue
            if following == 0xFF:
                position += 1
                continue
            break
    return scans


# ------------------------------------------------------------------------------ memory ---


@dataclass(frozen=True)
class DecodeCost:
    """The estimated peak of extra memory one decode needs, from the header alone."""

    format: str
    mode: str
    width: int  # as decoded (after JPEG draft scaling)
    height: int
    peak_bytes: int


# Bytes per pixel of Pillow's in-memory storage for each mode (Storage.c): 1, 2 or 4.
_STORAGE_BYTES: Final[dict[str, int]] = {
    "1": 1,
    "L": 1,
    "P": 1,
    "I;16": 2,
    "I;16B": 2,
    "I;16L": 2,
    "I;16N": 2,
}
# Fixed cost of the strip pipeline and decoder state: strips, their float64 temporaries for
# 16-bit and float images, the 224-wide intermediate, libraries' tables.
_PIPELINE_BYTES: Final[int] = 64 * 2**20


def decode_cost(image: Image.Image) -> DecodeCost:
    """Estimate the peak extra memory of decoding ``image`` (opened, not loaded).

    The decoded full-size picture is the floor (Pillow stores 1, 2 or 4 bytes per pixel); on
    top of it, per format, what its decoder holds at the same time, measured with
    ``bench/decode_memory.py`` and rounded up:

    * JPEG: the picture at the draft scale libjpeg decodes to; a progressive (or other
      multi-scan) JPEG also keeps every DCT coefficient of the full-size image (2 bytes per
      coefficient, 64 per 8x8 block of each component, subsampling included).
    * HEIF: libheif's decoded planes (up to 3 bytes per pixel at 4:4:4, 4 with alpha) and the
      RGB(A) buffer handed over (3-4 bytes per pixel) instead of the Pillow picture: Pillow's
      copy is skipped (see _heif_rows).
    * AVIF: libavif's YUV planes and the RGB(A) buffer it converts them into.
    * WebP: Pillow's WebP decoder goes through libwebp's animation decoder, which keeps its own
      RGBA canvas, and a bytes copy of it: three more RGBA buffers.
    * TIFF: libtiff's strip or tile buffer, at most one more copy of the picture.
    * PNG, GIF, BMP: row buffers only.
    """
    image_format = image.format or "unknown"
    width, height = image.size
    if image_format in ("JPEG", "MPO"):
        _draft(image)
    mode = image.mode
    decoded_width, decoded_height = image.size
    pixels = decoded_width * decoded_height
    decoded = pixels * _STORAGE_BYTES.get(mode, 4)
    extra = 0
    if image_format in ("JPEG", "MPO") and _is_multi_scan(image):
        extra = _coefficient_bytes(image, width, height)
    elif image_format == "HEIF":
        # libheif's planes (up to 3 bytes per pixel, 4 with alpha) and its interleaved buffer
        # (3 or 4), instead of Pillow's 4-byte storage counted above.
        channels = 4 if mode in ("RGBA", "LA") else 3
        extra = width * height * (2 * channels) - decoded
    elif image_format == "AVIF":
        # libavif's YUV planes (up to 3 bytes per pixel at 4:4:4, 4 with alpha) and the RGB(A)
        # buffer it converts them into, beside Pillow's picture.
        extra = width * height * (4 + 4)
    elif image_format == "WEBP":
        extra = width * height * 4 * 3
    elif image_format == "TIFF":
        extra = decoded
    return DecodeCost(
        format=image_format,
        mode=mode,
        width=decoded_width,
        height=decoded_height,
        peak_bytes=decoded + extra + _PIPELINE_BYTES,
    )


def _draft(image: Image.Image) -> None:
    """Ask libjpeg for a reduced-scale decode (1/2, 1/4, 1/8), never below the output size.

    The draft size is orientation-independent because it asks for a square.
    """
    target = IMAGE_SIZE * _DRAFT_MARGIN
    image.draft("RGB", (target, target))


def _is_multi_scan(image: Image.Image) -> bool:
    return bool(image.info.get("progressive") or image.info.get("progression"))


def _coefficient_bytes(image: Image.Image, width: int, height: int) -> int:
    """libjpeg's whole-image coefficient buffer of a multi-scan JPEG: 128 bytes per block."""
    layers = getattr(image, "layer", None) or [("", 1, 1, 0)] * 3
    h_max = max(layer[1] for layer in layers) or 1
    v_max = max(layer[2] for layer in layers) or 1
    total = 0
    for _id, h, v, _table in layers:
        # MCU rows and columns are whole, so the padded size is rounded up to the MCU.
        blocks_x = -(-width // (8 * h_max)) * max(h, 1)
        blocks_y = -(-height // (8 * v_max)) * max(v, 1)
        total += blocks_x * blocks_y * 128
    return total


# ------------------------------------------------------------------------------ pixels ---


def _to_rgb(
    image: Image.Image, data: bytes, declared_size: tuple[int, int]
) -> tuple[Image.Image, int, int]:
    """Decode the first frame, orient it, flatten it to RGB and resize it.

    Returns the resized image and the full-resolution size as a viewer shows it.

    Memory: only the decoded picture exists at full size. Orientation, flattening (alpha over
    white, high bit depths to 8 bits, palettes, CMYK) and the horizontal half of the resize run
    on strips of rows of the *oriented* picture; each strip is cut from the decoded picture
    (a column band when the orientation turns it), transposed, flattened and narrowed to 224
    columns; the vertical half of the resize runs on the 224-wide result. Pillow's resize is
    separable (horizontal pass over each row, rounded to 8 bits, then vertical pass), and every
    other step is per pixel, so the output is bit-identical to doing each step on the whole
    picture (tests/unit/test_image_contract.py compares the two).
    """
    declared_width, declared_height = declared_size
    # EXIF orientations 5 to 8 include a quarter turn, which swaps width and height.
    quarter_turn = image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    if image.format in ("JPEG", "MPO"):
        _draft(image)
    image.seek(0)
    source = _heif_rows(image, data) if image.format == "HEIF" else None
    if source is None:
        image.load()
        source = image
    # Read again after loading, as ImageOps.exif_transpose does: some decoders (libtiff)
    # orient the pixels themselves while loading and drop the tag.
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    method = _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    resized = _resize_in_strips(source, method)
    if quarter_turn:
        return resized, declared_height, declared_width
    return resized, declared_width, declared_height


class _ArraySource:
    """A decoded picture held as a numpy array (HEIF), cut into Pillow strips on demand."""

    def __init__(self, pixels: np.ndarray, mode: str) -> None:
        self.pixels = pixels
        self.mode = mode
        self.size = (pixels.shape[1], pixels.shape[0])
        self.info: dict[str, object] = {}

    def crop(self, box: tuple[int, int, int, int]) -> Image.Image:
        left, top, right, bottom = box
        return Image.fromarray(np.ascontiguousarray(self.pixels[top:bottom, left:right]), self.mode)


def _heif_rows(image: Image.Image, data: bytes) -> _ArraySource | None:
    """HEIF pixels straight from libheif's buffer, without Pillow's full-size copy of them.

    The same call and options as pillow_heif's Pillow plugin (so the same pixels); ``None``
    when the mode is one the array path does not handle, and the plugin decodes instead.
    """
    if image.mode not in ("RGB", "RGBA", "L"):
        return None
    heif_file = pillow_heif.open_heif(
        io.BytesIO(data), convert_hdr_to_8bit=True, hdr_to_16bit=True, remove_stride=False
    )
    frame = heif_file[heif_file.primary_index]
    if frame.mode != image.mode:
        return None
    width, height = frame.size
    channels = len(image.mode)
    # From the raw buffer and its stride (the frame's own array view assumes the stride is a
    # whole number of pixels, which libheif does not promise).
    buffer = np.frombuffer(frame.data, dtype=np.uint8)
    rows = buffer[: frame.stride * height].reshape(height, frame.stride)
    pixels = rows[:, : width * channels].reshape(height, width, channels)
    if channels == 1:
        pixels = pixels[:, :, 0]
    return _ArraySource(pixels, image.mode)


def _source_box(
    method: Image.Transpose | None, size: tuple[int, int], box: tuple[int, int, int, int]
) -> tuple[int, int, int, int]:
    """The box of the decoded picture (``size``) that ``method`` turns into ``box`` of the
    oriented picture."""
    width, height = size
    left, top, right, bottom = box
    if method is None:
        return box
    return {
        Image.Transpose.FLIP_LEFT_RIGHT: (width - right, top, width - left, bottom),
        Image.Transpose.ROTATE_180: (width - right, height - bottom, width - left, height - top),
        Image.Transpose.FLIP_TOP_BOTTOM: (left, height - bottom, right, height - top),
        Image.Transpose.TRANSPOSE: (top, left, bottom, right),
        Image.Transpose.ROTATE_270: (top, height - right, bottom, height - left),
        Image.Transpose.TRANSVERSE: (width - bottom, height - right, width - top, height - left),
        Image.Transpose.ROTATE_90: (width - bottom, left, width - top, right),
    }[method]


def _resize_in_strips(
    source: Image.Image | _ArraySource, method: Image.Transpose | None
) -> Image.Image:
    """Orient, flatten and resize ``source`` to IMAGE_SIZE², one band of rows at a time.

    The resize is Pillow's separable bilinear one written as its two passes: each row is
    resized to IMAGE_SIZE columns (rounded to 8 bits), then each column of that to IMAGE_SIZE
    rows. Pillow's own ``resize`` may run the vertical pass first for tall pictures, which
    rounds differently by at most one level; the explicit order is what lets rows be done band
    by band, and keeps the pixels independent of that internal choice (IMAGE_FUNCTION_VERSION 3).
    """
    width, height = source.size
    quarter = method in (
        Image.Transpose.TRANSPOSE,
        Image.Transpose.ROTATE_270,
        Image.Transpose.TRANSVERSE,
        Image.Transpose.ROTATE_90,
    )
    out_width, out_height = (height, width) if quarter else (width, height)

    def band(box: tuple[int, int, int, int]) -> Image.Image:
        """``box`` of the oriented picture, in the source's mode."""
        cropped = source.crop(_source_box(method, (width, height), box))
        return cropped if method is None else cropped.transpose(method)

    step = max(1, _STRIP_PIXELS // out_width)
    boxes = [(0, top, out_width, min(top + step, out_height)) for top in range(0, out_height, step)]
    scale = _range_of_strips(boxes, band) if source.mode in ("I", "F") else None
    narrow = Image.new("RGB", (IMAGE_SIZE, out_height))
    for box in boxes:
        flat = _flatten(band(box), scale)
        narrow.paste(flat.resize((IMAGE_SIZE, flat.height), Image.Resampling.BILINEAR), box[:2])
    return narrow.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)


def _flatten(image: Image.Image, scale: float | None = None) -> Image.Image:
    """Any mode -> 8-bit RGB, transparency over white, high bit depths scaled by range.

    ``scale`` is the full-scale value of a 32-bit integer or float picture (from the whole
    picture, see :func:`_range_of_strips`); 16-bit pictures use 65535.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            scale = 65535.0
        elif scale is None:
            scale = _range_of(values)
        grey = np.clip(values / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # CMYK, YCbCr, LAB, L, 1 and palette images without transparency.
    return image.convert("RGB")


def _range_of_strips(boxes, band) -> float:  # type: ignore[no-untyped-def]
    """:func:`_range_of` of the whole picture, computed band by band (same value)."""
    peaks = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN band
        for box in boxes:
            values = np.asarray(band(box), dtype=np.float64)
            if values.size:
                peaks.append(float(np.nanmax(values)))
    finite = [peak for peak in peaks if not np.isnan(peak)]
    peak = max(finite) if finite else (float("nan") if peaks else 0.0)
    if peak <= 1.0:
        return 1.0
    return peak


def _range_of(values: np.ndarray) -> float:
    """The full-scale value for 32-bit integer or float pixels: 1.0 for floats up to 1, else max."""
    peak = float(np.nanmax(values)) if values.size else 0.0
    if peak <= 1.0:
        return 1.0
    return peak

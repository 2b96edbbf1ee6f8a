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
IMAGE_FUNCTION_VERSION: Final[str] = "2"
DEFAULT_MAX_IMAGE_BYTES: Final[int] = 20 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS: Final[int] = 50_000_000

# Formats a seller's camera or phone produces. Anything else Pillow happens to parse (EPS, ICO,
# PSD, ...) is refused: those decoders are rarely exercised and some shell out or allocate freely.
SUPPORTED_FORMATS: Final[frozenset[str]] = frozenset(
    {"JPEG", "MPO", "PNG", "WEBP", "GIF", "HEIF", "BMP", "TIFF"}
)

# Decoding at reduced scale stops once the image would be smaller than this multiple of the output.
_DRAFT_MARGIN: Final[int] = 1
_EXIF_ORIENTATION: Final[int] = 0x0112

RejectionReason = Literal[
    "empty",
    "too_large",
    "not_an_image",
    "unsupported_format",
    "too_many_pixels",
    "corrupt",
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
) -> np.ndarray:
    """Return ``uint8[224, 224, 3]`` RGB pixels for the image in ``data``.

    Raises :class:`ImageRejected` for anything that is not a usable image.
    """
    return decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels).pixels


def decode_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> DecodedImage:
    """Like :func:`image_to_tensor`, also returning the original size and format."""
    if len(data) == 0:
        raise ImageRejected("empty", "the file has no bytes")
    if len(data) > max_bytes:
        raise ImageRejected("too_large", f"{len(data)} bytes is more than the limit of {max_bytes}")
    try:
        # Pillow's own bomb check warns or raises depending on a global; ours is explicit and
        # per call, so the global check is silenced here and replaced by the test below.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as error:
        raise ImageRejected(
            "not_an_image", "the bytes are not an image Pillow recognises"
        ) from error
    except Image.DecompressionBombError as error:
        raise ImageRejected("too_many_pixels", str(error)) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageRejected("corrupt", f"the header cannot be read ({error})") from error

    with image:
        image_format = image.format or "unknown"
        if image_format not in SUPPORTED_FORMATS:
            raise ImageRejected("unsupported_format", f"{image_format} images are not accepted")
        width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageRejected("corrupt", f"declared size {width}x{height} is empty")
        # Checked on the declared size before a single pixel is decoded.
        if width * height > max_pixels:
            raise ImageRejected(
                "too_many_pixels",
                f"{width}x{height} is more than the limit of {max_pixels} pixels",
            )
        try:
            rgb, width, height = _to_rgb(image)
        except Image.DecompressionBombError as error:
            raise ImageRejected("too_many_pixels", str(error)) from error
        except MemoryError as error:
            raise ImageRejected(
                "too_many_pixels", "decoding needs more memory than allowed"
            ) from error
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as error:
            # Pillow's decoders signal truncated or damaged data with any of these.
            raise ImageRejected("corrupt", f"the pixel data cannot be decoded ({error})") from error
    pixels = np.asarray(rgb, dtype=np.uint8)
    if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE, CHANNELS):  # pragma: no cover - defensive
        raise ImageRejected("corrupt", f"decoded to an unexpected shape {pixels.shape}")
    return DecodedImage(pixels=pixels, width=width, height=height, format=image_format)


def _to_rgb(image: Image.Image) -> tuple[Image.Image, int, int]:
    """Decode the first frame, orient it, flatten it to RGB and resize it.

    Returns the resized image and the full-resolution size as a viewer shows it.
    """
    declared_width, declared_height = image.size
    # EXIF orientations 5 to 8 include a quarter turn, which swaps width and height.
    quarter_turn = image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    if image.format in ("JPEG", "MPO"):
        # The draft size is orientation-independent because it asks for a square.
        target = IMAGE_SIZE * _DRAFT_MARGIN
        image.draft("RGB", (target, target))
    image.seek(0)
    oriented = ImageOps.exif_transpose(image)
    flattened = _flatten(oriented)
    resized = flattened.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    if quarter_turn:
        return resized, declared_height, declared_width
    return resized, declared_width, declared_height


def _flatten(image: Image.Image) -> Image.Image:
    """Any mode -> 8-bit RGB, transparency over white, high bit depths scaled by range."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if mode.startswith("I;16") else _range_of(values)
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


def _range_of(values: np.ndarray) -> float:
    """The full-scale value for 32-bit integer or float pixels: 1.0 for floats up to 1, else max."""
    peak = float(np.nanmax(values)) if values.size else 0.0
    if peak <= 1.0:
        return 1.0
    return peak

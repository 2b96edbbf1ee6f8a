"""Decode once: the training path gives byte-identical pixels to a direct image_to_tensor call."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contracts.image import IMAGE_FUNCTION_VERSION, image_to_tensor
from model_build.data import prepare
from model_build.data.dataset import discover
from model_build.data.prepare import cache_root, prepare_split


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture
def varied_dataset(tmp_path: Path) -> Path:
    """Images in several formats and modes, one corrupt file and one text file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    photo = Image.fromarray(rng.integers(0, 255, (300, 410, 3), dtype=np.uint8))
    rotated = photo.copy()
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    rgba = Image.fromarray(rng.integers(0, 255, (120, 90, 4), dtype=np.uint8), "RGBA")
    files = {
        "train/a/photo.jpg": _encode(photo, "JPEG", quality=85),
        "train/a/rotated.jpg": _encode(rotated, "JPEG", exif=exif),
        "train/b/alpha.png": _encode(rgba, "PNG"),
        "train/b/grey.png": _encode(photo.convert("L"), "PNG"),
        "train/b/palette.gif": _encode(photo.convert("P"), "GIF"),
        "train/b/broken.jpg": _encode(photo, "JPEG")[:400],
        "train/a/notes.txt": b"not an image",
        "val/a/v.jpg": _encode(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG"),
        "val/b/v.png": _encode(photo.convert("CMYK"), "TIFF"),
    }
    for name, payload in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_training_path_matches_direct_call_byte_for_byte(
    varied_dataset: Path, tmp_path: Path, workers: int
) -> None:
    dataset = discover(varied_dataset)
    cache = tmp_path / "cache"

    for attempt in ("cold cache", "warm cache"):
        for split in ("train", "val"):
            prepared = prepare_split(dataset, split, cache_dir=cache, workers=workers)
            assert prepared.pixels.dtype == np.uint8
            assert len(prepared.pixels) == len(prepared.paths) == len(prepared.label_indices)
            for pixels, path in zip(prepared.pixels, prepared.paths, strict=True):
                direct = image_to_tensor(path.read_bytes())
                assert pixels.tobytes() == direct.tobytes(), (attempt, path)


def test_refused_files_are_skipped_with_their_reason(varied_dataset: Path, tmp_path: Path) -> None:
    prepared = prepare_split(discover(varied_dataset), "train", cache_dir=tmp_path, workers=1)

    skipped = {path.name: reason for path, reason in prepared.skipped}
    assert skipped == {"broken.jpg": "corrupt", "notes.txt": "not_an_image"}
    assert len(prepared) == 5


def test_cache_is_reused_and_keyed_by_image_function_version(
    varied_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = discover(varied_dataset)
    first = prepare_split(dataset, "train", cache_dir=tmp_path, workers=1)
    assert cache_root(tmp_path).name == f"v{IMAGE_FUNCTION_VERSION}"
    assert any(cache_root(tmp_path).rglob("*.npz"))

    def no_decoding(job):
        raise AssertionError(f"decoded again: {job}")

    monkeypatch.setattr(prepare, "_decode_into_cache", no_decoding)
    second = prepare_split(dataset, "train", cache_dir=tmp_path, workers=1)
    assert np.array_equal(first.pixels, second.pixels)
    assert first.skipped == second.skipped

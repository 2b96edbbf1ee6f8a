"""Decode once: every image through the worker's image function, cached as uint8 arrays.

Each file is decoded with :func:`contracts.image.image_to_tensor` — the very function the Lambda
worker calls — in parallel processes, and the result is stored on disk under

    <cache_dir>/v<IMAGE_FUNCTION_VERSION>/<sha[:2]>/<sha>.npz    (pixels, width, height, phash)
    <cache_dir>/v<IMAGE_FUNCTION_VERSION>/<sha[:2]>/<sha>.json   (a refused file's reason)

keyed by the file's content hash and the image function's version. Re-running training, a second
run on the same data, the audit and the evaluation all read the cache; no JPEG is decoded per
epoch, and a change to the image function (a new version) never reuses stale arrays.
The default cache is ``.cache/prepared`` under the working directory.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import imagehash
import numpy as np
from PIL import Image

from contracts.image import (
    CHANNELS,
    IMAGE_FUNCTION_VERSION,
    IMAGE_SIZE,
    ImageRejected,
    image_to_tensor,
)
from model_build.dataset import Dataset, Sample

DEFAULT_CACHE_DIR: Final[Path] = Path(".cache/prepared")
_CHUNK_SIZE: Final[int] = 16


@dataclass(frozen=True)
class DecodeResult:
    """What decoding one file gave: its cache entry, or the reason it was refused."""

    sha256: str
    ok: bool
    width: int = 0  # of the original picture, after EXIF orientation
    height: int = 0
    phash: str = ""  # perceptual hash (hex) of the 224×224 pixels, for near-duplicate search
    reason: str = ""  # ImageRejected.reason, or "unreadable" for an OS error
    detail: str = ""


@dataclass(frozen=True)
class PreparedSplit:
    """One split, decoded: what training, evaluation and int8 calibration consume.

    ``pixels`` is ``uint8[N, 224, 224, 3]`` RGB exactly as the worker would produce it,
    ``label_indices`` is ``int64[N]`` (index into ``labels``), ``paths`` are the source files in
    the same order. Files the image function refuses are left out and listed in ``skipped`` as
    ``(path, reason)``.
    """

    pixels: np.ndarray
    label_indices: np.ndarray
    paths: tuple[Path, ...]
    labels: tuple[str, ...]
    skipped: tuple[tuple[Path, str], ...] = ()

    def __len__(self) -> int:
        return len(self.paths)


def cache_root(cache_dir: Path | None = None) -> Path:
    """The versioned folder of the prepare cache."""
    return Path(cache_dir or DEFAULT_CACHE_DIR) / f"v{IMAGE_FUNCTION_VERSION}"


def decode_samples(
    samples: Iterable[Sample],
    *,
    cache_dir: Path | None = None,
    workers: int | None = None,
) -> dict[str, DecodeResult]:
    """Make sure every sample's content is in the cache; return ``{sha256: DecodeResult}``.

    Cached contents are not decoded again. New ones are decoded in ``workers`` processes
    (default: one per CPU).
    """
    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    unique: dict[str, Path] = {}
    for sample in samples:
        unique.setdefault(sample.sha256, sample.path)
    results: dict[str, DecodeResult] = {}
    todo: list[tuple[str, str, str]] = []
    for digest, path in unique.items():
        cached = _read_cached_result(root, digest)
        if cached is None:
            todo.append((str(path), digest, str(root)))
        else:
            results[digest] = cached
    if todo:
        workers = workers or os.cpu_count() or 1
        if workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for result in pool.map(_decode_into_cache, todo, chunksize=_CHUNK_SIZE):
                    results[result.sha256] = result
        else:
            for job in todo:
                result = _decode_into_cache(job)
                results[result.sha256] = result
    return results


def load_pixels(sha256: str, *, cache_dir: Path | None = None) -> np.ndarray:
    """The cached ``uint8[224, 224, 3]`` pixels of a content hash (KeyError when not cached)."""
    path = _entry_path(cache_root(cache_dir), sha256, ".npz")
    if not path.is_file():
        raise KeyError(sha256)
    with np.load(path) as entry:
        return entry["pixels"]


def prepare_split(
    dataset: Dataset,
    split: str,
    *,
    cache_dir: Path | None = None,
    workers: int | None = None,
) -> PreparedSplit:
    """Decode (or load from the cache) every file of ``split`` of ``dataset``.

    ``dataset`` comes from :func:`model_build.dataset.discover`; ``split`` is ``"train"``,
    ``"val"`` or ``"test"``. Returns a :class:`PreparedSplit` whose pixels are byte-identical to
    ``contracts.image.image_to_tensor(path.read_bytes())`` for every file kept. Refused files are
    skipped, never fatal.
    """
    if split not in dataset.splits:
        raise ValueError(f"the dataset has no {split!r} split (it has {sorted(dataset.splits)})")
    samples = dataset.splits[split]
    results = decode_samples(samples, cache_dir=cache_dir, workers=workers)
    kept = [s for s in samples if results[s.sha256].ok]
    skipped = tuple((s.path, results[s.sha256].reason) for s in samples if not results[s.sha256].ok)
    pixels = np.empty((len(kept), IMAGE_SIZE, IMAGE_SIZE, CHANNELS), dtype=np.uint8)
    for row, sample in enumerate(kept):
        pixels[row] = load_pixels(sample.sha256, cache_dir=cache_dir)
    return PreparedSplit(
        pixels=pixels,
        label_indices=np.array([s.label_index for s in kept], dtype=np.int64),
        paths=tuple(s.path for s in kept),
        labels=dataset.labels,
        skipped=skipped,
    )


def prepare_files(
    paths: Sequence[Path], *, cache_dir: Path | None = None, workers: int | None = None
) -> np.ndarray:
    """Pixels of arbitrary files (no labels), via the cache; ValueError names a refused file."""
    from model_build.dataset import file_sha256

    samples = [
        Sample(path=Path(p), label="", label_index=-1, sha256=file_sha256(Path(p))) for p in paths
    ]
    results = decode_samples(samples, cache_dir=cache_dir, workers=workers)
    for sample in samples:
        result = results[sample.sha256]
        if not result.ok:
            raise ValueError(f"{sample.path}: {result.reason}: {result.detail}")
    return np.stack([load_pixels(s.sha256, cache_dir=cache_dir) for s in samples])


# --- the worker side ---------------------------------------------------------------------------


def _entry_path(root: Path, digest: str, suffix: str) -> Path:
    return root / digest[:2] / f"{digest}{suffix}"


def _read_cached_result(root: Path, digest: str) -> DecodeResult | None:
    npz = _entry_path(root, digest, ".npz")
    if npz.is_file():
        try:
            with np.load(npz) as entry:
                return DecodeResult(
                    sha256=digest,
                    ok=True,
                    width=int(entry["width"]),
                    height=int(entry["height"]),
                    phash=str(entry["phash"]),
                )
        except (OSError, ValueError, KeyError):
            return None  # a damaged entry is decoded again
    rejected = _entry_path(root, digest, ".json")
    if rejected.is_file():
        try:
            data = json.loads(rejected.read_text())
            return DecodeResult(
                sha256=digest, ok=False, reason=data["reason"], detail=data["detail"]
            )
        except (OSError, ValueError, KeyError):
            return None
    return None


def _atomic_write(path: Path, payload: bytes) -> None:
    """Write via a temporary file and rename, so concurrent runs never read half an entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _decode_into_cache(job: tuple[str, str, str]) -> DecodeResult:
    """Runs in a worker process: read, decode with the contract, hash, store. Never raises."""
    path, digest, root = job
    root_path = Path(root)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return DecodeResult(sha256=digest, ok=False, reason="unreadable", detail=str(error))
    try:
        pixels = image_to_tensor(data)
    except ImageRejected as error:
        payload = json.dumps({"reason": error.reason, "detail": error.detail}).encode()
        _atomic_write(_entry_path(root_path, digest, ".json"), payload)
        return DecodeResult(sha256=digest, ok=False, reason=error.reason, detail=error.detail)
    # The original size, for the audit's tiny-image warning (header only; it decoded above).
    with Image.open(io.BytesIO(data)) as header:
        width, height = header.size
    phash = str(imagehash.phash(Image.fromarray(pixels)))
    buffer = io.BytesIO()
    np.savez(
        buffer,
        pixels=pixels,
        width=np.int64(width),
        height=np.int64(height),
        phash=np.array(phash),
    )
    _atomic_write(_entry_path(root_path, digest, ".npz"), buffer.getvalue())
    return DecodeResult(sha256=digest, ok=True, width=width, height=height, phash=phash)

"""Decode once: every image through the worker's image function, cached as uint8 arrays.

Each file is decoded with :func:`contracts.image.image_to_tensor` — the very function the Lambda
worker calls — in parallel processes, and the result is stored on disk under

    <cache_dir>/v<IMAGE_FUNCTION_VERSION>/<sha[:2]>/<sha>.npz    (pixels, width, height, phash)
    <cache_dir>/v<IMAGE_FUNCTION_VERSION>/<sha[:2]>/<sha>.json   (a refused file's reason)

keyed by the file's content hash and the image function's version. Re-running training, a second
run on the same data, the audit and the evaluation all read the cache; no JPEG is decoded per
epoch, and a change to the image function (a new version) never reuses stale arrays.
The default cache is ``.cache/prepared`` under the working directory.

A split's pixels are assembled once into one file, ``<cache_dir>/v<…>/splits/<split content
hash>.npy`` (uint8 ``[N, 224, 224, 3]``), and handed to training as a
:class:`~model_build.data.rowfile.RowFile`: the tf.data pipelines read it batch by batch
(``pread``), so
the process never holds the whole array (the 16,803-image train split is 2.5 GB); the kernel's
page cache keeps what fits.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import imagehash
import numpy as np
from PIL import Image

from contracts.artifact import sha256_file
from contracts.image import (
    CHANNELS,
    IMAGE_FUNCTION_VERSION,
    IMAGE_SIZE,
    ImageRejected,
    decode_image,
)
from model_build.data.dataset import Dataset, Sample
from model_build.data.rowfile import RowFile, RowWriter
from model_build.progress import Progress
from model_build.run_folder import RecordedSplit, split_content_hash

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
    sha256: tuple[str, ...] = ()  # content hash of each kept file, in order

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def content_hash(self) -> str:
        """Hash of the kept files' contents and labels in order (keys the split's caches)."""
        return split_content_hash(self.sha256, self.label_indices)


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
        with Progress("decode", total=len(todo)) as progress:
            if workers > 1 and len(todo) > 1:
                with ProcessPoolExecutor(max_workers=workers) as pool:
                    for result in pool.map(_decode_into_cache, todo, chunksize=_CHUNK_SIZE):
                        results[result.sha256] = result
                        progress.update()
            else:
                for job in todo:
                    result = _decode_into_cache(job)
                    results[result.sha256] = result
                    progress.update()
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
    results: Mapping[str, DecodeResult] | None = None,
) -> PreparedSplit:
    """Decode (or load from the cache) every file of ``split`` of ``dataset``.

    ``dataset`` comes from :func:`model_build.data.dataset.discover`; ``split`` is ``"train"``,
    ``"val"`` or ``"test"``. Returns a :class:`PreparedSplit` whose pixels (a row file, read on
    demand) are byte-identical to ``contracts.image.image_to_tensor(path.read_bytes())`` for every
    file kept. Refused files are skipped, never fatal. ``results`` are the decode results the
    audit already has (then nothing is looked up again).
    """
    if split not in dataset.splits:
        raise ValueError(f"the dataset has no {split!r} split (it has {sorted(dataset.splits)})")
    samples = dataset.splits[split]
    if results is None or any(s.sha256 not in results for s in samples):
        results = decode_samples(samples, cache_dir=cache_dir, workers=workers)
    kept = [s for s in samples if results[s.sha256].ok]
    skipped = tuple((s.path, results[s.sha256].reason) for s in samples if not results[s.sha256].ok)
    digests = tuple(s.sha256 for s in kept)
    label_indices = np.array([s.label_index for s in kept], dtype=np.int64)
    return PreparedSplit(
        pixels=split_pixels(digests, label_indices, cache_dir=cache_dir, name=split),
        label_indices=label_indices,
        paths=tuple(s.path for s in kept),
        labels=dataset.labels,
        skipped=skipped,
        sha256=digests,
    )


def split_pixels(
    digests: Sequence[str], label_indices, *, cache_dir: Path | None = None, name: str = "split"
) -> np.ndarray:
    """The pixels of ``digests`` in order: the split file in the cache (assembled from the
    per-file entries the first time), read row by row
    (:class:`~model_build.data.rowfile.RowFile`)."""
    root = cache_root(cache_dir) / "splits"
    path = root / f"{split_content_hash(digests, label_indices)}.npy"
    if not path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        partial = root / f".{path.stem}.{os.getpid()}.partial.npy"
        shape = (len(digests), IMAGE_SIZE, IMAGE_SIZE, CHANNELS)
        with (
            RowWriter(partial, shape, np.uint8) as store,
            Progress(f"assemble {name}", total=len(digests)) as progress,
        ):
            for row, digest in enumerate(digests):
                store.write(row, load_pixels(digest, cache_dir=cache_dir)[np.newaxis])
                progress.update()
        os.replace(partial, path)
    return RowFile(path)


def recorded_split(
    record: RecordedSplit,
    *,
    data_dir: Path,
    labels: Sequence[str],
    cache_dir: Path | None = None,
    limit: int | None = None,
) -> PreparedSplit:
    """Rebuild a split a run recorded (``data.json``): the same contents, in the same order.

    Pixels come from the prepare cache by content hash. A content missing from the cache is
    decoded from its recorded file when that file still has those bytes; otherwise every file
    under ``data_dir`` is hashed to find it (renamed or moved), and a content found nowhere is an
    error. ``limit`` keeps a fixed random subset (chosen before anything is read).
    """
    rows = limited_rows(len(record), limit)
    digests = [record.sha256[i] for i in rows]
    label_indices = np.array([record.label_indices[i] for i in rows], dtype=np.int64)
    paths = tuple(Path(data_dir) / record.paths[i] for i in rows)
    root = cache_root(cache_dir)
    missing = {
        digest: path
        for digest, path in zip(digests, paths, strict=True)
        if _read_cached_result(root, digest) is None
    }
    if missing:
        _decode_missing(missing, data_dir=Path(data_dir), cache_dir=cache_dir)
    return PreparedSplit(
        pixels=split_pixels(digests, label_indices, cache_dir=cache_dir),
        label_indices=label_indices,
        paths=paths,
        labels=tuple(labels),
        sha256=tuple(digests),
    )


def limited_rows(count: int, limit: int | None) -> list[int]:
    """The rows a ``limit`` keeps of ``count``: all, or a fixed random subset in file order."""
    if limit is None or count <= limit:
        return list(range(count))
    return sorted(int(i) for i in np.random.default_rng(0).choice(count, size=limit, replace=False))


def subset(split: PreparedSplit, limit: int | None) -> PreparedSplit:
    """``split`` limited as :func:`recorded_split` limits a recorded one (same rows)."""
    rows = limited_rows(len(split), limit)
    if len(rows) == len(split):
        return split
    return PreparedSplit(
        pixels=split.pixels[rows],
        label_indices=split.label_indices[rows],
        paths=tuple(split.paths[i] for i in rows),
        labels=split.labels,
        sha256=tuple(split.sha256[i] for i in rows),
    )


def run_split(
    run,
    split: str,
    *,
    data_dir: Path | None = None,
    record=None,
    limit: int | None = None,
) -> PreparedSplit:
    """A split of a run folder (:class:`model_build.run_folder.RunFolder`) as it was trained on,
    from ``data.json``; ``data_dir`` overrides the recorded folder (the files moved)."""
    record = record or run.read_data()
    if split not in record.splits:
        raise ValueError(f"{run.path} recorded no {split!r} split (it has {sorted(record.splits)})")
    cache_dir = run.config_dict().get("cache_dir")
    return recorded_split(
        record.splits[split],
        data_dir=Path(data_dir) if data_dir else record.data_dir,
        labels=record.labels,
        cache_dir=Path(cache_dir) if cache_dir else None,
        limit=limit,
    )


def _decode_missing(missing: dict[str, Path], *, data_dir: Path, cache_dir: Path | None) -> None:
    found: dict[str, Path] = {}
    for digest, path in missing.items():
        if path.is_file() and sha256_file(path) == digest:
            found[digest] = path
    if len(found) < len(missing):
        for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
            digest = sha256_file(path)
            if digest in missing and digest not in found:
                found[digest] = path
    lost = sorted(set(missing) - set(found))
    if lost:
        raise ValueError(
            f"{len(lost)} file(s) of the recorded split are neither in the prepare cache nor "
            f"under {data_dir} (first content sha256 {lost[0]}): the dataset changed"
        )
    samples = [Sample(path=p, label="", label_index=-1, sha256=d) for d, p in found.items()]
    results = decode_samples(samples, cache_dir=cache_dir)
    refused = [d for d in found if not results[d].ok]
    if refused:
        raise ValueError(f"{found[refused[0]]} of the recorded split can no longer be decoded")


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
        decoded = decode_image(data)  # what image_to_tensor returns, with the original size
    except ImageRejected as error:
        payload = json.dumps({"reason": error.reason, "detail": error.detail}).encode()
        _atomic_write(_entry_path(root_path, digest, ".json"), payload)
        return DecodeResult(sha256=digest, ok=False, reason=error.reason, detail=error.detail)
    pixels, width, height = decoded.pixels, decoded.width, decoded.height
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

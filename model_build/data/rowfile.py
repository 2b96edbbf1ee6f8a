"""Row files: ``.npy`` arrays read and written a row at a time, never mapped into memory.

The decoded pixels of a split (``uint8 [N, 224, 224, 3]``, 2.5 GB for the 16,803-image train
split) and the cached backbone features (``float16 [N, 7, 7, 1280]`` per view, 2.1 GB per view of
that split) live in ``.npy`` files in the cache folder. Training reads them batch by batch with
``os.pread`` into a fresh array: the process holds only the batches in flight, the kernel's page
cache keeps what fits (and drops it under pressure), and neither the resident set nor a
``tf.constant`` ever holds the whole array — so memory stays bounded at any dataset size and any
number of views. (A ``numpy.memmap`` would count every page it ever touched in the process's
resident set, up to the whole file.)

:class:`RowFile` supports what the pipelines and the evaluation need of an array: ``len``,
``shape``, ``dtype``, ``nbytes``, integer / slice / index-array reads, iteration and
``numpy.asarray`` (which reads everything: only for small arrays and tests). Files are ordinary
``.npy`` files (``numpy.load`` reads them).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


class RowFile:
    """A read-only ``.npy`` file whose rows are read on demand."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        with self.path.open("rb") as stream:
            version = np.lib.format.read_magic(stream)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }[version]
            shape, fortran, dtype = read_header(stream)
            self.offset = stream.tell()
        if fortran:
            raise ValueError(f"{self.path}: Fortran-ordered arrays are not supported")
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY)

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"RowFile({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes

    def _read_run(self, out: np.ndarray, first: int, count: int) -> None:
        """Rows ``first .. first+count-1`` into ``out`` (contiguous, ``count`` rows)."""
        view = memoryview(out.reshape(-1).view(np.uint8))
        position, size = self.offset + first * self.row_bytes, count * self.row_bytes
        done = 0
        while done < size:
            read = os.preadv(self._fd, [view[done:size]], position + done)
            if read <= 0:
                raise OSError(f"{self.path}: unexpected end of file")
            done += read

    def rows(self, index: Any) -> np.ndarray:
        """The rows ``index`` (integers, any order, repeats allowed) as a new array."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if len(index) and (index.min() < -len(self) or index.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        index = np.where(index < 0, index + len(self), index)
        out = np.empty((len(index), *self.row_shape), dtype=self.dtype)
        if not len(index):
            return out
        # One read per run of consecutive rows (a sorted batch is often a few runs).
        breaks = np.flatnonzero(np.diff(index) != 1) + 1
        for start, stop in zip(
            np.concatenate([[0], breaks]), np.concatenate([breaks, [len(index)]]), strict=True
        ):
            self._read_run(out[start:stop], int(index[start]), int(stop - start))
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.rows([int(key)])[0]
        if isinstance(key, slice):
            return self.rows(np.arange(len(self))[key])
        if isinstance(key, tuple):
            return self[key[0]][(slice(None), *key[1:])]
        key = np.asarray(key)
        if key.dtype == bool:  # a mask, as numpy reads it (not rows 0 and 1)
            if key.shape != (len(self),):
                raise IndexError(f"boolean index of shape {key.shape} for {len(self)} rows")
            key = np.flatnonzero(key)
        return self.rows(key)

    def __iter__(self) -> Iterator[np.ndarray]:
        step = max(1, (64 << 20) // max(self.row_bytes, 1))  # 64 MB at a time
        for start in range(0, len(self), step):
            yield from self.rows(np.arange(start, min(start + step, len(self))))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.rows(np.arange(len(self)))
        return array if dtype is None else array.astype(dtype)


class RowWriter:
    """Writes an ``.npy`` file row range by row range with ``os.pwrite`` (no mapping).

    ``RowWriter(path, shape, dtype)`` creates the file (header, then zero-filled data);
    ``RowWriter(path, shape, dtype, resume=True)`` reopens an existing one of that shape and
    dtype without truncating it.
    """

    def __init__(
        self, path: Path | str, shape: tuple[int, ...], dtype: Any, *, resume: bool = False
    ) -> None:
        self.path = Path(path)
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        if resume:
            existing = RowFile(self.path)
            if existing.shape != self.shape or existing.dtype != self.dtype:
                raise ValueError(f"{self.path} holds {existing.shape} {existing.dtype}")
            self.offset = existing.offset
            self._fd = os.open(self.path, os.O_WRONLY)
            return
        with self.path.open("wb") as stream:
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False}
            np.lib.format.write_array_header_1_0(stream, {**header, "shape": self.shape})
            self.offset = stream.tell()
            stream.truncate(self.offset + self.shape[0] * self.row_bytes)
        self._fd = os.open(self.path, os.O_WRONLY)

    def write(self, first: int, rows: np.ndarray) -> None:
        data = np.ascontiguousarray(rows, dtype=self.dtype)
        view = memoryview(data.reshape(-1).view(np.uint8))
        position, done = self.offset + first * self.row_bytes, 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], position + done)

    def flush(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

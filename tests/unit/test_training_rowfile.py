"""Row files and resumable feature views: bounded reads, the same bytes, no recomputation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model_build.data.rowfile import RowFile, RowWriter
from model_build.training.feature_cache import head_eval_dataset, head_train_dataset, write_view


def test_row_file_reads_what_numpy_wrote_in_any_order(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 256, (23, 6, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", array)
    rows = RowFile(tmp_path / "a.npy")

    assert (len(rows), rows.shape, rows.dtype, rows.nbytes) == (23, array.shape, np.uint8, 2070)
    index = np.array([7, 3, 4, 5, 22, 0, 0])
    np.testing.assert_array_equal(rows[index], array[index])
    np.testing.assert_array_equal(rows[2:9], array[2:9])
    np.testing.assert_array_equal(rows[-1], array[-1])
    np.testing.assert_array_equal(np.asarray(rows), array)
    np.testing.assert_array_equal(np.stack(list(rows)), array)
    # A boolean mask selects rows as numpy does (it read rows 0 and 1 over and over before).
    mask = np.arange(23) % 3 == 0
    np.testing.assert_array_equal(rows[mask], array[mask])


def test_row_writer_writes_a_numpy_file_and_resumes_without_truncating(tmp_path: Path) -> None:
    array = np.random.default_rng(1).random((9, 4)).astype(np.float16)
    with RowWriter(tmp_path / "f.npy", array.shape, np.float16) as writer:
        writer.write(0, array[:5])
    with RowWriter(tmp_path / "f.npy", array.shape, np.float16, resume=True) as writer:
        writer.write(5, array[5:])
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), array)


def test_a_view_resumes_where_it_stopped_and_is_reused_once_complete(tmp_path: Path) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    seen: list[int] = []

    def extract(batch):
        seen.append(len(batch))
        return np.asarray(batch, dtype=np.float32).mean(axis=(1, 2))

    expected = pixels.astype(np.float32).mean(axis=(1, 2)).astype(np.float16)
    path = tmp_path / "plain.npy"
    # An interrupted computation: the first 4 rows (two batches) written and recorded.
    with RowWriter(tmp_path / "plain.partial.npy", (10, 3), np.float16) as writer:
        writer.write(0, expected[:4])
    (tmp_path / "plain.partial.json").write_text(json.dumps({"rows": 4}))

    features = write_view(
        extract, pixels, path, shape=(3,), view=None, seed=0, batch_size=2, label="test"
    )

    assert seen == [2, 2, 2]  # rows 4..9 only
    np.testing.assert_array_equal(np.asarray(features), expected)
    assert not (tmp_path / "plain.partial.npy").exists()
    seen.clear()
    again = write_view(extract, pixels, path, shape=(3,), view=None, seed=0, batch_size=2)
    assert seen == []  # complete: read from the cache, nothing computed
    np.testing.assert_array_equal(np.asarray(again), expected)


def test_head_batches_read_views_from_row_files_without_stacking_them(tmp_path: Path) -> None:
    count, views = 6, 2
    parts = []
    for view in range(views):
        values = (np.arange(count * 2).reshape(count, 1, 1, 2) + 100 * view).astype(np.float16)
        np.save(tmp_path / f"v{view}.npy", values)
        parts.append(RowFile(tmp_path / f"v{view}.npy"))
    labels = np.arange(count) % 3
    train, steps = head_train_dataset(parts, labels, views=views, batch_size=4, seed=0)
    rows = np.concatenate([np.asarray(x)[:, 0, 0, 0] for x, _ in train.take(steps)])
    stacked = np.concatenate([np.asarray(part)[:, 0, 0, 0] for part in parts])
    assert set(rows.tolist()) <= set(stacked.tolist())  # rows of both views' files
    assert len(set(rows.tolist())) == len(rows) == steps * 4  # one permutation: no row twice
    # A single row file (not a list of views) is one array of rows, not a list of parts.
    val = head_eval_dataset(parts[1], labels, batch_size=4)
    got = np.concatenate([np.asarray(x) for x, _ in val])
    np.testing.assert_array_equal(got, np.asarray(parts[1], dtype=np.float32))

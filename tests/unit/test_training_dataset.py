"""Dataset discovery: layouts, labels, and a content-keyed split that never splits duplicates."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model_build.data.dataset import DatasetError, discover


def _write(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def _label_folders(root: Path, labels: dict[str, int]) -> None:
    for label, count in labels.items():
        for index in range(count):
            _write(root / label / f"{index}.jpg", f"{label}-{index}".encode())


def test_kaggle_layout_labels_and_splits(tmp_path: Path) -> None:
    _label_folders(tmp_path / "train", {"b": 3, "a": 2})
    _label_folders(tmp_path / "val", {"a": 1, "b": 1})
    _label_folders(tmp_path / "test", {"b": 1})
    _write(tmp_path / "train" / "a" / ".DS_Store", b"hidden")

    dataset = discover(tmp_path)

    assert dataset.layout == "kaggle"
    assert dataset.labels == ("a", "b")
    assert dataset.counts() == {
        "train": {"a": 2, "b": 3},
        "val": {"a": 1, "b": 1},
        "test": {"a": 0, "b": 1},
    }
    assert all(s.label_index == dataset.labels.index(s.label) for s in dataset.splits["train"])


def test_val_label_missing_from_train_is_a_clear_error(tmp_path: Path) -> None:
    _label_folders(tmp_path / "train", {"a": 2, "b": 2})
    _label_folders(tmp_path / "val", {"a": 1, "zebra": 1})

    with pytest.raises(DatasetError, match=r"val/ has label folder\(s\) \['zebra'\]"):
        discover(tmp_path)


def test_missing_or_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        discover(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="neither train/"):
        discover(tmp_path)


def test_label_folders_split_by_fraction(tmp_path: Path) -> None:
    _label_folders(tmp_path, {"a": 50, "b": 50})

    dataset = discover(tmp_path, val_fraction=0.2)

    assert dataset.layout == "label_folders"
    assert dataset.counts()["val"] == {"a": 10, "b": 10}
    assert dataset.counts()["train"] == {"a": 40, "b": 40}


def test_identical_files_never_straddle_the_split(tmp_path: Path) -> None:
    # Ten distinct contents per label, each present in three copies under different names.
    for label in ("a", "b"):
        for content in range(10):
            for copy in range(3):
                _write(tmp_path / label / f"{copy}_{content}.jpg", f"{label}{content}".encode())

    for seed in range(5):
        dataset = discover(tmp_path, val_fraction=0.3, seed=seed)
        train = {s.sha256 for s in dataset.splits["train"]}
        val = {s.sha256 for s in dataset.splits["val"]}
        assert train.isdisjoint(val)
        assert len(dataset.splits["val"]) % 3 == 0


def test_split_is_stable_under_renaming_and_additions(tmp_path: Path) -> None:
    original = tmp_path / "original"
    _label_folders(original, {"a": 30, "b": 30})
    before = discover(original, seed=7)
    val_before = {s.sha256 for s in before.splits["val"]}

    renamed = tmp_path / "renamed"
    shutil.copytree(original, renamed)
    for path in list(renamed.rglob("*.jpg")):
        path.rename(path.with_name(f"renamed_{path.name}"))
    assert {s.sha256 for s in discover(renamed, seed=7).splits["val"]} == val_before

    # A different seed gives the same split: the seed never chooses evaluation photos.
    assert {s.sha256 for s in discover(original, seed=8).splits["val"]} == val_before


def test_kaggle_without_val_splits_train(tmp_path: Path) -> None:
    _label_folders(tmp_path / "train", {"a": 10, "b": 10})

    dataset = discover(tmp_path, val_fraction=0.2)

    assert dataset.layout == "kaggle_split_train"
    assert dataset.counts()["val"] == {"a": 2, "b": 2}

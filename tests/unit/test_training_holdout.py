"""Held-out evaluation data: carved out of val by content hash (deterministic, rename-proof,
disjoint), never when test/ exists; ``--weights none`` on a frozen MobileNetV2 is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model_build import train
from model_build.data.dataset import discover
from model_build.data.holdout import (
    HOLDOUT_SPLIT,
    evaluation_split,
    split_content_hash,
    with_holdout,
)


def _write(folder: Path, label: str, count: int, salt: str = "") -> None:
    (folder / label).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (folder / label / f"{index}.jpg").write_bytes(f"{label}{index}{salt}".encode())


def _kaggle(root: Path, test: bool = False) -> Path:
    for label in ("a", "b", "c"):
        _write(root / "train", label, 4)
        _write(root / "val", label, 10, salt="v")
        if test:
            _write(root / "test", label, 3, salt="t")
    return root


def test_holdout_is_half_of_val_by_content_and_disjoint(tmp_path: Path) -> None:
    dataset = with_holdout(discover(_kaggle(tmp_path / "d")), 0.5)
    assert evaluation_split(dataset) == HOLDOUT_SPLIT
    val = {s.sha256 for s in dataset.splits["val"]}
    held = {s.sha256 for s in dataset.splits[HOLDOUT_SPLIT]}
    assert len(val) == len(held) == 15
    assert not val & held
    assert {s.label for s in dataset.splits[HOLDOUT_SPLIT]} == {"a", "b", "c"}

    # Same bytes under other names, listed from another folder: the same split and hash.
    shutil.copytree(tmp_path / "d", tmp_path / "e")
    for path in sorted((tmp_path / "e" / "val").rglob("*.jpg")):
        path.rename(path.with_name("renamed-" + path.name))
    again = with_holdout(discover(tmp_path / "e"), 0.5)
    assert {s.sha256 for s in again.splits[HOLDOUT_SPLIT]} == held
    assert split_content_hash(again, HOLDOUT_SPLIT) == split_content_hash(dataset, HOLDOUT_SPLIT)
    assert split_content_hash(again, HOLDOUT_SPLIT) != split_content_hash(again, "val")


def test_test_folder_is_the_evaluation_data_when_present(tmp_path: Path) -> None:
    dataset = with_holdout(discover(_kaggle(tmp_path / "d", test=True)), 0.5)
    assert HOLDOUT_SPLIT not in dataset.splits
    assert evaluation_split(dataset) == "test"
    assert len(dataset.splits["val"]) == 30


def test_no_holdout_means_evaluating_on_val(tmp_path: Path) -> None:
    dataset = with_holdout(discover(_kaggle(tmp_path / "d")), 0.0)
    assert evaluation_split(dataset) == "val"


def test_weights_none_on_a_frozen_mobilenet_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = _kaggle(tmp_path / "d")
    status = train.main(
        ["--data", str(data), "--model", "mobilenet_v2", "--weights", "none",
         "--out", str(tmp_path / "run")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2
    assert "learns nothing" in err
    assert "--fine-tune-layers" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "config.json").exists()

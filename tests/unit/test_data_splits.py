"""One role per split (model_build.data.splits): train fits, a slice of train/ selects, val
calibrates, test/ (or the held-out part of val) reports — disjoint, by group when the dataset names
groups, never by ``--seed``; ``--weights none`` on a frozen MobileNetV2 is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model_build import train
from model_build.data.dataset import discover
from model_build.data.splits import (
    CALIBRATION,
    HELD_OUT,
    SELECTION,
    TRAIN,
    RoleViolation,
    assign_roles,
    check_roles,
    dataset_contents,
    recorded_name,
    reported_split,
    split_content_hash,
)


def _write(folder: Path, label: str, count: int, salt: str = "") -> None:
    (folder / label).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (folder / label / f"{index}.jpg").write_bytes(f"{label}{index}{salt}".encode())


def _kaggle(root: Path, test: bool = False) -> Path:
    for label in ("a", "b", "c"):
        _write(root / "train", label, 20)
        _write(root / "val", label, 10, salt="v")
        if test:
            _write(root / "test", label, 3, salt="t")
    return root


def _digests(dataset, split: str) -> set[str]:
    return {s.sha256 for s in dataset.splits[split]}


def test_four_roles_disjoint_held_out_half_of_val_selection_a_tenth_of_train(tmp_path) -> None:
    dataset = assign_roles(discover(_kaggle(tmp_path / "d")))
    assert set(dataset.splits) == {TRAIN, SELECTION, CALIBRATION, HELD_OUT}
    check_roles(dataset_contents(dataset))  # no photo in two roles
    assert len(dataset.splits[SELECTION]) == 6  # 2 of 20 per label
    assert len(dataset.splits[TRAIN]) == 54
    assert len(dataset.splits[CALIBRATION]) == len(dataset.splits[HELD_OUT]) == 15
    assert reported_split(dataset.splits) == HELD_OUT
    assert {s.label for s in dataset.splits[HELD_OUT]} == {"a", "b", "c"}

    # Same bytes under other names, listed from another folder: the same roles and hash.
    shutil.copytree(tmp_path / "d", tmp_path / "e")
    for path in sorted((tmp_path / "e").rglob("*.jpg")):
        path.rename(path.with_name("renamed-" + path.name))
    again = assign_roles(discover(tmp_path / "e"))
    for split in (SELECTION, HELD_OUT):
        assert _digests(again, split) == _digests(dataset, split)
    assert split_content_hash(again, HELD_OUT) == split_content_hash(dataset, HELD_OUT)
    assert split_content_hash(again, HELD_OUT) != split_content_hash(again, CALIBRATION)


def test_another_seed_never_changes_which_photos_select_calibrate_or_report(tmp_path) -> None:
    # GIVEN one folder of label folders (val is split off train/ too) and two seeds
    for label in ("a", "b"):
        _write(tmp_path / "flat", label, 40)
    # WHEN each seed discovers and assigns roles
    first, second = (assign_roles(discover(tmp_path / "flat", seed=seed)) for seed in (0, 1234))
    # THEN every role holds the same photos: a seed cannot swap the evaluation photos (and so
    # cannot make the publish gate skip its comparison with the latest model).
    for split in (TRAIN, SELECTION, CALIBRATION, HELD_OUT):
        assert _digests(first, split) == _digests(second, split)


def test_test_folder_reports_and_all_of_val_calibrates(tmp_path: Path) -> None:
    dataset = assign_roles(discover(_kaggle(tmp_path / "d", test=True)))
    assert len(dataset.splits[CALIBRATION]) == 30
    assert _digests(dataset, HELD_OUT) == {
        s.sha256 for s in discover(tmp_path / "d").splits["test"]
    }


def test_nothing_held_out_reports_on_calibration(tmp_path: Path) -> None:
    dataset = assign_roles(discover(_kaggle(tmp_path / "d")), held_out_fraction=0.0)
    assert HELD_OUT not in dataset.splits
    assert reported_split(dataset.splits) == CALIBRATION


def test_a_capture_session_folder_goes_whole_to_one_side(tmp_path: Path) -> None:
    # GIVEN val photos in session folders (<label>/<session>/photo.jpg), 4 photos per session
    root = _kaggle(tmp_path / "d")
    shutil.rmtree(root / "val")
    for label in ("a", "b", "c"):  # every label keeps val photos (discover refuses one without)
        for session in range(6):
            _write(root / "val" / label, f"s{session}", 4, salt=f"{label}{session}")
    # WHEN the held-out part is carved out of val
    dataset = assign_roles(discover(root))
    # THEN no session has photos on both sides
    sessions = {
        split: {(s.label, s.group) for s in dataset.splits[split]}
        for split in (CALIBRATION, HELD_OUT)
    }
    assert sessions[CALIBRATION]
    assert sessions[HELD_OUT]
    assert not sessions[CALIBRATION] & sessions[HELD_OUT]


def test_a_checkpoint_chosen_on_calibration_photos_is_detected(tmp_path: Path) -> None:
    dataset = assign_roles(discover(_kaggle(tmp_path / "d")))
    contents = dataset_contents(dataset)
    # The old protocol: the split that chose the checkpoint was the calibration split.
    contents[SELECTION] = contents[CALIBRATION]
    with pytest.raises(RoleViolation, match="selection and calibration"):
        check_roles(contents)
    contents = dataset_contents(dataset)
    contents[HELD_OUT] = [*contents[HELD_OUT], contents[TRAIN][0]]  # a train photo reports
    with pytest.raises(RoleViolation, match="train and held_out"):
        check_roles(contents)


def test_runs_recorded_before_the_roles_map_val_and_holdout() -> None:
    old = {"train": [1], "val": [1], "holdout": [1]}
    assert recorded_name(old, CALIBRATION) == "val"
    assert reported_split(old) == "holdout"
    assert reported_split({"train": [1], "val": [1]}) == "val"


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

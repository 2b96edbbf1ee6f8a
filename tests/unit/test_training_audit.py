"""The audit finds planted corrupt and non-image files and cross-split duplicates."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_build.audit import main
from model_build.data.audit import AUDIT_FIGURE, AUDIT_JSON, audit_dataset
from model_build.data.dataset import discover
from sample_data.photos import draw_sample_image, generate_dataset

LABELS = ("bathtub", "stroller", "walkers")


def _planted(tmp_path: Path) -> Path:
    root = generate_dataset(
        tmp_path / "data", train_per_label=4, val_per_label=2, image_size=128, labels=LABELS
    )
    # A truncated JPEG, a text file and an empty file in train.
    good = next((root / "train" / "bathtub").glob("*.jpg")).read_bytes()
    (root / "train" / "bathtub" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "train" / "stroller" / "readme.txt").write_text("not an image")
    (root / "train" / "walkers" / "empty.jpg").write_bytes(b"")
    # Exact leakage: a train file copied into val.
    source = root / "train" / "walkers" / "walkers_00001.jpg"
    shutil.copy(source, root / "val" / "walkers" / "copied.jpg")
    # Near leakage: the same picture re-encoded at another quality.
    picture = draw_sample_image("stroller", np.random.default_rng(99), 128, labels=LABELS)
    for split, quality in (("train", 95), ("val", 40)):
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=quality)
        (root / split / "stroller" / "near.jpg").write_bytes(buffer.getvalue())
    return root


def test_audit_reports_planted_problems(tmp_path: Path) -> None:
    root = _planted(tmp_path)
    out = tmp_path / "out"

    result = audit_dataset(discover(root), out, cache_dir=tmp_path / "cache", workers=1)

    report = json.loads((out / AUDIT_JSON).read_text())
    assert report == result.report
    assert (out / AUDIT_FIGURE).stat().st_size > 0
    reasons = {Path(item["path"]).name: item["reason"] for item in report["skipped"]}
    assert reasons == {
        "truncated.jpg": "corrupt",
        "readme.txt": "not_an_image",
        "empty.jpg": "empty",
    }
    assert {p.name for p in result.unusable} == set(reasons)
    exact = report["duplicates"]["exact"]
    assert [(Path(d["path"]).name, Path(d["train_path"]).name) for d in exact] == [
        ("copied.jpg", "walkers_00001.jpg")
    ]
    near = {
        (Path(d["path"]).name, Path(d["train_path"]).name) for d in report["duplicates"]["near"]
    }
    assert ("near.jpg", "near.jpg") in near
    # Usable counts leave the refused files out.
    assert report["counts"]["train"] == {"bathtub": 4, "stroller": 5, "walkers": 4}
    assert report["counts"]["val"] == {"bathtub": 2, "stroller": 3, "walkers": 3}
    assert any("exact duplicate" in w for w in report["warnings"])
    assert any("cannot be used" in w for w in report["warnings"])


def test_audit_warns_about_tiny_images_and_imbalance(tmp_path: Path) -> None:
    root = generate_dataset(
        tmp_path / "data", train_per_label=2, val_per_label=1, image_size=48, labels=LABELS
    )
    for index in range(6):
        Image.new("RGB", (48, 48), (index, 0, 0)).save(root / "train" / "bathtub" / f"x{index}.png")

    report = audit_dataset(discover(root), cache_dir=tmp_path / "cache", workers=1).report

    assert report["tiny_total"] == 15
    assert any("tiny image" in w for w in report["warnings"])
    assert any("class imbalance" in w and "bathtub has 8" in w for w in report["warnings"])


def test_cli_writes_report_to_its_out_folder_never_into_a_read_only_dataset(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _planted(tmp_path)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(0o555)  # read-only, like Kaggle's input folder
    monkeypatch.chdir(tmp_path)
    try:
        status = main([str(root), "--cache-dir", str(tmp_path / "cache"), "--workers", "1"])
    finally:
        for folder in folders:
            folder.chmod(0o755)

    assert status == 0
    assert (tmp_path / "audit" / root.name / AUDIT_JSON).is_file()
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert "skipped" in capsys.readouterr().out
    assert main([str(tmp_path / "missing")]) == 2


def test_a_training_photo_copied_into_the_held_out_split_is_found(tmp_path: Path) -> None:
    # GIVEN splits named by role, with a train photo copied into held_out and a re-encoded one
    # into selection (the old audit compared train with val and test only: both went unflagged)
    root = _planted(tmp_path)
    found = discover(root)
    dataset = dataclasses.replace(
        found, splits={"train": found.splits["train"], "held_out": found.splits["val"]}
    )
    # WHEN it is audited
    report = audit_dataset(dataset, None, cache_dir=tmp_path / "cache", workers=1).report
    # THEN both leaks are reported, naming the pair of splits
    exact = report["duplicates"]["exact"]
    assert [(d["splits"], Path(d["path"]).name) for d in exact] == [
        (["train", "held_out"], "copied.jpg")
    ]
    assert any(
        d["splits"] == ["train", "held_out"] and Path(d["path"]).name == "near.jpg"
        for d in report["duplicates"]["near"]
    )

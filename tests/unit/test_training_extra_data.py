"""More than one dataset: extra folders add to train only, never leak into val, never add a label
the main dataset lacks, and the audit says how many training images came from review."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model_build.data.audit import audit_dataset, print_report
from model_build.data.dataset import DatasetError, add_training_data, discover
from model_build.data.splits import assign_roles
from sample_data.photos import draw_sample_image, generate_dataset

LABELS = ("bathtub", "stroller", "walkers")


def jpeg(label: str, seed: int) -> bytes:
    buffer = io.BytesIO()
    labels = LABELS
    draw_sample_image(label, np.random.default_rng(seed), 96, labels=labels).save(buffer, "JPEG")
    return buffer.getvalue()


def reviewed_export(root: Path, val_copy: Path) -> Path:
    """A reviewed-dataset export: 3 stroller, 2 walkers, and one photo whose bytes are a val file
    of the main dataset."""
    labelled = root / "labelled"
    for label, seeds in (("stroller", (1, 2, 3)), ("walkers", (4, 5))):
        (labelled / label).mkdir(parents=True)
        for seed in seeds:
            (labelled / label / f"{seed}.jpg").write_bytes(jpeg(label, 100 + seed))
    shutil.copy(val_copy, labelled / "stroller" / "same-as-val.jpg")
    (root / "not_a_baby_product").mkdir()
    (root / "not_a_baby_product" / "cat.jpg").write_bytes(jpeg("bathtub", 999))
    (root / "manifest.json").write_text(json.dumps({"kind": "reviewed_dataset"}))
    return labelled


def test_extra_data_goes_to_train_only_and_never_into_val(tmp_path: Path) -> None:
    main = generate_dataset(
        tmp_path / "main", train_per_label=3, val_per_label=2, image_size=96, labels=LABELS
    )
    base = assign_roles(discover(main))
    val_file = base.splits["calibration"][0].path
    labelled = reviewed_export(tmp_path / "reviewed", val_file)
    plain = tmp_path / "plain"
    (plain / "bathtub").mkdir(parents=True)
    (plain / "bathtub" / "x.jpg").write_bytes(jpeg("bathtub", 7))

    merged = add_training_data(base, [labelled, plain])

    assert merged.labels == base.labels == ("bathtub", "stroller", "walkers")
    for split in ("selection", "calibration", "held_out"):  # exactly the main dataset's
        assert [s.path for s in merged.splits.get(split, ())] == [
            s.path for s in base.splits.get(split, ())
        ]
        assert all(s.source is None for s in merged.splits.get(split, ()))
    train = merged.splits["train"]
    assert len(train) == len(base.splits["train"]) + 5 + 1
    evaluation = {s.sha256 for split, ss in merged.splits.items() if split != "train" for s in ss}
    assert not evaluation & {s.sha256 for s in train if s.source is not None}
    # Label indices follow the new, sorted label list everywhere.
    assert all(merged.labels[s.label_index] == s.label for ss in merged.splits.values() for s in ss)
    reviewed, other = merged.extra
    assert (reviewed.reviewed, reviewed.added, reviewed.dropped) == (
        True,
        {"stroller": 3, "walkers": 2},
        1,
    )
    assert (other.reviewed, other.added, other.dropped) == (False, {"bathtub": 1}, 0)
    assert merged.summary()["extra"][0]["added_total"] == 5
    assert not any("not_a_baby_product" in str(s.path) for s in train)
    # The same call again gives the same split: content hashes, not listing order.
    assert add_training_data(base, [labelled, plain]).splits == merged.splits


def test_audit_reports_how_many_came_from_review(tmp_path: Path, capsys) -> None:
    main = generate_dataset(
        tmp_path / "main", train_per_label=2, val_per_label=1, image_size=96, labels=LABELS
    )
    base = discover(main)
    labelled = reviewed_export(tmp_path / "reviewed", base.splits["val"][0].path)
    (labelled / "walkers" / "broken.jpg").write_bytes(b"not a photo")
    merged = add_training_data(base, [labelled])
    result = audit_dataset(merged, None, cache_dir=tmp_path / "cache", workers=1)
    assert result.report["from_review"] == 5  # the broken file is not counted
    assert result.report["extra"][0]["dropped_same_bytes_as_evaluation"] == 1
    print_report(result.report)
    printed = capsys.readouterr().out
    assert (
        f"train: +6 reviewed photos from {labelled} (1 dropped: same bytes as val/test)" in printed
    )
    assert "from review: 5 usable training images" in printed


def test_a_label_the_main_dataset_lacks_is_refused(tmp_path: Path) -> None:
    """GIVEN a reviewed export with a "playpen" folder (a label outside the model's set)
    WHEN it is added to training THEN a one-line error names it: no 15th class from one photo."""
    main = generate_dataset(
        tmp_path / "main", train_per_label=2, val_per_label=1, image_size=96, labels=LABELS
    )
    extra = tmp_path / "reviewed" / "labelled"
    (extra / "playpen").mkdir(parents=True)
    (extra / "playpen" / "1.jpg").write_bytes(jpeg("stroller", 1))
    with pytest.raises(DatasetError, match=r"\['playpen'\] that the main dataset") as error:
        add_training_data(discover(main), [extra])
    assert "\n" not in str(error.value)


def test_a_label_missing_from_val_is_noted_not_refused(tmp_path: Path) -> None:
    """GIVEN a dataset whose val/ lacks a label (the Grocery Store dataset lacks 6 of 43)
    WHEN it is discovered THEN it trains, and a note names the label nothing can measure;
    only a label that an added folder alone brings is refused (the test above)."""
    main = generate_dataset(
        tmp_path / "main", train_per_label=2, val_per_label=1, image_size=96, labels=LABELS
    )
    shutil.rmtree(main / "val" / "walkers")
    dataset = discover(main)
    assert "walkers" in dataset.labels
    assert any("['walkers'] have no val photo" in note for note in dataset.notes)
    # Label folders split by content: a label with one photo gets no val photo either.
    flat = tmp_path / "flat"
    for label, count in (("bathtub", 3), ("stroller", 1)):
        (flat / label).mkdir(parents=True)
        for seed in range(count):
            (flat / label / f"{seed}.jpg").write_bytes(jpeg(label, seed))
    assert any("['stroller']" in note for note in discover(flat).notes)

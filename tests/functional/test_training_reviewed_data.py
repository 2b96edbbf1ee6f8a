"""Training on the original dataset plus a reviewed-photos export (``--data A --data B``): the
reviewed photos go to train only, the audit counts them, the report compares model and reviewer."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from model_build import train
from sample_data.photos import draw_sample_image, generate_dataset

LABELS = ("bathtub", "stroller", "walkers")


def reviewed_export(root: Path, val_file: Path) -> Path:
    """What ``review.reviewed_dataset`` writes: labelled/<label>/ and a manifest."""
    items = []
    for index, label in enumerate(("stroller", "stroller", "walkers", "bathtub")):
        buffer = io.BytesIO()
        draw_sample_image(label, np.random.default_rng(500 + index), 64, labels=LABELS).save(
            buffer, "JPEG"
        )
        folder = root / "labelled" / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index}.jpg").write_bytes(buffer.getvalue())
        model_label = "walkers" if index == 1 else label  # one correction
        outcome = "confirmed" if model_label == label else "corrected"
        items.append({"key": f"uploads/{index}.jpg", "model_label": model_label,
                      "label": label, "outcome": outcome})  # fmt: skip
    # A reviewed photo with the same bytes as a val photo of the original: must not be trained on.
    (root / "labelled" / "bathtub" / "leak.jpg").write_bytes(val_file.read_bytes())
    items.append({"key": "uploads/x.jpg", "model_label": "stroller", "label": None,
                  "outcome": "not_a_baby_product"})  # fmt: skip
    (root / "manifest.json").write_text(json.dumps({"kind": "reviewed_dataset", "items": items}))
    return root / "labelled"


def test_training_on_original_plus_reviewed_photos(tmp_path: Path, capsys) -> None:
    data = generate_dataset(
        tmp_path / "data", train_per_label=6, val_per_label=3, image_size=64, labels=LABELS
    )
    val_file = sorted((data / "val" / "bathtub").iterdir())[0]
    reviewed = reviewed_export(tmp_path / "reviewed", val_file)
    out = tmp_path / "run"
    arguments = [
        "--data", str(data), "--data", str(reviewed), "--model", "small", "--out", str(out),
        "--cache-dir", str(tmp_path / "cache"), "--batch-size", "8", "--publish", "none",
        "--workers", "1", "--epochs", "1",
    ]  # fmt: skip

    assert train.main(arguments) == 0

    printed = capsys.readouterr().out
    assert f"  + data    {reviewed} (added to train only)" in printed
    assert f"train: +4 reviewed photos from {reviewed} (1 dropped" in printed
    config = json.loads((out / "config.json").read_text())
    assert (config["data"], config["extra_data"]) == (str(data), [str(reviewed)])
    audit = json.loads((out / "audit.json").read_text())
    assert audit["from_review"] == 4
    record = json.loads((out / "data.json").read_text())
    train_paths = record["splits"]["train"]["path"]
    assert sum(str(reviewed) in path for path in train_paths) == 4
    evaluation_hashes = {
        digest
        for split, recorded in record["splits"].items()
        if split != "train"
        for digest in recorded["sha256"]
    }
    reviewed_hashes = {
        digest
        for path, digest in zip(train_paths, record["splits"]["train"]["sha256"], strict=True)
        if str(reviewed) in path
    }
    assert not evaluation_hashes & reviewed_hashes
    assert all(str(reviewed) not in path for split, r in record["splits"].items()
               if split != "train" for path in r["path"])  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    table = metrics["review_agreement"]
    assert table["decisions"] == 5
    rows = {row["category"]: row for row in table["categories"]}
    assert (rows["walkers"]["model_said"], rows["walkers"]["corrected"]) == (2, 1)
    page = (out / "report" / "index.html").read_text()
    assert "Model vs reviewer (production)" in page

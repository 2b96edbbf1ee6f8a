"""Training end to end on tiny generated data: it learns and it is reproducible.

Resuming after a SIGKILL mid-epoch is ``test_training_resume.py``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from model_build import train
from model_build.release import publish
from sample_data.photos import generate_dataset

LABELS = ("bathtub", "stroller", "walkers")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    return generate_dataset(
        root / "data", train_per_label=16, val_per_label=6, image_size=64, labels=LABELS
    )


def _arguments(data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "--data", str(data), "--model", "small", "--out", str(out), "--cache-dir", str(cache),
        "--batch-size", "16", "--publish", "none", "--workers", "1", *extra,
    ]  # fmt: skip


def _history(run_dir: Path) -> list[dict]:
    with (run_dir / "history.csv").open(newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.mark.heavy
def test_a_tiny_run_learns_and_writes_its_run_folder(
    tiny_data: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"

    status = train.main(
        _arguments(tiny_data, out, tmp_path / "cache", "--epochs", "12", "--seed", "1")
    )

    assert status == 0
    output = capsys.readouterr().out
    assert output.index("plan:") < output.index("Epoch 1/12")
    assert "small stand-in CNN" in output
    assert output.strip().splitlines()[-1].startswith("done: best selection accuracy")
    for name in ("model.keras", "labels.json", "history.csv", "config.json", "audit.json",
                 "audit_counts.png", "augmentation_preview.png", "report/training_curves.png",
                 "data.json", "model.tflite", "export.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert json.loads((out / "labels.json").read_text()) == list(LABELS)
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "small"
    images = json.loads((out / "data.json").read_text())["images"]
    # 16 per label: 2 choose the checkpoint (selection), 14 fit; val's 6 split 3 / 3.
    assert images == {"train": 42, "selection": 6, "calibration": 9, "held_out": 9}
    best = max(float(row["val_accuracy"]) for row in _history(out))
    assert best >= 0.6  # chance is 0.33

    # A finished run folder is never trained into again.
    again = train.main(_arguments(tiny_data, out, tmp_path / "cache", "--epochs", "12"))
    assert again == 2
    assert "already holds a finished run" in capsys.readouterr().err


@pytest.mark.heavy
def test_same_seed_same_history_on_cpu(tiny_data: Path, tmp_path: Path) -> None:
    histories = []
    for attempt in ("a", "b"):
        out = tmp_path / attempt
        status = train.main(
            _arguments(tiny_data, out, tmp_path / "cache", "--epochs", "2", "--seed", "3")
        )
        assert status == 0
        histories.append(_history(out))
    assert histories[0] == histories[1]


def test_train_publish_refused_by_the_gate_exits_non_zero(
    tiny_data: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a gate that refuses this model (as it refuses one worse than latest)

    def refuse(*_args, **_kwargs):
        raise publish.PublishError("quality gate: accuracy is below latest's (--force ...)")

    monkeypatch.setattr(publish, "publish_run", refuse)
    arguments = _arguments(tiny_data, tmp_path / "run", tmp_path / "cache", "--epochs", "1")
    arguments[arguments.index("--publish") + 1] = str(tmp_path / "artifacts")
    # WHEN training publishes THEN a pipeline can tell: exit 3, the reason on stderr
    assert train.main(arguments) == train.EXIT_NOT_PUBLISHED == 3
    err = capsys.readouterr().err
    assert "not published: quality gate" in err
    assert "--force" in err

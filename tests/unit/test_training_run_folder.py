"""Run folders: which run a rerun resumes, history trimming, the threshold stop."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from model_build.config import TrainConfig, UserError
from model_build.run_folder import RUN_STATE, RunFolder, resolve_run_dir
from model_build.training.fit import ThresholdStop


def _state(run_dir: Path, config: TrainConfig, status: str) -> None:
    run_dir.mkdir(parents=True)
    state = {"status": status, "identity": config.identity()}
    (run_dir / RUN_STATE).write_text(json.dumps(state))


def test_without_out_the_newest_unfinished_matching_run_is_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(data="d").resolved()
    other = TrainConfig(data="d", seed=9).resolved()
    _state(Path("runs/20260101T000000Z"), config, "running")
    _state(Path("runs/20260102T000000Z"), config, "running")
    _state(Path("runs/20260103T000000Z"), other, "running")  # other settings
    _state(Path("runs/20260104T000000Z"), config, "done")  # finished

    found, resuming = resolve_run_dir(config)
    assert (found.path, resuming) == (Path("runs/20260102T000000Z"), True)
    fresh, resuming = resolve_run_dir(TrainConfig(data="d", fresh=True).resolved())
    fresh_dir = fresh.path
    assert not resuming
    assert fresh_dir.parent == Path("runs")
    assert fresh_dir.name not in {p.name for p in Path("runs").iterdir()}


def test_explicit_out_of_a_finished_run_is_refused(tmp_path: Path) -> None:
    config = TrainConfig(data="d", out=str(tmp_path / "run")).resolved()
    _state(tmp_path / "run", config, "done")

    with pytest.raises(UserError, match="already holds a finished run"):
        resolve_run_dir(config)


def test_defaults_depend_on_whether_data_is_given() -> None:
    sample = TrainConfig().resolved()
    real = TrainConfig(data="x").resolved()
    assert (sample.model, sample.weights, sample.publish) == ("small", "none", "artifacts")
    assert (real.model, real.weights, real.publish) == ("mobilenet_v2", "imagenet", "none")


def test_history_rows_after_the_last_backup_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["epoch", "accuracy"])
        writer.writerows([[0, 0.1], [1, 0.2], [2, 0.3]])

    RunFolder(tmp_path).trim_history(completed_epochs=2)

    with path.open(newline="") as stream:
        assert [row["epoch"] for row in csv.DictReader(stream)] == ["0", "1"]


class _Model:
    stop_training = False


@pytest.mark.parametrize(
    ("train_accuracy", "val_accuracy", "stops"),
    [(0.97, 0.95, True), (0.97, 0.94, False), (0.96, 0.99, False)],
)
def test_threshold_stop(train_accuracy: float, val_accuracy: float, stops: bool) -> None:
    callback = ThresholdStop(0.96, 0.94)
    callback.set_model(_Model())
    callback.on_epoch_end(0, {"accuracy": train_accuracy, "val_accuracy": val_accuracy})
    assert callback.model.stop_training is stops

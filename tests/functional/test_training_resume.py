"""Training survives SIGKILL: the rerun resumes and ends exactly like an uninterrupted run.

Issue 6 item 3. Two runs with the same seed on tiny generated data: one uninterrupted, one
SIGKILLed after the second batch of the third epoch (mid-epoch, as a power cut would:
``tests/support/killed_training.py``) and rerun with the same command. The rerun must continue
from the last completed epoch without training an earlier one again, and its ``history.csv``
(learning rate column included), its best checkpoint and its final weights must equal the
uninterrupted run's within float tolerance.

The settings make the callbacks' state matter across the kill: the plateau callback halves the
learning rate after the second epoch and early stopping ends the run after the third, both only
if their patience counting carries over the restart (``--reduce-lr-patience 1``,
``--early-stopping-patience 2``; with seed 4 val loss rises after the first epoch). The kill
lands after the halving, so the resumed epoch must run at the restored, halved rate.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from sample_data.photos import generate_dataset

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
LABELS = ("bathtub", "stroller", "walkers")
TOLERANCE = {"rtol": 1e-5, "atol": 1e-7}
KILLED_IN_EPOCH = 2  # the third epoch, counted from 0

# Runs training with the resume backups kept (they hold the final weights and optimizer state).
DRIVER = (
    "import sys\n"
    "from model_build.run_folder import RunFolder\n"
    "RunFolder.remove_backups = lambda self: None\n"
    "from model_build import train\n"
    "sys.exit(train.main(sys.argv[1:]))\n"
)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny_resume")
    return generate_dataset(
        root / "data", train_per_label=16, val_per_label=6, image_size=64, labels=LABELS
    )


def _arguments(data: Path, out: Path, cache: Path) -> list[str]:
    return [
        "--data", str(data), "--model", "small", "--out", str(out), "--cache-dir", str(cache),
        "--batch-size", "16", "--publish", "none", "--workers", "1", "--epochs", "4",
        "--seed", "4", "--stop-train-accuracy", "1.1", "--reduce-lr-patience", "1",
        "--early-stopping-patience", "2",
        # All of val drives early stopping here, as the scenario above was measured with.
        "--holdout-fraction", "0",
    ]  # fmt: skip


def _command(data: Path, out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-c", DRIVER, *_arguments(data, out, cache)]


def _killed_command(data: Path, out: Path, cache: Path) -> list[str]:
    """The same training, SIGKILLed after batch 1 of epoch KILLED_IN_EPOCH (both from 0)."""
    spec = f"{KILLED_IN_EPOCH}:1"
    return [
        sys.executable, "-m", "tests.support.killed_training", spec,
        *_arguments(data, out, cache),
    ]  # fmt: skip


def _environment() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=REPOSITORY_ROOT, env=_environment(), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def _history(run_dir: Path) -> list[dict]:
    with (run_dir / "history.csv").open(newline="") as stream:
        return list(csv.DictReader(stream))


def _h5_arrays(source) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    with h5py.File(source, "r") as handle:
        handle.visititems(
            lambda name, item: (
                arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
            )
        )
    return arrays


def _checkpoint_arrays(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as stream:
        return _h5_arrays(stream)


def _assert_same_arrays(left: dict, right: dict, what: str) -> None:
    assert left.keys() == right.keys(), what
    assert left, what
    for name, value in left.items():
        np.testing.assert_allclose(value, right[name], **TOLERANCE, err_msg=f"{what}: {name}")


@pytest.mark.heavy
def test_a_run_killed_mid_epoch_resumes_and_matches_an_uninterrupted_one(
    tiny_data: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    reference_dir, resumed_dir = tmp_path / "uninterrupted", tmp_path / "resumed"
    # The uninterrupted run and the run to be killed, side by side.
    reference_log = (tmp_path / "uninterrupted.log").open("w")
    reference = subprocess.Popen(
        _command(tiny_data, reference_dir, tmp_path / "cache_reference"),
        cwd=REPOSITORY_ROOT,
        env=_environment(),
        stdout=reference_log,
        stderr=subprocess.STDOUT,
    )
    try:
        killed = _run(_killed_command(tiny_data, resumed_dir, cache))
    finally:
        reference.wait(timeout=300)
        reference_log.close()
    assert reference.returncode == 0, (tmp_path / "uninterrupted.log").read_text()[-3000:]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    expected = _history(reference_dir)
    # Killed in the third epoch: two epochs completed, fewer than the uninterrupted run's.
    completed = KILLED_IN_EPOCH
    assert [row["epoch"] for row in _history(resumed_dir)] == ["0", "1"]
    assert completed < len(expected), "the kill must land before training ended"
    assert json.loads((resumed_dir / "run_state.json").read_text())["status"] == "running"

    resumed = _run(_command(tiny_data, resumed_dir, cache))
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # It continued from the last completed epoch, and no earlier epoch was trained again.
    assert "resuming an unfinished run" in resumed.stdout
    assert f"Epoch {completed + 1}/4" in resumed.stdout
    for epoch in range(1, completed + 1):
        assert f"Epoch {epoch}/4" not in resumed.stdout
    assert json.loads((resumed_dir / "run_state.json").read_text())["status"] == "done"

    # Same history, epoch by epoch and column by column (learning rate included).
    actual = _history(resumed_dir)
    assert [row["epoch"] for row in actual] == [row["epoch"] for row in expected]
    assert list(actual[0]) == list(expected[0])
    assert "learning_rate" in expected[0]
    learning_rates = {float(row["learning_rate"]) for row in expected}
    assert len(learning_rates) > 1, "the plateau callback must change the learning rate"
    for got, want in zip(actual, expected, strict=True):
        for column in want:
            np.testing.assert_allclose(
                float(got[column]), float(want[column]), **TOLERANCE, err_msg=column
            )
    # Early stopping ended both runs at the same epoch, before --epochs.
    assert len(expected) < 4

    # Same best checkpoint and same final weights and optimizer state.
    _assert_same_arrays(
        _checkpoint_arrays(resumed_dir / "model.keras"),
        _checkpoint_arrays(reference_dir / "model.keras"),
        "best checkpoint",
    )
    _assert_same_arrays(
        _h5_arrays(resumed_dir / "backup" / "latest.weights.h5"),
        _h5_arrays(reference_dir / "backup" / "latest.weights.h5"),
        "final weights",
    )


def test_each_epoch_order_and_views_depend_on_seed_and_epoch_only() -> None:
    """The pipeline alone: epoch 2 is the same whether epochs 0 and 1 ran in this process."""
    from model_build.data.pipeline import EpochRandomness, train_dataset  # noqa: PLC0415 — model_build.data.pipeline loads TensorFlow; this module stays light without it

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(20, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(20) % 3

    def epoch_batches(randomness: EpochRandomness, epoch: int, dataset) -> list:
        randomness.set_epoch(epoch)
        return [(np.asarray(x), np.asarray(y)) for x, y in dataset]

    first = EpochRandomness(7)
    data = train_dataset(pixels, labels, batch_size=8, seed=7, randomness=first)
    ran = [epoch_batches(first, epoch, data) for epoch in range(3)]
    fresh = EpochRandomness(7)
    again = train_dataset(pixels, labels, batch_size=8, seed=7, randomness=fresh)
    resumed = epoch_batches(fresh, 2, again)

    assert len(resumed) == 3
    for (x, y), (x_ran, y_ran) in zip(resumed, ran[2], strict=True):
        np.testing.assert_array_equal(y, y_ran)
        np.testing.assert_allclose(x, x_ran, **TOLERANCE)
    assert not np.allclose(ran[1][0][0], ran[2][0][0])  # epochs do differ


def test_cached_feature_batches_of_an_epoch_do_not_depend_on_the_start_epoch() -> None:
    """--feature-cache-views: one iterator spans all epochs; a resume starts it at its epoch."""
    from model_build.training.feature_cache import head_train_dataset  # noqa: PLC0415 — model_build.training.feature_cache loads TensorFlow; this module stays light without it

    views, count, batch_size = 3, 10, 4
    features = np.arange(views * count * 2, dtype=np.float16).reshape(views * count, 1, 1, 2)
    labels = np.arange(count) % 3

    def targets(first_epoch: int, epochs: int) -> list[np.ndarray]:
        dataset, steps = head_train_dataset(
            features, labels, views=views, batch_size=batch_size, seed=5, first_epoch=first_epoch
        )
        assert steps == 3
        batches = [np.asarray(x)[:, 0, 0, 0] for x, _ in dataset.take(steps * epochs)]
        return [np.concatenate(batches[e * steps : (e + 1) * steps]) for e in range(epochs)]

    from_start = targets(0, 5)
    for first_epoch in (1, 3, 4):
        np.testing.assert_array_equal(targets(first_epoch, 1)[0], from_start[first_epoch])
    # The first 7 batches (28 of the 30 rows) come from one permutation: no row twice.
    seen = np.concatenate(from_start[:3])[:28]
    assert len(set(seen.tolist())) == 28

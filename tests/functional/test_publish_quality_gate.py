"""Publishing refuses a model near chance or worse than latest re-run on the candidate's held-out
photos (one line, exit 2, --force overrides and is recorded); a stale int8 calibration is refused;
the worker runs int8 with int8's own calibration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.artifact import load_artifact
from handler.cold_start import load_model
from handler.settings import WorkerSettings
from model_build import publish as publish_command
from model_build.data.dataset import discover
from model_build.data.splits import assign_roles
from model_build.release import publish
from model_build.run_folder import RunFolder
from sample_data.photos import generate_dataset
from tests.support.tiny_artifact import LABELS, write_tiny_run

pytestmark = pytest.mark.functional


def _run(tmp_path: Path, name: str, accuracy: float, data_sha256: str = "a" * 64) -> Path:
    return _set_accuracy(write_tiny_run(tmp_path / name), accuracy, data_sha256)


def _set_accuracy(run_dir: Path, accuracy: float, data_sha256: str) -> Path:
    per_label = {label: {"support": 10, "f1-score": accuracy} for label in LABELS}
    per_label[LABELS[0]]["support"] = 30  # majority share 30 / (30 + 10 × (n − 1))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.update(
        accuracy=accuracy,
        images=sum(v["support"] for v in per_label.values()),
        per_label=per_label,
        labels=list(LABELS),
        evaluation={"split": "held_out", "data_sha256": data_sha256},
    )
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def _publish(run_dir: Path, dest: Path, *extra: str) -> int:
    # The tiny runs share their files (same content hash): give each publish its own version.
    published = len(list(dest.glob("2026*"))) if dest.is_dir() else 0
    version = f"20260101T00000{published}Z-{run_dir.name.encode().hex()[:8]:0<8}"
    return publish_command.main([str(run_dir), "--to", str(dest), "--version", version, *extra])


def test_a_model_near_chance_is_refused_in_one_line_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    dest = tmp_path / "artifacts"
    majority = 30 / (30 + 10 * (len(LABELS) - 1))
    chance = _run(tmp_path, "chance", accuracy=majority)  # what predicting one label scores
    assert _publish(chance, dest) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "near chance" in err
    assert "--force" in err
    assert not (dest / "latest.json").exists()

    assert _publish(chance, dest, "--force") == 0
    assert (dest / "latest.json").exists()


def _with_held_out_photos(run_dir: Path, data: Path, cache: Path) -> Path:
    """Record ``data``'s roles in the run folder, as training does (data.json)."""
    RunFolder(run_dir).write_data(assign_roles(discover(data)))
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "cache_dir": str(cache)}))
    return run_dir


def test_another_seed_no_longer_skips_the_comparison_with_latest(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # GIVEN a latest model that auto-catalogues everything, and a candidate that records other
    # evaluation hashes (the old gate compared only equal hashes: another --seed skipped it) and
    # auto-catalogues nothing — same photos, same file, only its threshold differs
    data = generate_dataset(
        tmp_path / "data", train_per_label=4, val_per_label=8, image_size=64, labels=LABELS
    )
    dest = tmp_path / "artifacts"
    good = _with_held_out_photos(
        write_tiny_run(tmp_path / "good", review_threshold=0.0, target_precision=0.0),
        data,
        tmp_path / "cache",
    )
    _set_accuracy(good, 0.85, "a" * 64)
    assert _publish(good, dest) == 0
    latest = json.loads((dest / "latest.json").read_text())["version"]
    capsys.readouterr()
    worse = _with_held_out_photos(
        write_tiny_run(tmp_path / "worse", review_threshold=1.0, target_precision=0.0),
        data,
        tmp_path / "cache",
    )
    _set_accuracy(worse, 0.85, "b" * 64)
    # WHEN it is published to the same destination
    status = _publish(worse, dest)
    # THEN the latest model is re-run on the candidate's held-out photos and the paired
    # comparison refuses it (coverage), in one line, and latest stays
    err = capsys.readouterr().err
    assert status == 2
    assert "coverage" in err
    assert "paired 95 % interval" in err
    assert json.loads((dest / "latest.json").read_text())["version"] == latest
    # --force publishes it anyway and the manifest records that it was forced, and why.
    assert _publish(worse, dest, "--force") == 0
    gate = load_artifact(dest).manifest.publish_gate
    assert gate["forced"] is True
    assert gate["versus_latest"]["latest"] == latest
    assert gate["versus_latest"]["coverage"]["difference"] == pytest.approx(-1.0)


def test_worker_applies_the_calibration_of_the_variant_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = write_tiny_run(tmp_path / "run", temperature=1.5, review_threshold=0.4)
    export = json.loads((run_dir / "export.json").read_text())
    export["int8_calibration"] = {
        "temperature": 2.5,
        "review_threshold": 0.7,
        "target_precision": 0.98,
        "coverage": 0.3,
    }
    (run_dir / "export.json").write_text(json.dumps(export))
    dest = tmp_path / "artifacts"
    publish.publish_run(run_dir, str(dest), log=lambda _: None)

    common = {"catalogue_table": "table", "model_uri": str(dest)}
    float_classifier, artifact = load_model(WorkerSettings(**common, model_variant="float32"))
    int8_classifier, _ = load_model(WorkerSettings(**common, model_variant="int8"))
    assert float_classifier.temperature == 1.5
    assert int8_classifier.temperature == 2.5
    assert artifact.calibration_for("int8").review_threshold == 0.7
    assert artifact.calibration_for("float32").review_threshold == 0.4


def test_a_stale_int8_calibration_is_refused_with_the_command_to_run(tmp_path: Path) -> None:
    # GIVEN a run re-evaluated with a new target after its export (int8's calibration keeps the
    # old one: a manifest once carried 0.90 / 90 % for float32 and 0.98 / 95 % for int8)
    run_dir = write_tiny_run(tmp_path / "run", target_precision=0.9)
    export = json.loads((run_dir / "export.json").read_text())
    export["int8_calibration"] = {
        "temperature": 1.0,
        "review_threshold": 0.7,
        "target_precision": 0.98,
        "coverage": 0.3,
    }
    (run_dir / "export.json").write_text(json.dumps(export))
    # WHEN it is published THEN it is refused, naming the export command
    with pytest.raises(publish.PublishError, match=r"stale.*model_build\.export"):
        publish.publish_run(run_dir, str(tmp_path / "artifacts"), log=lambda _: None)

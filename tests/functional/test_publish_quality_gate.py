"""Publishing refuses a model near chance or worse than latest on the same evaluation data (one
line, exit 2, --force overrides); the worker runs int8 with int8's own calibration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.artifact import load_artifact
from handler.cold_start import load_model
from handler.settings import WorkerSettings
from model_build import publish as publish_command
from model_build.release import publish
from tests.support.tiny_artifact import LABELS, write_tiny_run

pytestmark = pytest.mark.functional


def _run(tmp_path: Path, name: str, accuracy: float, data_sha256: str = "a" * 64) -> Path:
    run_dir = write_tiny_run(tmp_path / name)
    per_label = {label: {"support": 10, "f1-score": accuracy} for label in LABELS}
    per_label[LABELS[0]]["support"] = 30  # majority share 30 / (30 + 10 × (n − 1))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.update(
        accuracy=accuracy,
        images=sum(v["support"] for v in per_label.values()),
        per_label=per_label,
        evaluation={"split": "holdout", "data_sha256": data_sha256},
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


def test_a_worse_model_does_not_replace_latest_on_the_same_data(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    dest = tmp_path / "artifacts"
    assert _publish(_run(tmp_path, "good", accuracy=0.85), dest) == 0
    good = json.loads((dest / "latest.json").read_text())["version"]
    assert load_artifact(dest).manifest.evaluation["data_sha256"] == "a" * 64
    capsys.readouterr()

    assert _publish(_run(tmp_path, "worse", accuracy=0.80), dest) == 2
    err = capsys.readouterr().err
    assert "below latest" in err
    assert json.loads((dest / "latest.json").read_text())["version"] == good

    # Other evaluation data: not comparable, so allowed (and said).
    assert _publish(_run(tmp_path, "other", accuracy=0.80, data_sha256="b" * 64), dest) == 0
    assert "evaluated on other data" in capsys.readouterr().out


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

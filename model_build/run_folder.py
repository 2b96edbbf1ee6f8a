"""The run folder: the one place that names every file of a training run and reads it back.

::

    <run>/config.json            the settings (model_build.config.TrainConfig)
    <run>/data.json              the dataset used: folder, layout, labels, counts and, per split,
                                 every file's content hash and label — what standalone evaluation
                                 and export rebuild *the same* split from
    <run>/labels.json            label names, index = model output
    <run>/run_state.json         running | trained | done, and the settings' identity (resume)
    <run>/audit.json, audit_counts.png, augmentation_preview.png
    <run>/history.csv            one row per epoch (Keras CSVLogger), with learning_rate
    <run>/backup/, backup_fine_tune/   Keras BackupAndRestore of phase 1 and of fine-tuning
    <run>/phase1_epochs.txt      marker: phase 1 complete after this many epochs
    <run>/model.keras            best checkpoint (val accuracy)
    <run>/metrics.json, report/  evaluation (report/training_curves.png is the curves figure)
    <run>/unfamiliarity.npz       the unfamiliarity score fitted at evaluation (backbone models)
    <run>/model.tflite, model_int8.tflite (or model_int8.rejected.tflite), export.json

Nothing else in ``model_build`` spells these names; everything goes through :class:`RunFolder`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from contracts.artifact import (
    KERAS_MODEL_FILE,
    LABELS_FILE,
    MODEL_FILE,
    MODEL_INT8_FILE,
    REPORT_DIR,
    UNFAMILIARITY_FILE,
)
from model_build.config import TrainConfig, UserError
from model_build.data.splits import ROLES

DEFAULT_RUNS_DIR: Final[Path] = Path("runs")
CONFIG_FILE: Final[str] = "config.json"
DATA_FILE: Final[str] = "data.json"
RUN_STATE: Final[str] = "run_state.json"
AUDIT_FILE: Final[str] = "audit.json"
AUDIT_FIGURE: Final[str] = "audit_counts.png"
PREVIEW_FIGURE: Final[str] = "augmentation_preview.png"
HISTORY_FILE: Final[str] = "history.csv"
TRAINING_CURVES: Final[str] = "training_curves.png"  # inside report/
METRICS_FILE: Final[str] = "metrics.json"
EXPORT_REPORT_FILE: Final[str] = "export.json"
MODEL_INT8_REJECTED_FILE: Final[str] = "model_int8.rejected.tflite"
PHASE1_MARKER: Final[str] = "phase1_epochs.txt"
BACKUP_DIRS: Final[dict[str, str]] = {"phase1": "backup", "fine_tune": "backup_fine_tune"}
# "running": killed while training; "trained": killed during evaluation, export or publishing.
UNFINISHED: Final[tuple[str, ...]] = ("running", "trained")

__all__ = [
    "KERAS_MODEL_FILE",
    "LABELS_FILE",
    "MODEL_FILE",
    "MODEL_INT8_FILE",
    "REPORT_DIR",
    "DataRecord",
    "RecordedSplit",
    "RunFolder",
    "resolve_run_dir",
]


@dataclass(frozen=True)
class RecordedSplit:
    """One split as recorded in ``data.json``: content hash, label index and path per file."""

    sha256: tuple[str, ...]
    label_indices: tuple[int, ...]
    paths: tuple[str, ...]  # relative to the data folder where possible

    def __len__(self) -> int:
        return len(self.sha256)

    @property
    def content_hash(self) -> str:
        """A hash of the split's contents and labels in order (keys caches of the split)."""
        return split_content_hash(self.sha256, self.label_indices)


def split_content_hash(digests, label_indices) -> str:
    digest = hashlib.sha256()
    for sha, label in zip(digests, label_indices, strict=True):
        digest.update(f"{sha}:{int(label)}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class DataRecord:
    """``data.json``: the dataset a run trained on."""

    data_dir: Path
    layout: str
    labels: tuple[str, ...]
    summary: dict[str, Any]
    splits: dict[str, RecordedSplit]

    def images(self, split: str) -> int:
        return len(self.splits[split]) if split in self.splits else 0


class RunFolder:
    """A training run's folder: the path of each of its files and typed readers and writers."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # --- the files ---------------------------------------------------------------------------

    config_file = property(lambda self: self.path / CONFIG_FILE)
    data_file = property(lambda self: self.path / DATA_FILE)
    labels_file = property(lambda self: self.path / LABELS_FILE)
    state_file = property(lambda self: self.path / RUN_STATE)
    audit_file = property(lambda self: self.path / AUDIT_FILE)
    audit_figure = property(lambda self: self.path / AUDIT_FIGURE)
    preview_figure = property(lambda self: self.path / PREVIEW_FIGURE)
    history_file = property(lambda self: self.path / HISTORY_FILE)
    phase1_marker = property(lambda self: self.path / PHASE1_MARKER)
    model_file = property(lambda self: self.path / KERAS_MODEL_FILE)
    metrics_file = property(lambda self: self.path / METRICS_FILE)
    report_dir = property(lambda self: self.path / REPORT_DIR)
    training_curves = property(lambda self: self.path / REPORT_DIR / TRAINING_CURVES)
    tflite_file = property(lambda self: self.path / MODEL_FILE)
    int8_file = property(lambda self: self.path / MODEL_INT8_FILE)
    int8_rejected_file = property(lambda self: self.path / MODEL_INT8_REJECTED_FILE)
    export_report_file = property(lambda self: self.path / EXPORT_REPORT_FILE)
    unfamiliarity_file = property(lambda self: self.path / UNFAMILIARITY_FILE)

    def backup_dir(self, phase: str) -> Path:
        return self.path / BACKUP_DIRS[phase]

    # --- settings, labels, data --------------------------------------------------------------

    def write_config(self, config: TrainConfig) -> None:
        _write_json(self.config_file, asdict(config))

    def read_config(self) -> TrainConfig:
        values = _read_json(self.config_file)
        if not isinstance(values, dict):
            raise ValueError(f"{self.path} has no {CONFIG_FILE}: is it a training run folder?")
        return TrainConfig.from_dict(values)

    def config_dict(self) -> dict[str, Any]:
        """config.json as written (for the manifest); {} when absent."""
        values = _read_json(self.config_file)
        return values if isinstance(values, dict) else {}

    def write_labels(self, labels) -> None:
        _write_json(self.labels_file, list(labels))

    def read_labels(self) -> list[str]:
        labels = _read_json(self.labels_file)
        if not labels:
            raise ValueError(f"{self.path} has no {LABELS_FILE}: is it a training run folder?")
        return [str(label) for label in labels]

    def write_data(self, dataset, splits: dict[str, Any] | None = None) -> DataRecord:
        """Record the dataset used and, per split, each file's content hash and label.

        ``dataset`` is a :class:`model_build.data.dataset.Dataset`; ``splits`` optionally maps a
        split
        name to what was actually kept of it (a sequence of samples); default: all its samples.
        """
        recorded = {}
        for name, samples in (splits or dataset.splits).items():
            recorded[name] = RecordedSplit(
                sha256=tuple(s.sha256 for s in samples),
                label_indices=tuple(int(s.label_index) for s in samples),
                paths=tuple(_relative(s.path, dataset.root) for s in samples),
            )
        record = DataRecord(
            data_dir=Path(dataset.root),
            layout=dataset.layout,
            labels=tuple(dataset.labels),
            summary=dataset.summary(),
            splits=recorded,
        )
        _write_json(
            self.data_file,
            {
                "data_dir": str(Path(dataset.root).resolve()),
                "layout": record.layout,
                "labels": list(record.labels),
                "summary": record.summary,
                "images": {name: len(split) for name, split in recorded.items()},
                # What each split was used for (model_build.data.splits): one role per split.
                "roles": {name: ROLES[name] for name in recorded if name in ROLES},
                "splits": {
                    name: {
                        "content_hash": split.content_hash,
                        "sha256": list(split.sha256),
                        "label_index": list(split.label_indices),
                        "path": list(split.paths),
                    }
                    for name, split in recorded.items()
                },
            },
        )
        return record

    def read_data(self) -> DataRecord:
        values = _read_json(self.data_file)
        if not isinstance(values, dict):
            raise ValueError(
                f"{self.path} has no {DATA_FILE} (the dataset it trained on); "
                "it was written by an older version or is not a run folder"
            )
        splits = {
            name: RecordedSplit(
                sha256=tuple(entry["sha256"]),
                label_indices=tuple(int(i) for i in entry["label_index"]),
                paths=tuple(entry["path"]),
            )
            for name, entry in values["splits"].items()
        }
        return DataRecord(
            data_dir=Path(values["data_dir"]),
            layout=values["layout"],
            labels=tuple(values["labels"]),
            summary=values.get("summary") or {},
            splits=splits,
        )

    def data_summary(self) -> dict[str, Any]:
        """The data folder and image counts, for the manifest ({} when not recorded)."""
        values = _read_json(self.data_file)
        if not isinstance(values, dict):
            return {}
        images = values.get("images") or {}
        return {
            "data_dir": values.get("data_dir"),
            **{f"{split}_images": count for split, count in images.items()},
        }

    # --- state (resume) -----------------------------------------------------------------------

    def read_state(self) -> dict[str, Any]:
        state = _read_json(self.state_file)
        return state if isinstance(state, dict) else {}

    def write_state(self, config: TrainConfig, status: str, **extra: Any) -> None:
        _write_json(self.state_file, {"status": status, "identity": config.identity(), **extra})

    # --- history, phases, backups ---------------------------------------------------------------

    def history_rows(self) -> list[dict[str, str]]:
        """``history.csv`` rows as written (strings); [] when absent."""
        if not self.history_file.is_file():
            return []
        with self.history_file.open(newline="") as stream:
            return list(csv.DictReader(stream))

    def history_columns(self) -> dict[str, list[float]]:
        """``history.csv`` as numeric columns; {} when absent."""
        return read_history(self.history_file)

    def best_val_accuracy(self) -> float | None:
        values = [float(row["val_accuracy"]) for row in self.history_rows()]
        return max(values) if values else None

    def trim_history(self, completed_epochs: int) -> None:
        """Drop rows of epochs after the last backed-up one (written before a crash)."""
        rows = self.history_rows()
        keep = [row for row in rows if int(row["epoch"]) < completed_epochs]
        if len(keep) == len(rows):
            return
        with self.history_file.open("w", newline="") as stream:
            if keep:
                writer = csv.DictWriter(stream, fieldnames=list(keep[0]))
                writer.writeheader()
                writer.writerows(keep)

    def backed_up_epochs(self, phase: str) -> int:
        """The completed epochs (counted from the run's start) a phase's backup holds."""
        metadata = _read_json(self.backup_dir(phase) / "training_metadata.json") or {}
        return int(metadata.get("epoch", 0))

    def phase1_epochs(self) -> int | None:
        """Epochs of phase 1 once it is complete, else None."""
        marker = self.phase1_marker
        return int(marker.read_text()) if marker.is_file() else None

    def finish_phase1(self) -> int:
        epochs = len(self.history_rows())
        self.phase1_marker.write_text(f"{epochs}\n")
        return epochs

    def remove_backups(self) -> None:
        """Delete the resume backups once training has finished."""
        for name in BACKUP_DIRS.values():
            shutil.rmtree(self.path / name, ignore_errors=True)

    # --- evaluation and export ------------------------------------------------------------------

    def read_metrics(self) -> dict[str, Any] | None:
        metrics = _read_json(self.metrics_file)
        return metrics if isinstance(metrics, dict) else None

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        _write_json(self.metrics_file, metrics)

    def read_export(self) -> dict[str, Any] | None:
        report = _read_json(self.export_report_file)
        return report if isinstance(report, dict) else None

    def write_export(self, report: dict[str, Any]) -> None:
        _write_json(self.export_report_file, report)

    def remove_export(self) -> None:
        """Forget an export: its int8 calibration belongs to the evaluation it was made with."""
        for path in (
            self.tflite_file,
            self.int8_file,
            self.int8_rejected_file,
            self.path / EXPORT_REPORT_FILE,
        ):
            path.unlink(missing_ok=True)

    def read_audit(self) -> dict[str, Any] | None:
        audit = _read_json(self.audit_file)
        return audit if isinstance(audit, dict) else None

    # --- checks ---------------------------------------------------------------------------------

    def ensure_writable(self) -> None:
        """Create the folder and prove a file can be written there (fail fast, before the data)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle, probe = tempfile.mkstemp(dir=self.path, prefix=".write-check-")
            os.close(handle)
            os.unlink(probe)
        except OSError as error:
            raise UserError(f"cannot write the run folder {self.path}: {error}") from error


def read_history(path: Path) -> dict[str, list[float]]:
    """A ``history.csv`` (Keras CSVLogger) as numeric columns; {} when the file is absent."""
    if not Path(path).is_file():
        return {}
    with Path(path).open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                continue
    return columns


def _utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def resolve_run_dir(config: TrainConfig) -> tuple[RunFolder, bool]:
    """The run folder, and whether it is an unfinished run being resumed."""
    if config.out:
        run = RunFolder(config.out)
        status = run.read_state().get("status")
        if status == "done":
            raise UserError(
                f"{run.path} already holds a finished run; choose another --out (or delete it)"
            )
        return run, status in UNFINISHED
    if not config.fresh and DEFAULT_RUNS_DIR.is_dir():
        for candidate in sorted(DEFAULT_RUNS_DIR.iterdir(), reverse=True):
            state = RunFolder(candidate).read_state()
            if state.get("status") in UNFINISHED and state.get("identity") == config.identity():
                return RunFolder(candidate), True
    return RunFolder(DEFAULT_RUNS_DIR / _utc_stamp()), False


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, default=str) + "\n")

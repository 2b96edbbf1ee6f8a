"""Publish a run folder as a versioned model artifact (contract 4) to a folder or ``s3://``.

``python -m model_build.publish RUN_DIR --to DEST`` (or :func:`publish_run`) writes::

    DEST/<version>/model.tflite, model_int8.tflite (when it passed its gate), model.keras,
                   labels.json, report/..., manifest.json
    DEST/latest.json   {"version": "<version>"}   written last

``<version>`` is the UTC time and a short hash of the files' contents
(``20261124T014800Z-3fa9c1d2``).

Safety:

* **Never overwritten.** A version that already exists (even partially, from an interrupted
  upload) is refused with :class:`PublishError`; the command exits with status 2 and one line.
* **Atomic for readers.** A folder version is staged in ``DEST/.staging-*`` and renamed into place
  in one ``rename``; ``latest.json`` is replaced with ``os.replace``. On S3 every file of the
  version is uploaded (``manifest.json`` last) before ``latest.json`` is written. A publish that
  dies half-way therefore leaves ``latest.json`` pointing at the previous, complete version.

Publishing publishes, nothing else: a run folder without ``metrics.json`` or ``model.tflite``
(an interrupted run, or one re-evaluated since its export) is refused with the command to run
(``python -m model_build.evaluate RUN`` / ``python -m model_build.export RUN``). TensorFlow is
never imported. The quality gate (:mod:`model_build.release.quality_gate`) runs the candidate
and the latest published model with LiteRT on the candidate's held-out photos; its decision,
and whether ``--force`` overrode it, is recorded in the manifest (``publish_gate``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import boto3
import numpy as np

from contracts.artifact import (
    KERAS_MODEL_FILE,
    LABELS_FILE,
    LATEST_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    MODEL_INT8_FILE,
    REPORT_DIR,
    UNFAMILIARITY_FILE,
    ArtifactError,
    Calibration,
    FileEntry,
    InputContract,
    Manifest,
    check_version,
    load_artifact,
    s3_key,
    sha256_file,
    split_s3_uri,
)
from contracts.image import IMAGE_FUNCTION_VERSION, IMAGE_SIZE
from model_build.data.prepare import run_split
from model_build.data.splits import reported_split
from model_build.release import quality_gate
from model_build.run_folder import (
    AUDIT_FILE,
    CONFIG_FILE,
    EXPORT_REPORT_FILE,
    METRICS_FILE,
    RunFolder,
)
from model_build.training.backbones import scaling_of

LIBRARIES: Final[tuple[str, ...]] = (
    "tensorflow",
    "keras",
    "ai-edge-litert",
    "numpy",
    "pillow",
    "scikit-learn",
    "pydantic",
)
_STAGING_PREFIX: Final[str] = ".staging-"


class PublishError(Exception):
    """The run cannot be published as asked; the message says why."""


def make_version(files: dict[str, Path], now: datetime | None = None) -> str:
    """``<UTC %Y%m%dT%H%M%SZ>-<first 8 hex of the hash of every file's name and sha256>``."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{sha256_file(files[name])}\n".encode())
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{digest.hexdigest()[:8]}"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _read_json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise PublishError(f"{path} is not valid JSON: {error}") from error


def _dataset_summary(run_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Dataset counts and the audit's findings, kept small enough for a manifest."""
    summary: dict[str, Any] = RunFolder(run_dir).data_summary()
    audit = _read_json(run_dir / AUDIT_FILE, {})
    if isinstance(audit, dict) and audit:
        compact = {}
        for key, value in audit.items():
            text = json.dumps(value, default=str)
            # Lists of every duplicate or corrupt file can be long: keep their count only.
            if isinstance(value, list) and len(text) > 2000:
                compact[f"{key}_count"] = len(value)
            elif len(text) <= 20000:
                compact[key] = value
        summary["audit"] = compact
    return summary


def collect_files(run_dir: Path) -> dict[str, Path]:
    """The run folder's files that go into a version, by their name in the artifact."""
    files: dict[str, Path] = {}
    for name in (MODEL_FILE, LABELS_FILE, KERAS_MODEL_FILE, UNFAMILIARITY_FILE):
        if (run_dir / name).is_file():
            files[name] = run_dir / name
    export_report = _read_json(run_dir / EXPORT_REPORT_FILE, {})
    int8_ok = export_report.get("int8_published", True) if isinstance(export_report, dict) else True
    if int8_ok and (run_dir / MODEL_INT8_FILE).is_file():
        files[MODEL_INT8_FILE] = run_dir / MODEL_INT8_FILE
    report = run_dir / REPORT_DIR
    if report.is_dir():
        for path in sorted(report.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                files[path.relative_to(run_dir).as_posix()] = path
    return files


def build_manifest(
    run_dir: Path,
    files: dict[str, Path],
    version: str,
    now: datetime | None = None,
    gate: dict[str, Any] | None = None,
) -> Manifest:
    labels = _read_json(run_dir / LABELS_FILE)
    metrics = _read_json(run_dir / METRICS_FILE)
    if not isinstance(metrics, dict) or not isinstance(metrics.get("calibration"), dict):
        raise PublishError(
            f"{run_dir / METRICS_FILE} has no calibration: run python -m model_build.evaluate "
            f"{run_dir} first"
        )
    config = _read_json(run_dir / CONFIG_FILE, {}) or {}
    export_report = _read_json(run_dir / EXPORT_REPORT_FILE, {}) or {}
    image_size = int(config.get("image_size") or IMAGE_SIZE)
    summary_metrics = {key: value for key, value in metrics.items() if key != "calibration"}
    try:
        calibration = Calibration.model_validate(metrics["calibration"])
        int8_calibration = None
        if MODEL_INT8_FILE in files and isinstance(export_report.get("int8_calibration"), dict):
            int8_calibration = Calibration.model_validate(export_report["int8_calibration"])
    except (ValueError, TypeError) as error:
        raise PublishError(f"cannot read the calibration of {run_dir}: {error}") from error
    _check_not_stale(run_dir, calibration, int8_calibration)
    try:
        return Manifest(
            version=version,
            created_at=(now or datetime.now(UTC)).astimezone(UTC),
            image_size=image_size,
            input=InputContract(
                shape=[None, image_size, image_size, 3],
                image_function_version=IMAGE_FUNCTION_VERSION,
                scaling=scaling_of(config.get("model")),
            ),
            labels=labels,
            files={
                name: FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)
                for name, path in sorted(files.items())
            },
            metrics=summary_metrics,
            calibration=calibration,
            int8_calibration=int8_calibration,
            publish_gate=gate,
            int8={k: v for k, v in export_report.items() if k != "int8_calibration"},
            evaluation=metrics.get("evaluation") or {},
            unfamiliarity=(
                metrics.get("unfamiliarity") or {} if UNFAMILIARITY_FILE in files else {}
            ),
            training_config=config,
            dataset=_dataset_summary(run_dir, config),
            library_versions=library_versions(),
        )
    except (ValueError, TypeError) as error:
        raise PublishError(f"cannot build the manifest of {run_dir}: {error}") from error


def _check_not_stale(
    run_dir: Path, calibration: Calibration, int8_calibration: Calibration | None
) -> None:
    """int8's calibration must come from the same rule, target and confidence as float32's."""
    if int8_calibration is None:
        return
    if (int8_calibration.target_precision, int8_calibration.confidence) != (
        calibration.target_precision,
        calibration.confidence,
    ):
        raise PublishError(
            f"{run_dir}: int8's calibration (target {int8_calibration.target_precision}, "
            f"confidence {int8_calibration.confidence}) is stale next to float32's (target "
            f"{calibration.target_precision}, confidence {calibration.confidence}): run "
            f"python -m model_build.export {run_dir} first"
        )


def _check_complete(run_dir: Path) -> None:
    """Refuse a run that is not evaluated and exported, saying which command to run."""
    if not (run_dir / LABELS_FILE).is_file():
        raise PublishError(f"{run_dir} has no {LABELS_FILE}: is it a training run folder?")
    if not (run_dir / METRICS_FILE).is_file():
        raise PublishError(
            f"{run_dir} is not evaluated: run python -m model_build.evaluate {run_dir}, then "
            f"python -m model_build.export {run_dir}"
        )
    if not (run_dir / MODEL_FILE).is_file():
        raise PublishError(f"{run_dir} is not exported: run python -m model_build.export {run_dir}")


def _held_out_photos(run_dir: Path):
    """The run's held-out (pixels, labels), or None when it records none (no data.json)."""
    run = RunFolder(run_dir)
    try:
        record = run.read_data()
    except ValueError:
        return None
    split = run_split(run, reported_split(record.splits), record=record)
    return np.asarray(split.pixels), split.label_indices


def publish_run(
    run_dir: Path,
    dest: str,
    *,
    version: str | None = None,
    now: datetime | None = None,
    s3_client: Any = None,
    log: Callable[[str], None] = print,
    force: bool = False,
) -> str:
    """Publish ``run_dir`` to ``dest`` (folder or ``s3://bucket/prefix``); return the version.

    The quality gate (:mod:`model_build.release.quality_gate`) refuses a model near chance or worse
    than
    the current latest on the same evaluation data, unless ``force``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PublishError(f"run folder {run_dir} does not exist")
    _check_complete(run_dir)
    files = collect_files(run_dir)
    version = check_version(version) if version else make_version(files, now)
    destination = str(dest)
    metrics = _read_json(run_dir / METRICS_FILE, {})
    decision = quality_gate.judge(
        metrics,
        quality_gate.read_latest(destination, s3_client),
        lambda: _held_out_photos(run_dir),
        quality_gate.candidate_outcome_of(
            run_dir, Calibration.model_validate(metrics["calibration"])
        )
        if isinstance(metrics.get("calibration"), dict)
        else None,
    )
    for note in decision.notes:
        log(note)
    if decision.problems and not force:
        raise PublishError(quality_gate.describe(decision.problems))
    if decision.problems:
        decision.forced = True
        log(
            quality_gate.describe(decision.problems).replace(
                "(--force publishes anyway)", "— published with --force (recorded)"
            )
        )
    manifest = build_manifest(run_dir, files, version, now, decision.record())
    manifest_bytes = (manifest.model_dump_json(indent=2, by_alias=True) + "\n").encode()
    if destination.startswith("s3://"):
        _publish_to_s3(destination, version, files, manifest_bytes, s3_client)
    elif "://" in destination:
        raise PublishError(f"unsupported destination {destination!r}: use a folder or s3://")
    else:
        _publish_to_folder(Path(destination), version, files, manifest_bytes)
    log(f"publish: {destination.rstrip('/')}/{version} ({len(files)} files), latest.json updated")
    return version


def _publish_to_folder(
    root: Path, version: str, files: dict[str, Path], manifest_bytes: bytes
) -> None:
    root.mkdir(parents=True, exist_ok=True)
    final = root / version
    if final.exists():
        raise PublishError(
            f"version {version} already exists in {root}; versions are never overwritten"
        )
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{version}-", dir=root))
    try:
        for name, source in files.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        (staging / MANIFEST_FILE).write_bytes(manifest_bytes)
        _fsync_tree(staging)
        if final.exists():  # someone published the same version meanwhile
            raise PublishError(
                f"version {version} already exists in {root}; versions are never overwritten"
            )
        os.rename(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    try:
        load_artifact(root, version=version)  # read back: every sha256 as the manifest says
    except ArtifactError as error:
        raise PublishError(f"published {final} does not verify: {error}") from error
    _write_atomically(root / LATEST_FILE, json.dumps({"version": version}).encode() + b"\n")


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with path.open("rb") as stream:
                os.fsync(stream.fileno())


def _write_atomically(path: Path, payload: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _publish_to_s3(
    uri: str, version: str, files: dict[str, Path], manifest_bytes: bytes, s3_client: Any
) -> None:
    bucket, prefix = split_s3_uri(uri)
    if s3_client is None:
        s3_client = boto3.client("s3")
    version_prefix = s3_key(prefix, version) + "/"
    existing = s3_client.list_objects_v2(Bucket=bucket, Prefix=version_prefix, MaxKeys=1)
    if existing.get("KeyCount", 0):
        raise PublishError(
            f"version {version} already exists in {uri} (possibly a partial upload); "
            "versions are never overwritten"
        )
    # Every file first, the manifest after them, latest.json last: a reader that follows
    # latest.json only ever reaches a version whose files are all there.
    for name, source in files.items():
        s3_client.upload_file(str(source), bucket, s3_key(prefix, version, name))
    s3_client.put_object(
        Bucket=bucket,
        Key=s3_key(prefix, version, MANIFEST_FILE),
        Body=manifest_bytes,
        ContentType="application/json",
    )
    for name, source in files.items():
        head = s3_client.head_object(Bucket=bucket, Key=s3_key(prefix, version, name))
        if head["ContentLength"] != source.stat().st_size:
            raise PublishError(f"s3://{bucket}/{s3_key(prefix, version, name)} has the wrong size")
    s3_client.put_object(
        Bucket=bucket,
        Key=s3_key(prefix, LATEST_FILE),
        Body=json.dumps({"version": version}).encode() + b"\n",
        ContentType="application/json",
        CacheControl="no-cache",
    )

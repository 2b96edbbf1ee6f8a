"""Contract 4: the published model artifact, and the loader both halves use to read it.

Layout (``<dest>`` is a folder or ``s3://bucket/prefix``)::

    <dest>/<version>/model.tflite        float32, input uint8 [N,224,224,3], scaling inside
    <dest>/<version>/model_int8.tflite   only when it passed its gate (held-out accuracy/precision)
    <dest>/<version>/unfamiliarity.npz   the unfamiliarity score (contracts.unfamiliarity), optional
    <dest>/<version>/model.keras         for further training or other runtimes
    <dest>/<version>/labels.json
    <dest>/<version>/manifest.json       see :class:`Manifest`
    <dest>/<version>/report/...          figures and tables of the evaluation
    <dest>/latest.json                   {"version": "<version>"}, written last

``model_build.release.publish`` writes it; :func:`load_artifact` reads it (``latest.json`` or a
pinned
version), downloads an S3 version into a local cache, checks every file's sha256 against the
manifest and returns paths plus the parsed manifest. Any problem is an :class:`ArtifactError`
with a message that says what is wrong and where.

This module imports only the standard library and pydantic (boto3 lazily, for ``s3://`` URIs):
the worker's image has no TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import boto3
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MANIFEST_FILE: Final[str] = "manifest.json"
LATEST_FILE: Final[str] = "latest.json"
MODEL_FILE: Final[str] = "model.tflite"
MODEL_INT8_FILE: Final[str] = "model_int8.tflite"
KERAS_MODEL_FILE: Final[str] = "model.keras"
LABELS_FILE: Final[str] = "labels.json"
REPORT_DIR: Final[str] = "report"
UNFAMILIARITY_FILE: Final[str] = "unfamiliarity.npz"  # contracts.unfamiliarity (optional)
REQUIRED_FILES: Final[tuple[str, ...]] = (MODEL_FILE, LABELS_FILE)
MANIFEST_SCHEMA_VERSION: Final[int] = 1

# <UTC timestamp>-<short content hash>, e.g. 20261124T014800Z-3fa9c1d2. Checked on every read so a
# tampered latest.json cannot point outside <dest> ("../../etc").
VERSION_PATTERN: Final[re.Pattern[str]] = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6,64}$")
_FILE_NAME_PATTERN: Final[re.Pattern[str]] = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")

CACHE_DIR_ENV: Final[str] = "MODEL_CACHE_DIR"


class ArtifactError(Exception):
    """The artifact is missing, incomplete, malformed or does not match its manifest."""


# The model files the worker can run (handler.settings' MODEL_VARIANT).
MODEL_VARIANTS: Final[tuple[str, ...]] = ("float32", "int8")


def worker_files(variant: str) -> tuple[str, ...]:
    """The files of a version the worker loads (beside ``manifest.json``) to run ``variant``.

    The one definition of what a cold start asks :func:`load_artifact` for (``only=``) and so of
    what the worker's image must hold: the float32 model and the labels always (the loader's
    :data:`REQUIRED_FILES`), ``model_int8.tflite`` for int8, and ``unfamiliarity.npz``. The
    optional ones are loaded when the manifest lists them; the Keras model and the report never.
    """
    if variant not in MODEL_VARIANTS:
        raise ArtifactError(f"unknown model variant {variant!r}: expected one of {MODEL_VARIANTS}")
    int8 = (MODEL_INT8_FILE,) if variant == "int8" else ()
    return (*REQUIRED_FILES, *int8, UNFAMILIARITY_FILE)


# Everything the worker may load, whichever variant it runs: what infra/Dockerfile stages into the
# image (python -m infra.stage_model) and what infra/image_check.py verifies there.
RUNTIME_FILES: Final[tuple[str, ...]] = tuple(
    dict.fromkeys(name for variant in MODEL_VARIANTS for name in worker_files(variant))
)


class FileEntry(BaseModel):
    """One file of a version: its sha256 (hex) and size in bytes."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(alias="bytes", ge=0)


class InputContract(BaseModel):
    """What every runtime feeds the model (contract 2: the scaling lives in the model)."""

    model_config = ConfigDict(extra="allow")

    dtype: str = "uint8"
    shape: list[int | None] = Field(default_factory=lambda: [None, 224, 224, 3])
    color: str = "RGB"
    value_range: list[int] = Field(default_factory=lambda: [0, 255])
    scaling: str = "inside the model: x / 127.5 - 1"
    image_function: str = "contracts.image.image_to_tensor"
    image_function_version: str = "1"


class Interval(BaseModel):
    """An exact (Clopper–Pearson) confidence interval of a proportion."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float = Field(ge=0, le=1)
    high: float = Field(ge=0, le=1)
    level: float = Field(default=0.95, gt=0, lt=1)


class Calibration(BaseModel):
    """The review rule and the guarantee it carries: what ``model_build.evaluation.calibration``
    returns, the manifest stores and the worker applies — one typed block, frozen.

    ``calibrated probabilities = softmax(log(probs) / temperature)``; the worker auto-catalogues a
    photo whose top calibrated probability is ≥ ``review_threshold`` and that the unfamiliarity
    score does not flag; the rest is NEEDS_REVIEW. The threshold was certified on
    ``calibration_images`` photos so that, with probability ≥ ``confidence``, the precision of what
    is auto-catalogued is ≥ ``target_precision`` (``assumption`` says for which photos);
    ``coverage`` and ``precision_at_threshold`` are measured on ``evaluation_images`` held-out
    photos, with exact intervals. Manifests published before these fields existed carry only the
    first four; the rest default to "unknown".
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    temperature: float = Field(gt=0)
    review_threshold: float = Field(ge=0, le=1)
    target_precision: float = Field(ge=0, le=1)
    coverage: float = Field(ge=0, le=1)
    confidence: float | None = Field(default=None, gt=0, lt=1)
    coverage_interval: Interval | None = None
    precision_at_threshold: float | None = Field(default=None, ge=0, le=1)
    precision_interval: Interval | None = None
    target_reached: bool | None = None  # on the calibration photos (the certification)
    target_met_on_held_out: bool | None = None
    auto_catalogued: int | None = None
    auto_catalogued_errors: int | None = None
    unfamiliar_excluded: bool | None = None  # the walk ran on photos the flag lets through
    method: str | None = None
    grid: str | None = None
    minimum_images: int | None = None
    calibrated_on: str | None = None
    calibration_images: int | None = None
    eligible_images: int | None = None
    coverage_fit: float | None = None
    precision_fit: float | None = None
    precision_lower_bound: float | None = None
    evaluated_on: str | None = None
    evaluation_images: int | None = None
    variant: str | None = None  # float32 | int8
    assumption: str | None = None


class Manifest(BaseModel):
    """``<version>/manifest.json``. Unknown fields are kept, so older readers accept newer files."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = MANIFEST_SCHEMA_VERSION
    version: str
    created_at: datetime
    image_size: int = 224
    input: InputContract = Field(default_factory=InputContract)
    labels: list[str] = Field(min_length=1)
    files: dict[str, FileEntry]
    metrics: dict[str, Any] = Field(default_factory=dict)
    calibration: Calibration
    # int8's own temperature and threshold (its outputs are not float32's); absent in manifests
    # published before it existed, where the worker falls back to ``calibration``.
    int8_calibration: Calibration | None = None
    # The publish gate's decision against the latest model (model_build.release.quality_gate),
    # and whether --force overrode a refusal.
    publish_gate: dict[str, Any] = Field(default_factory=dict)
    int8: dict[str, Any] = Field(default_factory=dict)
    # What the reported metrics were measured on: split, image count and the content hash of
    # those images (``data_sha256``), so two versions' numbers are comparable only when equal.
    evaluation: dict[str, Any] = Field(default_factory=dict)
    # The unfamiliarity score (contracts.unfamiliarity): method, file, threshold and how well it
    # separated familiar from unfamiliar photos at training time. Empty: no score shipped.
    unfamiliarity: dict[str, Any] = Field(default_factory=dict)
    training_config: dict[str, Any] = Field(default_factory=dict)
    dataset: dict[str, Any] = Field(default_factory=dict)
    library_versions: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True)
class Artifact:
    """A verified, local copy of one version."""

    version: str
    manifest: Manifest
    directory: Path
    files: dict[str, Path]

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def model_path(self) -> Path:
        return self.files[MODEL_FILE]

    @property
    def int8_model_path(self) -> Path | None:
        return self.files.get(MODEL_INT8_FILE)

    @property
    def unfamiliarity_path(self) -> Path | None:
        return self.files.get(UNFAMILIARITY_FILE)

    @property
    def calibration(self) -> Calibration:
        return self.manifest.calibration

    def calibration_for(self, variant: str) -> Calibration:
        """The calibration of the model file the worker runs (``float32`` or ``int8``)."""
        if variant == "int8" and self.manifest.int8_calibration is not None:
            return self.manifest.int8_calibration
        return self.manifest.calibration


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes, read in chunks (training's dataset hashing uses it too)."""
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def check_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION_PATTERN.match(version):
        raise ArtifactError(
            f"invalid model version {version!r}: expected <UTC timestamp>-<hash>, "
            "e.g. 20261124T014800Z-3fa9c1d2"
        )
    return version


def parse_latest(raw: bytes, where: str) -> str:
    try:
        document = json.loads(raw)
        version = document["version"]
    except (ValueError, TypeError, KeyError) as error:
        raise ArtifactError(f'{where} is not {{"version": "..."}}: {error}') from error
    return check_version(version)


def parse_manifest(raw: bytes, where: str) -> Manifest:
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as error:
        # One line, naming each bad field: this message ends up as the worker's cold-start error.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'document'}: {problem['msg']}"
            for problem in error.errors()
        )
        raise ArtifactError(f"{where} is not a valid manifest ({problems})") from None


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")`` (prefix without slashes at either end)."""
    if not uri.startswith("s3://"):
        raise ArtifactError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ArtifactError(f"no bucket in {uri!r}")
    return bucket, prefix.strip("/")


def s3_key(prefix: str, *parts: str) -> str:
    return "/".join([prefix, *parts]) if prefix else "/".join(parts)


def default_cache_dir() -> Path:
    """``$MODEL_CACHE_DIR`` or ``<tmp>/momee-model-cache`` (Lambda can only write to /tmp)."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / "momee-model-cache"


def load_artifact(
    uri: str | Path,
    *,
    version: str | None = None,
    only: Collection[str] | None = None,
    cache_dir: str | Path | None = None,
    s3_client: Any = None,
) -> Artifact:
    """Read ``latest.json`` (or the pinned ``version``) under ``uri`` and return a verified copy.

    ``uri`` is a folder or ``s3://bucket/prefix``. ``only`` limits which files of the manifest are
    fetched and verified (names, or folder names such as ``"report"``); ``None`` means all of them.
    :data:`RUNTIME_FILES` is what the worker needs. Files missing from the version are ignored when
    listed in ``only`` but absent from the manifest (``model_int8.tflite`` is optional), while
    :data:`REQUIRED_FILES` must always be there.

    For S3 the version is downloaded into ``cache_dir`` (default :func:`default_cache_dir`) once;
    a cached copy is reused after its sha256 checks pass, and re-downloaded when they do not.
    ``s3_client`` is a boto3 S3 client; one is created when it is not given.
    """
    text = str(uri)
    if text.startswith("s3://"):
        return _load_from_s3(text, version, only, cache_dir, s3_client)
    if "://" in text:
        raise ArtifactError(f"unsupported model location {text!r}: use a folder or s3://")
    return _load_from_folder(Path(text), version, only)


def _wanted(manifest: Manifest, only: Collection[str] | None, where: str) -> list[str]:
    for name in manifest.files:
        if not _FILE_NAME_PATTERN.match(name) or ".." in name.split("/"):
            raise ArtifactError(f"{where} lists an unsafe file name {name!r}")
    missing = [name for name in REQUIRED_FILES if name not in manifest.files]
    if missing:
        raise ArtifactError(f"{where} does not list required file(s) {', '.join(missing)}")
    if only is None:
        return sorted(manifest.files)
    selected = set(REQUIRED_FILES)
    for name in manifest.files:
        if any(name == item or name.startswith(item.rstrip("/") + "/") for item in only):
            selected.add(name)
    return sorted(selected)


def _verify(directory: Path, manifest: Manifest, names: list[str], where: str) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    for name in names:
        entry = manifest.files[name]
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{where}: file {name} listed in the manifest is missing")
        size = path.stat().st_size
        if size != entry.size:
            raise ArtifactError(
                f"{where}: {name} has {size} bytes, the manifest says {entry.size} "
                "(incomplete or altered file)"
            )
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise ArtifactError(
                f"{where}: sha256 mismatch for {name}: file has {digest}, "
                f"manifest says {entry.sha256}"
            )
        paths[name] = path
    _check_labels(paths[LABELS_FILE], manifest, where)
    return paths


def _check_labels(path: Path, manifest: Manifest, where: str) -> None:
    try:
        labels = json.loads(path.read_bytes())
    except ValueError as error:
        raise ArtifactError(f"{where}: {LABELS_FILE} is not JSON: {error}") from error
    if labels != manifest.labels:
        raise ArtifactError(f"{where}: {LABELS_FILE} does not match the manifest's labels")


def _read_local(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as error:
        raise ArtifactError(f"{path} not found") from error
    except OSError as error:
        raise ArtifactError(f"cannot read {path}: {error}") from error


def _load_from_folder(root: Path, version: str | None, only: Collection[str] | None) -> Artifact:
    if not root.is_dir():
        raise ArtifactError(f"model folder {root} does not exist")
    if version is None:
        latest = root / LATEST_FILE
        if not latest.is_file():
            raise ArtifactError(f"{latest} not found: nothing has been published to {root}")
        version = parse_latest(_read_local(latest), str(latest))
    check_version(version)
    directory = root / version
    if not directory.is_dir():
        raise ArtifactError(f"model version {version} not found in {root}")
    where = str(directory)
    manifest = _manifest_for(_read_local(directory / MANIFEST_FILE), version, where)
    files = _verify(directory, manifest, _wanted(manifest, only, where), where)
    return Artifact(version=version, manifest=manifest, directory=directory, files=files)


def _manifest_for(raw: bytes, version: str, where: str) -> Manifest:
    manifest = parse_manifest(raw, f"{where}/{MANIFEST_FILE}")
    if manifest.version != version:
        raise ArtifactError(
            f"{where}/{MANIFEST_FILE} says version {manifest.version!r}, expected {version!r}"
        )
    return manifest


def _s3_client_default() -> Any:
    return boto3.client("s3")


def _s3_get(s3_client: Any, bucket: str, key: str) -> bytes:
    try:
        return s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in {"NoSuchKey", "404", "NotFound"}:
            raise ArtifactError(f"s3://{bucket}/{key} not found") from error
        raise ArtifactError(f"cannot read s3://{bucket}/{key}: {error}") from error


def _load_from_s3(
    uri: str,
    version: str | None,
    only: Collection[str] | None,
    cache_dir: str | Path | None,
    s3_client: Any,
) -> Artifact:
    bucket, prefix = split_s3_uri(uri)
    if s3_client is None:
        s3_client = _s3_client_default()
    if version is None:
        key = s3_key(prefix, LATEST_FILE)
        version = parse_latest(_s3_get(s3_client, bucket, key), f"s3://{bucket}/{key}")
    check_version(version)
    where = f"s3://{bucket}/{s3_key(prefix, version)}"
    manifest_raw = _s3_get(s3_client, bucket, s3_key(prefix, version, MANIFEST_FILE))
    manifest = _manifest_for(manifest_raw, version, where)
    names = _wanted(manifest, only, where)

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    directory = root / bucket / (prefix.replace("/", "__") or "_") / version
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST_FILE).write_bytes(manifest_raw)
    for name in names:
        target = directory / name
        entry = manifest.files[name]
        cached = target.is_file() and target.stat().st_size == entry.size
        if cached and sha256_file(target) == entry.sha256:
            continue  # cached and intact
        _download(s3_client, bucket, s3_key(prefix, version, name), target)
    files = _verify(directory, manifest, names, where)
    return Artifact(version=version, manifest=manifest, directory=directory, files=files)


def _download(s3_client: Any, bucket: str, key: str, target: Path) -> None:
    """Download to a temporary name beside the target, then rename: a crash leaves no half file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(handle)
    try:
        s3_client.download_file(bucket, key, temporary)
        os.replace(temporary, target)
    except ClientError as error:
        raise ArtifactError(f"cannot download s3://{bucket}/{key}: {error}") from error
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)

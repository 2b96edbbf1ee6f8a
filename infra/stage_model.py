"""Stage the worker image's model folder: exactly the files the worker loads, and nothing else.

    python -m infra.stage_model ARTIFACTS VERSION OUT            # here, from the repository
    python stage_model.py --path /var/task ARTIFACTS VERSION OUT  # infra/Dockerfile's build step

Copies, from the published version ``ARTIFACTS/VERSION/``, the files of
:data:`contracts.artifact.RUNTIME_FILES` that its manifest lists (the float32 model and the
labels always; ``model_int8.tflite`` and ``unfamiliarity.npz`` when the version has them) and the
manifest itself into ``OUT/VERSION/``, and writes ``OUT/latest.json``: the folder layout
:func:`contracts.artifact.load_artifact` reads, so ``MODEL_URI=OUT`` works. The Keras model and the
report stay out. The manifest is copied unchanged (it is the publisher's record; the worker asks
the loader only for its own files, so the files it lists but the image leaves out are never read).

The list is :func:`contracts.artifact.worker_files`, the same one the worker's cold start passes to
the loader, so the image cannot miss a file the worker asks for. ``infra/image_check.py`` runs next
and verifies every staged file's sha256 and that the folder holds nothing more.

Standard library at the top: in the image the paths are set (``--path``) before ``contracts`` is
imported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


class StagingError(Exception):
    """The published version cannot be staged (missing, incomplete or not a version)."""


def stage_model(artifacts: Path, version: str, out: Path) -> list[str]:
    """Copy the worker's files of ``artifacts/version`` into ``out``; return the staged names."""
    # Imported here: in the image, main() puts /var/task (contracts and pydantic) on the path first.
    from contracts.artifact import (  # noqa: PLC0415 — main() puts /var/task on the path first
        LATEST_FILE,
        MANIFEST_FILE,
        REQUIRED_FILES,
        RUNTIME_FILES,
        ArtifactError,
        check_version,
        parse_manifest,
    )

    try:
        check_version(version)
    except ArtifactError as error:
        raise StagingError(str(error)) from None
    source = artifacts / version
    manifest_path = source / MANIFEST_FILE
    if not manifest_path.is_file():
        raise StagingError(f"{manifest_path} not found: is {version} published in {artifacts}?")
    try:
        manifest = parse_manifest(manifest_path.read_bytes(), str(manifest_path))
    except ArtifactError as error:
        raise StagingError(str(error)) from None
    missing_required = [name for name in REQUIRED_FILES if name not in manifest.files]
    if missing_required:
        raise StagingError(f"{manifest_path} does not list {', '.join(missing_required)}")
    names = [name for name in RUNTIME_FILES if name in manifest.files]
    absent = [name for name in names if not (source / name).is_file()]
    if absent:
        raise StagingError(
            f"{source} lacks {', '.join(absent)}, which its manifest lists and the worker loads"
        )
    target = out / version
    if target.exists():
        raise StagingError(f"{target} already exists: stage into an empty folder")
    target.mkdir(parents=True)
    for name in [*names, MANIFEST_FILE]:
        shutil.copyfile(source / name, target / name)
    (out / LATEST_FILE).write_text(json.dumps({"version": version}) + "\n")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.stage_model",
        description="Stage the worker image's model folder: the files the worker loads, the "
        "manifest and latest.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("artifacts", type=Path, help="publish destination (e.g. artifacts)")
    parser.add_argument("version", help="the published version to stage")
    parser.add_argument("out", type=Path, help="the image's model folder (MODEL_URI)")
    parser.add_argument(
        "--path", action="append", default=[], help="prepended to sys.path (the image's /var/task)"
    )
    arguments = parser.parse_args(argv)
    sys.path[:0] = arguments.path
    try:
        names = stage_model(arguments.artifacts, arguments.version, arguments.out)
    except StagingError as error:
        print(f"stage_model: {error}", file=sys.stderr)
        return 2
    print(
        f"stage_model: {arguments.version}: {', '.join(names)} and the manifest "
        f"-> {arguments.out / arguments.version}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

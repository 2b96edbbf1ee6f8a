"""Build-time proof that the worker's image can start: a build step of infra/Dockerfile.

    python image_check.py --path /var/task --model-uri /opt/model --model-version <version>

1. Imports every module of ``handler`` and ``contracts`` from the given paths (the handler's
   whole import graph: Powertools, pydantic, boto3, numpy, Pillow, LiteRT), plus the native
   modules the worker loads lazily (pillow-heif's decoder, LiteRT's interpreter).
2. Checks that the staged model folder holds exactly the files the worker loads
   (:func:`contracts.artifact.worker_files`, staged by infra/stage_model.py), sha256-verified.
3. Loads the baked model exactly as a cold start does (:func:`handler.cold_start.load_model`:
   sha256 of every file checked, interpreter built) for each variant the version has, and runs
   one inference on a blank image, so an op the runtime does not know fails here too.

Any failure exits non-zero, so ``sam build`` (``docker build``) stops instead of the first upload
ending in ``Runtime.ImportModuleError``. Standard library only at the top: the paths are set up
before anything else is imported. Not part of the image: it is copied to /tmp for the step and
removed. tests/functional/test_infra_image_check.py runs it against the worker's wheels alone.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

PACKAGES = ("contracts", "handler")
NATIVE_MODULES = (
    "ai_edge_litert.interpreter",
    "numpy",
    "PIL.Image",
    "pillow_heif",
    "pydantic_core",
)


def import_everything() -> list[str]:
    """Import every module of the worker's packages and its native dependencies."""
    imported = []
    for name in NATIVE_MODULES:
        importlib.import_module(name)
        imported.append(name)
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        imported.append(package_name)
        for module in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            importlib.import_module(module.name)
            imported.append(module.name)
    import pillow_heif  # noqa: PLC0415 — the search path is set up first (see the module docstring)

    pillow_heif.register_heif_opener()
    return imported


def check_staged_files(model_uri: str, model_version: str) -> list[str]:
    """The image's model folder holds exactly the worker's files of the version and its manifest.

    :func:`contracts.artifact.worker_files` (through ``RUNTIME_FILES``) says what the worker loads;
    infra/stage_model.py staged it. A file the manifest lists for the worker but the folder lacks
    would fail a cold start; a file beyond them (the Keras model, the report) is dead weight.
    """
    from contracts.artifact import (  # noqa: PLC0415 — the search path is set up first (see the module docstring)
        LATEST_FILE,
        MANIFEST_FILE,
        RUNTIME_FILES,
        load_artifact,
    )

    # Verifies the sha256 and size of every staged file the worker may load.
    artifact = load_artifact(model_uri, version=model_version, only=RUNTIME_FILES)
    expected = {name for name in RUNTIME_FILES if name in artifact.manifest.files}
    folder = Path(model_uri) / model_version
    present = {str(path.relative_to(folder)) for path in folder.rglob("*") if not path.is_dir()} - {
        MANIFEST_FILE
    }
    if present != expected:
        raise SystemExit(
            f"image check: {folder} holds {sorted(present)}, the worker loads {sorted(expected)}"
        )
    extra = sorted({path.name for path in Path(model_uri).iterdir()} - {model_version, LATEST_FILE})
    if extra:
        raise SystemExit(f"image check: {model_uri} holds more than one version: {extra}")
    return sorted(expected)


def check_model(model_uri: str, model_version: str) -> list[str]:
    """Load the model as a cold start does and classify one blank image, per variant."""
    import numpy as np  # noqa: PLC0415 — the search path is set up first (see the module docstring)

    from contracts.artifact import MODEL_INT8_FILE  # noqa: PLC0415 — the search path is set up first (see the module docstring)
    from contracts.image import CHANNELS, IMAGE_SIZE  # noqa: PLC0415 — the search path is set up first (see the module docstring)
    from handler.cold_start import load_model  # noqa: PLC0415 — the search path is set up first (see the module docstring)
    from handler.settings import WorkerSettings  # noqa: PLC0415 — the search path is set up first (see the module docstring)

    staged = check_staged_files(model_uri, model_version)
    variants = ["float32"] + (["int8"] if MODEL_INT8_FILE in staged else [])
    blank = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, CHANNELS), dtype=np.uint8)
    lines = []
    for variant in variants:
        settings = WorkerSettings(
            catalogue_table="image-check",
            model_uri=model_uri,
            model_version=model_version,
            model_variant=variant,
        )
        classifier, _ = load_model(settings)
        (prediction,) = classifier.predict(blank)
        lines.append(f"{variant}: {prediction.category} {prediction.confidence:.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--path",
        action="append",
        default=[],
        help="prepended to sys.path, may be given again (default: none)",
    )
    parser.add_argument("--model-uri", required=True, help="the staged model folder (required)")
    parser.add_argument("--model-version", required=True, help="the version baked in (required)")
    arguments = parser.parse_args(argv)
    sys.path[:0] = arguments.path
    imported = import_everything()
    for line in check_model(arguments.model_uri, arguments.model_version):
        print(f"image check: model {arguments.model_version} {line}")
    print(f"image check: {len(imported)} modules imported; the worker can start")
    return 0


if __name__ == "__main__":
    sys.exit(main())

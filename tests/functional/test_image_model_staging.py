"""The worker's image holds exactly what the worker loads, and its build succeeds with any model
that training publishes — proven without Docker by replaying infra/Dockerfile on folders
(tests/support/dockerfile_replay.py): the build context as .dockerignore sends it, the model
staged by the Dockerfile's own steps, and the Dockerfile's last step, infra/image_check.py, run on
the result.

Before the fix the Dockerfile copied manifest.json, labels.json and model*.tflite only: the image
check stopped at "file model.keras listed in the manifest is missing" for every published model,
and a MobileNetV2 version's unfamiliarity.npz (which the worker's cold start asks for) was left out.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from contracts.artifact import (
    KERAS_MODEL_FILE,
    LABELS_FILE,
    LATEST_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    MODEL_INT8_FILE,
    UNFAMILIARITY_FILE,
    worker_files,
)
from tests.support.dockerfile_replay import ReplayError, replay
from tests.support.tiny_artifact import publish_tiny_artifact

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "infra" / "Dockerfile"


def build_context(tmp_path: Path, **artifact_options: bool) -> tuple[Path, str]:
    """A build context as `sam build` sends it: the repository's image files and one published
    version in artifacts/ (with its Keras model and report, as training publishes them)."""
    context = tmp_path / "context"
    for folder in ("handler", "contracts"):
        shutil.copytree(
            ROOT / folder, context / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    (context / "infra").mkdir()
    for name in ("Dockerfile", "image_check.py", "stage_model.py"):
        if (ROOT / "infra" / name).is_file():
            shutil.copy(ROOT / "infra" / name, context / "infra" / name)
    shutil.copy(ROOT / ".dockerignore", context / ".dockerignore")
    version = publish_tiny_artifact(context / "artifacts", **artifact_options)
    return context, version


def build_image(tmp_path: Path, context: Path, version: str) -> Path:
    return replay(
        DOCKERFILE,
        context=context,
        work=tmp_path / "image",
        build_args={"MODEL_VERSION": version},
    )


@pytest.mark.parametrize(
    ("artifact_options", "expected"),
    [
        # The stand-in model of `make sample-model`: float32 and int8, no unfamiliarity score.
        ({"include_int8": True}, {MODEL_FILE, MODEL_INT8_FILE, LABELS_FILE}),
        # A MobileNetV2 version: pooled-features output, int8 and the unfamiliarity score.
        (
            {"include_int8": True, "unfamiliarity": True},
            {MODEL_FILE, MODEL_INT8_FILE, LABELS_FILE, UNFAMILIARITY_FILE},
        ),
        # A version whose int8 model failed its gate.
        (
            {"include_int8": False, "unfamiliarity": True},
            {MODEL_FILE, LABELS_FILE, UNFAMILIARITY_FILE},
        ),
    ],
    ids=["sample-model", "mobilenet-int8-unfamiliarity", "mobilenet-no-int8"],
)
def test_the_image_builds_and_holds_exactly_the_files_the_worker_loads(
    tmp_path: Path, artifact_options: dict[str, bool], expected: set[str]
) -> None:
    # GIVEN a version exactly as training publishes it (Keras model and report included)
    context, version = build_context(tmp_path, **artifact_options)
    published = context / "artifacts" / version
    assert (published / KERAS_MODEL_FILE).is_file()

    # WHEN infra/Dockerfile's steps run, ending with infra/image_check.py on the staged model
    image = build_image(tmp_path, context, version)

    # THEN the image's model folder holds the worker's files, the manifest and latest.json only
    model_root = image / "opt" / "model"
    assert json.loads((model_root / LATEST_FILE).read_text()) == {"version": version}
    staged = {path.name for path in (model_root / version).iterdir()}
    assert staged == expected | {MANIFEST_FILE}
    # ... which is what the worker's cold start asks the loader for, for each variant it may run
    manifest = json.loads((published / MANIFEST_FILE).read_text())
    loaded = {name for v in ("float32", "int8") for name in worker_files(v)} & set(
        manifest["files"]
    )
    assert staged - {MANIFEST_FILE} == loaded
    # ... byte for byte as published, and nothing from the build left behind.
    for name in staged:
        assert (model_root / version / name).read_bytes() == (published / name).read_bytes()
    assert not (image / "tmp" / "image_check.py").exists()


def test_an_incomplete_published_version_stops_the_build_at_the_staging_step(
    tmp_path: Path,
) -> None:
    # GIVEN a version copied without the unfamiliarity file its manifest lists
    context, version = build_context(tmp_path, unfamiliarity=True)
    (context / "artifacts" / version / UNFAMILIARITY_FILE).unlink()

    # WHEN the image is built THEN it stops, naming the missing file
    with pytest.raises(ReplayError, match=UNFAMILIARITY_FILE) as failure:
        build_image(tmp_path, context, version)
    assert "which its manifest lists and the worker loads" in str(failure.value)


def test_a_model_version_that_is_not_published_stops_the_build_with_one_line(
    tmp_path: Path,
) -> None:
    context, _ = build_context(tmp_path)
    with pytest.raises(ReplayError, match="--parameter-overrides ModelVersion="):
        build_image(tmp_path, context, "ModelVersion")

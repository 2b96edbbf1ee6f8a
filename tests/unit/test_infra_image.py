"""The worker's container image: what infra/Dockerfile installs and copies, and what it leaves out.

Docker is not available in CI, so the Dockerfile, .dockerignore and samconfig.toml are checked as
text: the image installs only handler/requirements.txt, that file names no TensorFlow or Keras,
and the build context carries no datasets, runs, caches or tests.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from contracts.artifact import VERSION_PATTERN
from tests.support.dockerfile_replay import instructions as dockerfile_instructions

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "infra" / "Dockerfile"
REQUIREMENTS = ROOT / "handler" / "requirements.txt"

# Distribution names (PEP 503 normalised) that would bring TensorFlow or Keras into the image.
FORBIDDEN = re.compile(r"^(tensorflow|tf|keras|tf-keras|tf-nightly|tensorflow-.*|tf-.*|keras-.*)$")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the image's Dockerfile (the replay's own parser)."""
    return dockerfile_instructions(DOCKERFILE)


def requirement_names(path: Path) -> list[str]:
    names = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-"):
            pytest.fail(f"{path.name} includes another file or option ({line}); list packages only")
        name = re.split(r"[\s\[<>=!~;@]", line, maxsplit=1)[0]
        names.append(re.sub(r"[-_.]+", "-", name).lower())
    return names


def test_the_worker_requirements_name_no_tensorflow_or_keras() -> None:
    names = requirement_names(REQUIREMENTS)
    assert "ai-edge-litert" in names, "the worker runs the model on LiteRT"
    assert not [name for name in names if FORBIDDEN.match(name)]


def test_forbidden_pattern_catches_the_usual_spellings() -> None:
    for name in (
        "tensorflow",
        "tensorflow-cpu",
        "tf-keras",
        "keras",
        "tf-nightly",
        "tensorflow-io",
    ):
        assert FORBIDDEN.match(name), name
    for name in ("ai-edge-litert", "pillow", "numpy", "boto3", "pydantic-settings"):
        assert not FORBIDDEN.match(name), name


def test_the_image_installs_exactly_the_locked_set_with_hashes() -> None:
    runs = [arguments for instruction, arguments in instructions() if instruction == "RUN"]
    installs = [run for run in runs if re.search(r"\bpip3?\b|\bpython3? -m pip\b", run)]
    assert len(installs) == 1, installs
    words = shlex.split(installs[0].split("&&")[0])
    assert words[:2] == ["pip", "install"]
    # Every positional argument is an option: no package is named on the command line.
    requirement_files = [
        words[i + 1] for i, word in enumerate(words) if word in ("-r", "--requirement")
    ]
    packages = [
        word
        for i, word in enumerate(words[2:], start=2)
        if not word.startswith("-") and words[i - 1] not in ("-r", "--requirement", "--target")
    ]
    assert packages == []
    assert len(requirement_files) == 1
    (copied,) = [
        arguments.split()
        for instruction, arguments in instructions()
        if instruction == "COPY" and requirement_files[0] in arguments.split()
    ]
    assert copied == ["handler/requirements.lock", requirement_files[0]]
    # Every file's hash checked, nothing resolved beyond the lock, wheels only.
    assert {"--require-hashes", "--no-deps", "--only-binary=:all:"} <= set(words)
    steps = " ".join(arguments.lower() for _, arguments in instructions())
    assert "tensorflow" not in steps
    assert "keras" not in steps


def test_the_image_is_built_from_the_lambda_python_base_and_runs_the_handler() -> None:
    steps = instructions()
    froms = [arguments.split() for instruction, arguments in steps if instruction == "FROM"]
    # One base image; the model stage and the final image build on the worker stage.
    base, *later = froms
    # A digest pin (docs/operations.md, "Pin the base image") is welcome; the tag stays readable.
    assert re.fullmatch(
        r"public\.ecr\.aws/lambda/python:3\.12-(arm64|x86_64)(@sha256:[0-9a-f]{64})?", base[0]
    )
    assert base[1:] == ["AS", "worker"]
    assert later == [["worker", "AS", "model"], ["worker"]]
    assert steps[-1] == ("CMD", '["handler.app.lambda_handler"]')


def test_the_image_copies_the_worker_contracts_and_one_model_version() -> None:
    steps = instructions()
    copies = [arguments.split() for instruction, arguments in steps if instruction == "COPY"]
    sources = {source for copy in copies for source in copy[:-1]}
    assert {"handler/", "contracts/"} <= sources
    assert ("ARG", "MODEL_VERSION") in steps
    model_sources = [s for s in sources if s.startswith("artifacts/")]
    # The version folder goes to the model stage; infra/stage_model.py picks the worker's files
    # (contracts.artifact.worker_files) and writes latest.json; only /opt/model reaches the image.
    assert model_sources == ["artifacts/${MODEL_VERSION}/"]
    stages = [i for i, (instruction, _) in enumerate(steps) if instruction == "FROM"]
    model_stage = range(stages[1], stages[2])
    (copy_index,) = [i for i, (_, a) in enumerate(steps) if "artifacts/${MODEL_VERSION}/" in a]
    assert copy_index in model_stage
    (stage_run,) = [i for i, (c, a) in enumerate(steps) if c == "RUN" and "stage_model.py" in a]
    assert stage_run in model_stage
    assert shlex.split(steps[stage_run][1])[-1] == "/opt/model"
    assert ("COPY", "--from=model /opt/model /opt/model") in steps[stages[2] :]
    assert ("ENV", "MODEL_URI=/opt/model") in steps[stages[2] :]
    assert not any("model_build" in a or "tests" in a.split() for _, a in steps)


def test_the_model_version_is_checked_against_the_version_pattern_before_it_is_used() -> None:
    """SAM passes the literal text "ModelVersion" without --parameter-overrides: stop there."""
    steps = instructions()
    arg = steps.index(("ARG", "MODEL_VERSION"))
    first_use = next(
        i for i, (_, arguments) in enumerate(steps) if "artifacts/${MODEL_VERSION}" in arguments
    )
    checks = [
        i
        for i, (instruction, arguments) in enumerate(steps)
        if instruction == "RUN" and "re.fullmatch" in arguments and "MODEL_VERSION" in arguments
    ]
    assert len(checks) == 1
    assert arg < checks[0] < first_use
    (pattern,) = re.findall(r'r"([^"]+)"', steps[checks[0]][1])
    # The same pattern as contracts/artifact.py (there anchored with ^...$, here by fullmatch).
    assert f"^{pattern}$" == VERSION_PATTERN.pattern


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("20261124T014800Z-3fa9c1d2", True),
        ("ModelVersion", False),
        ("", False),
        ("20261124T014800Z-3fa9c1d2/../../etc", False),
        ("20261124T014800Z-3FA9C1D2", False),
    ],
)
def test_the_model_version_check_step_runs_as_written(value: str, accepted: bool) -> None:
    """Run the Dockerfile's RUN line itself with /bin/sh, as docker build does."""
    ((_, command),) = [
        step for step in instructions() if step[0] == "RUN" and "re.fullmatch" in step[1]
    ]
    environment = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "MODEL_VERSION": value,
    }
    completed = subprocess.run(
        ["/bin/sh", "-c", command], env=environment, capture_output=True, text=True, check=False
    )
    assert (completed.returncode == 0) is accepted, completed.stderr
    if not accepted:
        assert "--parameter-overrides ModelVersion=" in completed.stderr
        assert repr(value) in completed.stderr


def test_the_build_imports_the_worker_and_loads_the_model_before_the_image_is_done() -> None:
    steps = instructions()
    model_copy = steps.index(("COPY", "--from=model /opt/model /opt/model"))
    check_copy = steps.index(("COPY", "infra/image_check.py /tmp/image_check.py"))
    (check_run,) = [
        i
        for i, (instruction, arguments) in enumerate(steps)
        if instruction == "RUN" and "/tmp/image_check.py" in arguments
    ]
    words = shlex.split(steps[check_run][1].split("&&")[0])
    assert words[:2] == ["python", "/tmp/image_check.py"]
    assert words[words.index("--path") + 1] == "${LAMBDA_TASK_ROOT}"
    assert words[words.index("--model-uri") + 1] == "/opt/model"
    assert words[words.index("--model-version") + 1] == "${MODEL_VERSION}"
    assert "rm /tmp/image_check.py" in steps[check_run][1]
    assert model_copy < check_copy < check_run < len(steps) - 1
    # After every COPY of code and model: nothing the check did not see reaches the image.
    assert all(instruction != "COPY" or i <= check_copy for i, (instruction, _) in enumerate(steps))
    assert not ignored("infra/image_check.py")
    assert not ignored("infra/stage_model.py")
    assert ignored("infra/abi.py")
    assert ignored("infra/base_image.json")


def test_the_deploy_settings_label_comes_last_so_it_never_invalidates_a_layer() -> None:
    steps = instructions()
    assert steps[-4:] == [
        ("ARG", 'DEPLOY_SETTINGS=""'),
        ("LABEL", 'id.momee.deploy-settings="${DEPLOY_SETTINGS}"'),
        # What the cold start compares with the stack's DEPLOY_SETTINGS (deploy_settings.py).
        ("ENV", 'IMAGE_DEPLOY_SETTINGS="${DEPLOY_SETTINGS}"'),
        ("CMD", '["handler.app.lambda_handler"]'),
    ]


# --- .dockerignore -----------------------------------------------------------------------------


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; a directory covers its files."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in dockerignore_patterns():
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        if any(fnmatch(prefix, glob) for prefix in prefixes):
            result = not negated
    return result


@pytest.mark.parametrize(
    "path",
    [
        "handler/app.py",
        "handler/requirements.txt",
        "handler/requirements.lock",
        "contracts/image.py",
        "artifacts/20261124T014800Z-3fa9c1d2/model.tflite",
        "artifacts/20261124T014800Z-3fa9c1d2/model_int8.tflite",
        "artifacts/20261124T014800Z-3fa9c1d2/labels.json",
        "artifacts/20261124T014800Z-3fa9c1d2/manifest.json",
        "artifacts/20261124T014800Z-3fa9c1d2/unfamiliarity.npz",
    ],
)
def test_build_context_sends_what_the_dockerfile_copies(path: str) -> None:
    assert not ignored(path)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/lib/python3.11/site-packages/tensorflow/__init__.py",
        ".venv-checkov/bin/checkov",
        ".git/HEAD",
        "runs/2026/model.keras",
        "data/train/stroller/1.jpg",
        ".cache/prepare/abc.npy",
        "tests/unit/test_infra_image.py",
        "bench/worker.py",
        "model_build/train.py",
        "artifacts/20261124T014800Z-3fa9c1d2/model.keras",
        "artifacts/20261124T014800Z-3fa9c1d2/report/confusion.png",
        "handler/__pycache__/app.cpython-312.pyc",
        ".aws-sam/build/template.yaml",
    ],
)
def test_build_context_leaves_out_runs_data_caches_and_tests(path: str) -> None:
    assert ignored(path)


# --- samconfig.toml ----------------------------------------------------------------------------


def test_samconfig_defaults() -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())["default"]
    assert config["global"]["parameters"]["stack_name"] == "momee-cataloguer"
    assert config["global"]["parameters"]["region"]
    deploy = config["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["resolve_image_repos"] is True
    assert deploy["confirm_changeset"] is True

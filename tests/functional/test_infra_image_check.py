"""infra/Dockerfile's last build step, run here without Docker: infra/image_check.py on CPython
3.12 with nothing but the worker's own wheels (the ones pip installs in the image, for its
architecture) and the worker's code on the path — no virtualenv, no site-packages (``-I -S``).

It stages a published version as the Dockerfile does (infra/stage_model.py: the worker's files
only), imports every module of handler/ and contracts/ and loads and runs a real (tiny,
MobileNetV2-shaped: int8 and the unfamiliarity score) model with the image's LiteRT. What it
cannot show: the base image's own system libraries (that is tests/functional/test_infra_abi.py's
job, from the recorded facts).
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from infra.abi import (
    CACHE_ROOT,
    NetworkUnavailable,
    download_wheels,
    load_base_image,
)
from infra.lock import WORKER_LOCK
from tests.support.tiny_artifact import publish_tiny_artifact

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]


def python_312() -> str | None:
    """A working CPython 3.12 interpreter, the image's Python, if this machine has one."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))
    candidates.append(shutil.which("python3.12"))  # may be a shim that runs nothing
    for candidate in filter(None, candidates):
        probe = [candidate, "-c", "import sys; sys.exit(sys.version_info[:2] != (3, 12))"]
        if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
            return candidate
    return None


@pytest.fixture(scope="module")
def image_site() -> tuple[str, Path]:
    """(python3.12, a folder holding exactly the image's pip install --target of the wheels)."""
    python = python_312()
    if python is None:
        pytest.skip("no CPython 3.12 on this machine: the image's import check was not run")
    base = load_base_image()
    if platform.machine() != {"x86_64": "x86_64", "arm64": "aarch64"}[base.architecture]:
        pytest.skip(f"this machine is {platform.machine()}, the image is {base.architecture}")
    try:
        wheels = download_wheels(WORKER_LOCK, base)
    except NetworkUnavailable as error:
        pytest.skip(f"{error} (no network): the image's import check was not run")
    site = CACHE_ROOT.parent / "image-site" / wheels[0].parent.name
    if not (site / "COMPLETE").is_file():
        partial = site.with_name(f"{site.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-index",
                "--no-deps",
                "--disable-pip-version-check",
                "--target",
                str(partial),
                *map(str, wheels),
            ],
            check=True,
            capture_output=True,
        )
        (partial / "COMPLETE").write_text("")
        try:
            partial.rename(site)
        except OSError:  # another worker finished first
            shutil.rmtree(partial, ignore_errors=True)
    return python, site


@pytest.fixture
def task_root(tmp_path: Path) -> Path:
    """What the Dockerfile copies to /var/task: handler/ and contracts/, nothing else."""
    root = tmp_path / "task"
    for package in ("handler", "contracts"):
        shutil.copytree(
            ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    for script in ("image_check.py", "stage_model.py"):
        shutil.copy(ROOT / "infra" / script, tmp_path / script)
    return root


def stage(python: str, task_root: Path, *paths: Path, published: Path, version: str) -> Path:
    """The Dockerfile's staging step, on the image's Python: the worker's files only."""
    model = published.parent / "model"
    command = [python, "-I", "-S", str(task_root.parent / "stage_model.py")]
    for path in paths:
        command += ["--path", str(path)]
    command += [str(published), version, str(model)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return model


def run_check(python: str, task_root: Path, *paths: Path, model: Path, version: str):
    command = [python, "-I", "-S", str(task_root.parent / "image_check.py")]
    for path in paths:
        command += ["--path", str(path)]
    command += ["--model-uri", str(model), "--model-version", version]
    return subprocess.run(
        command, cwd=task_root.parent, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_worker_imports_and_runs_its_model_with_only_the_image_wheels(
    image_site: tuple[str, Path], task_root: Path, tmp_path: Path
) -> None:
    python, site = image_site
    version = publish_tiny_artifact(tmp_path / "published", unfamiliarity=True)
    model = stage(
        python, task_root, task_root, site, published=tmp_path / "published", version=version
    )

    completed = run_check(python, task_root, task_root, site, model=model, version=version)

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"image check: model {version} float32:" in completed.stdout
    assert "the worker can start" in completed.stdout
    imported = int(completed.stdout.split(" modules imported")[0].rsplit(" ", 1)[-1])
    assert imported >= len(list((ROOT / "handler").glob("*.py"))) + len(
        list((ROOT / "contracts").glob("*.py"))
    )


def test_the_check_fails_when_a_dependency_is_missing(
    image_site: tuple[str, Path], task_root: Path, tmp_path: Path
) -> None:
    python, site = image_site
    version = publish_tiny_artifact(tmp_path / "published")
    model = stage(
        python, task_root, task_root, site, published=tmp_path / "published", version=version
    )

    completed = run_check(python, task_root, task_root, model=model, version=version)

    assert completed.returncode != 0
    assert "ModuleNotFoundError" in completed.stderr

"""The layers of ARCHITECTURE.md are enforced: `lint-imports` (in `make lint`) fails on a wrong-way
import. Each case plants one such import in a copy of the packages and runs the real check."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = (
    "contracts",
    "sample_data",
    "handler",
    "model_build",
    "local_stack",
    "review",
    "operations",
    "bench",
    "infra",
    "deploy_hook",
)


def _copy(destination: Path) -> Path:
    """The project's packages (Python files only) and its pyproject.toml, under ``destination``."""
    for package in PACKAGES:
        shutil.copytree(
            REPOSITORY / package,
            destination / package,
            ignore=lambda folder, names: [
                name
                for name in names
                if not name.endswith(".py") and not (Path(folder) / name).is_dir()
            ],
        )
    shutil.copy(REPOSITORY / "pyproject.toml", destination / "pyproject.toml")
    return destination


def _lint_imports(root: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    only = [argument for contract in contracts for argument in ("--contract", contract)]
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", *only],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_repository_keeps_its_layers() -> None:
    result = _lint_imports(REPOSITORY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "broken"),
    [
        # Training must never reach a tool (the old reviewed-data export did).
        ("model_build/data/dataset.py", "import review.decisions", "layers"),
        # The worker must never reach training.
        ("handler/worker.py", "import model_build.config", "layers"),
        # The contracts are the bottom layer, even through a lazy import in a function.
        ("contracts/image.py", "def _later():\n    import handler.settings", "layers"),
        # The worker imports contracts and nothing else of ours.
        ("handler/app.py", "import sample_data.photos", "worker-imports-contracts-only"),
        # Nothing the Lambda image runs may pull TensorFlow, however indirectly.
        (
            "contracts/litert.py",
            "def _later():\n    import tensorflow",
            "no-tensorflow-in-the-lambda-image",
        ),
        # The pre-traffic hook is deployed alone: even a contract module is out of its reach.
        ("deploy_hook/pre_traffic.py", "import contracts.catalogue", "deploy-hook-stands-alone"),
    ],
)
def test_a_wrong_way_import_fails_the_check(
    tmp_path: Path, module: str, planted: str, broken: str
) -> None:
    # GIVEN a copy of the packages that keeps its layers
    root = _copy(tmp_path)
    assert _lint_imports(root).returncode == 0
    # WHEN one module gains an import that runs the wrong way
    path = root / module
    path.write_text(path.read_text() + "\n\n" + planted + "\n")
    # THEN the check fails and names the contract it broke
    result = _lint_imports(root)
    assert result.returncode != 0
    assert "1 broken" in result.stdout, result.stdout
    assert _lint_imports(root, broken).returncode != 0

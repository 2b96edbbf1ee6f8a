"""The image's locked dependency set (handler/requirements.lock) against handler/requirements.txt.

The image installs the lock with --require-hashes --no-deps (tests/unit/test_infra_image.py), and
the ABI check downloads exactly its files (tests/functional/test_infra_abi.py): so a lock that
disagrees with the requirements would ship, and prove, a set nobody asked for.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.lock import WORKER_LOCK, WORKER_REQUIREMENTS, disagreements, read_lock, read_requirements


def test_the_lock_agrees_with_the_requirements() -> None:
    assert disagreements() == []


def test_the_lock_hashes_every_package_and_holds_their_dependencies() -> None:
    locked = read_lock()
    assert all(package.hashes for package in locked.values())
    top_level = {name for name, package in locked.items() if package.top_level}
    assert top_level == set(read_requirements())
    # The transitive set the README's ABI table lists is in it (not only the 8 top-level pins).
    assert {"ml-dtypes", "protobuf", "pydantic-core", "botocore"} <= set(locked)
    assert len(locked) > len(top_level)


def copy_with(tmp_path: Path, requirements: str, lock: str | None = None) -> tuple[Path, Path]:
    requirements_path = tmp_path / "requirements.txt"
    lock_path = tmp_path / "requirements.lock"
    requirements_path.write_text(requirements)
    lock_path.write_text(WORKER_LOCK.read_text() if lock is None else lock)
    return requirements_path, lock_path


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # A pin moved without `make lock`: the image would still install the old version.
        (("numpy==2.4.6", "numpy==2.4.7"), "numpy: requirements.txt pins 2.4.7"),
        # A new requirement: the lock (and so the image) lacks it.
        (("numpy==2.4.6", "numpy==2.4.6\nrequests==2.33.0"), "requests==2.33.0 is not in"),
        # A requirement dropped: the lock would still install it.
        (("pillow-heif==1.8.1\n", ""), "pillow-heif is locked as a requirement"),
    ],
)
def test_a_lock_that_disagrees_with_the_requirements_is_reported(
    tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    requirements = WORKER_REQUIREMENTS.read_text()
    assert edit[0] in requirements
    requirements_path, lock_path = copy_with(tmp_path, requirements.replace(*edit))
    problems = disagreements(requirements_path, lock_path)
    assert any(expected in problem for problem in problems), problems
    assert problems[-1] == "run `make lock` and commit handler/requirements.lock"


def test_a_lock_entry_without_hashes_is_reported(tmp_path: Path) -> None:
    lines = WORKER_LOCK.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("six=="))
    # "six==1.17.0 \" followed by its --hash lines: keep the pin, drop the hashes.
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].strip().startswith("--hash"))
    lock = "\n".join([*lines[:start], lines[start].rstrip(" \\"), *lines[end:]]) + "\n"
    requirements_path, lock_path = copy_with(tmp_path, WORKER_REQUIREMENTS.read_text(), lock)
    assert any(
        "six==1.17.0 has no --hash" in p for p in disagreements(requirements_path, lock_path)
    )

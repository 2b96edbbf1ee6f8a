"""The worker image's locked dependency set: ``handler/requirements.lock``.

``handler/requirements.txt`` names what the worker imports (8 pins); the lock names everything
those pull in, each with the sha256 of every file PyPI publishes for that version, resolved for
the Lambda target (CPython 3.12 on x86_64 Linux, wheels only) by pip-tools' ``pip-compile``
running on such an interpreter::

    make lock        # pip-compile --generate-hashes --allow-unsafe --strip-extras \
                     #   --pip-args "--only-binary=:all:" -o handler/requirements.lock \
                     #   handler/requirements.txt   (in a python3.12 virtualenv)

Not uv: ``uv pip compile --python-version 3.12`` ignores upper bounds of ``Requires-Python`` and
locks ``backports-strenum`` 1.3.1 (``<3.11`` only), which pip then refuses to install on 3.12.

infra/Dockerfile installs the lock with ``--require-hashes --no-deps``; ``python -m infra.abi``
downloads exactly its files; :func:`disagreements` is what a test runs so that a change to
``requirements.txt`` without a new lock (or the other way round) fails CI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final[Path] = Path(__file__).resolve().parent.parent
WORKER_REQUIREMENTS: Final[Path] = ROOT / "handler" / "requirements.txt"
WORKER_LOCK: Final[Path] = ROOT / "handler" / "requirements.lock"
# uv's annotation on a package that requirements.txt itself names.
_TOP_LEVEL_MARK: Final[str] = "-r handler/requirements.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def normalise(name: str) -> str:
    """PEP 503 name normalisation (``Pillow_HEIF`` -> ``pillow-heif``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    hashes: tuple[str, ...]
    top_level: bool


def read_requirements(path: Path = WORKER_REQUIREMENTS) -> dict[str, str]:
    """``name -> version`` of ``requirements.txt`` (every line is an exact ``==`` pin)."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if match is None:
            raise ValueError(f"{path.name}: not an exact pin: {line!r}")
        pins[normalise(match.group(1))] = match.group(2)
    return pins


def read_lock(path: Path = WORKER_LOCK) -> dict[str, LockedPackage]:
    """Every package of the lock with its hashes and whether requirements.txt names it."""
    packages: dict[str, LockedPackage] = {}
    name = version = None
    hashes: list[str] = []
    via: list[str] = []

    def close() -> None:
        if name is not None and version is not None:
            top_level = any(_TOP_LEVEL_MARK in line for line in via)
            packages[name] = LockedPackage(name, version, tuple(hashes), top_level)

    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        match = _PIN.match(raw)
        if match:
            close()
            name, version = normalise(match.group(1)), match.group(2)
            hashes, via = [], []
        hashes.extend(_HASH.findall(stripped))
        if stripped.startswith("#") and name is not None:
            via.append(stripped)
    close()
    return packages


def disagreements(requirements: Path = WORKER_REQUIREMENTS, lock: Path = WORKER_LOCK) -> list[str]:
    """Every way the lock does not match requirements.txt; empty when it does."""
    wanted = read_requirements(requirements)
    locked = read_lock(lock)
    problems = []
    for name, version in sorted(wanted.items()):
        if name not in locked:
            problems.append(f"{name}=={version} is not in {lock.name}")
        elif locked[name].version != version:
            problems.append(
                f"{name}: {requirements.name} pins {version}, {lock.name} has "
                f"{locked[name].version}"
            )
    for package in locked.values():
        if package.top_level and package.name not in wanted:
            problems.append(
                f"{package.name} is locked as a requirement but {requirements.name}"
                " no longer names it"
            )
        if not package.hashes:
            problems.append(f"{package.name}=={package.version} has no --hash in {lock.name}")
    if problems:
        problems.append("run `make lock` and commit handler/requirements.lock")
    return problems

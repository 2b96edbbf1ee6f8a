"""Replay infra/Dockerfile's steps without Docker: what the image's file system would hold.

No Docker daemon (and no registry) is available to the tests, so this runs the Dockerfile the way
``docker build`` would, on folders: every stage gets a folder standing for its root file system;
``COPY`` copies from the build context (filtered by ``.dockerignore``, as the context Docker sends
is) or from another stage's folder; ``RUN`` runs its command with ``/bin/sh`` after mapping the
container's absolute paths (``/tmp``, ``/opt``, ``/var``) into the stage's folder; ``ARG``, ``ENV``
and ``--build-arg`` values are substituted as Docker does. The base image is an empty folder with
``LAMBDA_TASK_ROOT=/var/task``; its Python is this interpreter (``python`` on the ``PATH`` of every
``RUN``), and the ``pip install`` step is left out: this virtualenv already holds the worker's
packages (tests/functional/test_infra_image_check.py checks the image's own wheels on CPython
3.12). What it cannot show: the base image's system libraries (tests/functional/test_infra_abi.py).

    image_root = replay(DOCKERFILE, context=ROOT, work=tmp_path, build_args={"MODEL_VERSION": v})
    (image_root / "opt" / "model" / v).iterdir()
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# The base image's environment (public.ecr.aws/lambda/python: LAMBDA_TASK_ROOT=/var/task).
BASE_ENVIRONMENT = {"LAMBDA_TASK_ROOT": "/var/task", "LAMBDA_RUNTIME_DIR": "/var/runtime"}
# Container paths that RUN commands may name; each is mapped into the stage's folder.
_CONTAINER_PATH = re.compile(r"(?<![\w./-])/(tmp|opt|var)(?=/|\b)")
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
# The dependency install: this virtualenv holds the same packages (see the module docstring).
_PIP_INSTALL = re.compile(r"\bpip3? install\b")


class ReplayError(Exception):
    """A step failed as it would fail ``docker build`` (message: the step and its output)."""


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    steps, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        instruction, _, arguments = current.partition(" ")
        steps.append((instruction.upper(), arguments.strip()))
        current = ""
    return steps


def dockerignore_patterns(context: Path) -> list[str]:
    path = context / ".dockerignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; a directory covers its files."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob_pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch(prefix, glob_pattern) for prefix in prefixes):
            result = not negated
    return result


@dataclass
class _Stage:
    root: Path
    environment: dict[str, str]
    arguments: dict[str, str] = field(default_factory=dict)

    def substitute(self, text: str) -> str:
        values = {**self.environment, **self.arguments}
        return _VARIABLE.sub(lambda m: values.get(m.group(1) or m.group(2), ""), text)

    def inside(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")


def replay(
    dockerfile: Path,
    *,
    context: Path,
    work: Path,
    build_args: dict[str, str],
    skip_run: Callable[[str], bool] = lambda command: bool(_PIP_INSTALL.search(command)),
) -> Path:
    """Run the Dockerfile's steps on folders under ``work``; return the final stage's root."""
    patterns = dockerignore_patterns(context)
    stages: dict[str, _Stage] = {}
    global_arguments: dict[str, str] = {}
    stage: _Stage | None = None
    bin_dir = work / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    # A wrapper, not a symlink: a virtualenv's interpreter finds its packages by the path it was
    # started from.
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    for index, (instruction, arguments) in enumerate(instructions(dockerfile)):
        where = f"step {index + 1}: {instruction} {arguments[:120]}"
        if instruction == "ARG":
            name, has_default, default = arguments.partition("=")
            value = build_args.get(name, default.strip('"') if has_default else "")
            (stage.arguments if stage else global_arguments)[name] = value
        elif instruction == "FROM":
            words = arguments.split()
            parent = stages.get(words[0])
            root = work / f"stage-{len(stages)}"
            if parent is not None:
                shutil.copytree(parent.root, root, symlinks=True)
                stage = _Stage(root, dict(parent.environment))
            else:
                root.mkdir(parents=True)
                stage = _Stage(root, dict(BASE_ENVIRONMENT))
                stage.inside(BASE_ENVIRONMENT["LAMBDA_TASK_ROOT"]).mkdir(parents=True)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages[name] = stage
        elif stage is None:
            raise ReplayError(f"{where}: before the first FROM")
        elif instruction == "ENV":
            name, _, value = arguments.partition("=")
            stage.environment[name.strip()] = stage.substitute(value.strip().strip('"'))
        elif instruction == "COPY":
            _copy(stage, stage.substitute(arguments), context, patterns, stages, where)
        elif instruction == "RUN" and not skip_run(arguments):
            _run(stage, arguments, bin_dir, where)
        # LABEL and CMD change no file; the Dockerfile has no WORKDIR, ADD or USER.
    if stage is None:
        raise ReplayError(f"{dockerfile} has no FROM")
    return stage.root


def _copy(
    stage: _Stage,
    arguments: str,
    context: Path,
    patterns: list[str],
    stages: dict[str, _Stage],
    where: str,
) -> None:
    words = shlex.split(arguments)
    source_root, filtered = context, True
    while words and words[0].startswith("--"):
        flag = words.pop(0)
        if flag.startswith("--from="):
            source_root, filtered = stages[flag.split("=", 1)[1]].root, False
    *sources, destination = words
    target = stage.inside(destination)
    into_folder = destination.endswith("/") or len(sources) > 1
    copied = 0
    for source in sources:
        matches = sorted(glob.glob(str(source_root / source.lstrip("/"))))
        if not matches and not glob.has_magic(source):
            raise ReplayError(f"{where}: COPY failed: {source} not found in the build context")
        for match in map(Path, matches):
            if match.is_dir():
                for path in sorted(match.rglob("*")):
                    relative = path.relative_to(source_root).as_posix()
                    if path.is_dir() or (filtered and ignored(relative, patterns)):
                        continue
                    destination_path = target / path.relative_to(match)
                    destination_path.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, destination_path)
                    copied += 1
            else:
                if filtered and ignored(match.relative_to(source_root).as_posix(), patterns):
                    continue
                destination_path = target / match.name if into_folder else target
                destination_path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(match, destination_path)
                copied += 1
    if copied == 0:
        raise ReplayError(f"{where}: COPY failed: no source files were specified")


def _run(stage: _Stage, command: str, bin_dir: Path, where: str) -> None:
    mapped = _CONTAINER_PATH.sub(lambda m: f"{stage.root}/{m.group(1)}", command)
    for folder in ("tmp", "opt", "var"):
        (stage.root / folder).mkdir(exist_ok=True)
    environment = {
        **{
            name: _CONTAINER_PATH.sub(lambda m: f"{stage.root}/{m.group(1)}", value)
            for name, value in {**stage.environment, **stage.arguments}.items()
        },
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    completed = subprocess.run(
        ["/bin/sh", "-c", mapped],
        cwd=stage.inside(BASE_ENVIRONMENT["LAMBDA_TASK_ROOT"]),
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if completed.returncode != 0:
        raise ReplayError(
            f"{where}: exit status {completed.returncode}\n"
            f"{completed.stdout[-2000:]}{completed.stderr[-4000:]}"
        )

"""Can the worker's wheels load on the Lambda base image? Read, don't hope.

A manylinux tag is a promise made by the wheel's builder, not a measurement: the
``ai-edge-litert`` 2.3.0 aarch64 wheel is tagged ``manylinux_2_27`` but its core libraries need
``GLIBC_2.34`` and ``GLIBCXX_3.4.30`` (libstdc++ of GCC 12), one more than Amazon Linux 2023's
GCC 11 libstdc++ provides. On Lambda that is ``Runtime.ImportModuleError`` at every cold start.

This module downloads the wheels the image installs (``handler/requirements.lock``, hash-checked,
exactly the locked set; see :mod:`infra.lock`; or any requirements file with its dependencies,
for the image's architecture and Python), opens every ELF shared
library inside them, reads the symbol versions it needs from the system (``GLIBC_*`` from glibc,
``GLIBCXX_*`` and ``CXXABI_*`` from libstdc++) and compares the highest of each with what the
base image provides, as recorded with its sources in ``infra/base_image.json``.

    python -m infra.abi [--architecture x86_64|arm64] [--requirements FILE (default: the lock)]

prints one row per wheel (platform tag, highest GLIBC / GLIBCXX / CXXABI needed) and exits 1
when any library needs more than the base image has.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

from infra.lock import WORKER_LOCK

ROOT: Final[Path] = Path(__file__).resolve().parent.parent
BASE_IMAGE_PATH: Final[Path] = ROOT / "infra" / "base_image.json"
CACHE_ROOT: Final[Path] = ROOT / ".cache" / "wheels"

# Symbol version families checked, and the base image fact each is compared with.
FAMILIES: Final[dict[str, str]] = {"GLIBC": "glibc", "GLIBCXX": "glibcxx", "CXXABI": "cxxabi"}
_NEED = re.compile(r"^(GLIBC|GLIBCXX|CXXABI)_(\d+(?:\.\d+)*)$")

# Lambda's architecture names -> the ELF machine and the manylinux platform suffix.
ARCHITECTURES: Final[dict[str, tuple[str, str]]] = {
    "x86_64": ("EM_X86_64", "x86_64"),
    "arm64": ("EM_AARCH64", "aarch64"),
}
OLDEST_MANYLINUX_GLIBC: Final[int] = 17  # manylinux2014, the oldest tag pip still considers

# pip's messages when it could not reach the index at all (not: the index has no such wheel).
NETWORK_FAILURES: Final[tuple[str, ...]] = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "nodename nor servname",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ProxyError",
    "Connection refused",
    "No route to host",
)


class NetworkUnavailable(RuntimeError):
    """The package index could not be reached; nothing can be said about the wheels."""


Version = tuple[int, ...]


def parse_version(text: str) -> Version:
    """``"3.4.30"`` -> ``(3, 4, 30)``: compared as numbers, so 2.34 > 2.4."""
    return tuple(int(part) for part in text.split("."))


def format_version(version: Version | None) -> str:
    return "-" if version is None else ".".join(str(part) for part in version)


@dataclass(frozen=True)
class BaseImage:
    """What the image provides (``infra/base_image.json``; its sources are in the file)."""

    image: str
    architecture: str
    python: str
    maxima: dict[str, Version]  # family -> highest version provided

    @property
    def manylinux_platforms(self) -> list[str]:
        """Every manylinux tag pip inside the image accepts: its glibc down to manylinux2014."""
        _, suffix = ARCHITECTURES[self.architecture]
        glibc_minor = self.maxima["GLIBC"][1]
        tags = [
            f"manylinux_2_{minor}_{suffix}"
            for minor in range(glibc_minor, OLDEST_MANYLINUX_GLIBC - 1, -1)
        ]
        return [*tags, f"manylinux2014_{suffix}"]


def load_base_image(path: Path = BASE_IMAGE_PATH, architecture: str | None = None) -> BaseImage:
    """The recorded base image; ``architecture`` overrides the chosen one (same OS, same libs)."""
    facts = json.loads(path.read_text())
    architecture = architecture or facts["architecture"]
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; one of {sorted(ARCHITECTURES)}")
    return BaseImage(
        image=facts["images"][architecture],
        architecture=architecture,
        python=facts["python"],
        maxima={family: parse_version(facts[key]) for family, key in FAMILIES.items()},
    )


@dataclass(frozen=True)
class LibraryNeeds:
    """The highest system symbol version of each family that one shared library needs."""

    wheel: str
    library: str
    machine: str
    needs: dict[str, Version]

    def violations(self, base: BaseImage) -> list[str]:
        return [
            f"{self.wheel}: {self.library} needs {family}_{format_version(version)}, "
            f"{base.image} has {family}_{format_version(base.maxima[family])}"
            for family, version in sorted(self.needs.items())
            if version > base.maxima[family]
        ]


def version_needs(stream: io.BufferedIOBase | io.BytesIO) -> tuple[str, dict[str, Version]]:
    """(ELF machine, {family: highest version needed}) of one ELF file (``.gnu.version_r``)."""
    elf = ELFFile(stream)
    needs: dict[str, Version] = {}
    for section in elf.iter_sections():
        if not isinstance(section, GNUVerNeedSection):
            continue
        for _, auxiliaries in section.iter_versions():
            for auxiliary in auxiliaries:
                match = _NEED.match(auxiliary.name)
                if match:
                    family, version = match.group(1), parse_version(match.group(2))
                    needs[family] = max(needs.get(family, version), version)
    return elf["e_machine"], needs


def wheel_libraries(wheel: Path) -> Iterator[LibraryNeeds]:
    """Every ELF file inside a wheel (extension modules and vendored ``*.libs/`` libraries)."""
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            if member.is_dir() or not re.search(r"\.so(\.|$)", member.filename):
                continue
            data = archive.read(member)
            if not data.startswith(b"\x7fELF"):
                continue
            machine, needs = version_needs(io.BytesIO(data))
            yield LibraryNeeds(wheel.name, member.filename, machine, needs)


def platform_tag(wheel: Path) -> str:
    """The platform part of a wheel's file name (``py3-none-any`` wheels say ``any``)."""
    return wheel.name[: -len(".whl")].split("-")[-1]


def download_wheels(
    requirements: list[str] | Path,
    base: BaseImage,
    cache_root: Path = CACHE_ROOT,
    *,
    with_dependencies: bool = True,
    timeout_seconds: int = 15,
) -> list[Path]:
    """The wheels pip would install in ``base`` for ``requirements``, cached under ``cache_root``.

    A cache folder is keyed by the requirements, the platform and the Python version and is only
    reused once a download into it completed. Raises :class:`NetworkUnavailable` when the index
    cannot be reached, ``RuntimeError`` with pip's output for anything else (a pin without a wheel
    for the platform is such a finding).
    """
    text = requirements.read_text() if isinstance(requirements, Path) else "\n".join(requirements)
    # A lock (every file hashed) is downloaded as it is: hash-checked, nothing beyond it, so the
    # check reads exactly the files the image's `pip install --require-hashes` accepts.
    locked = "--hash=sha256:" in text
    if locked:
        with_dependencies = False
        pins = [text]
    else:
        lines = text.splitlines()
        pins = sorted(
            line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()
        )
    key = hashlib.sha256(
        json.dumps([pins, base.manylinux_platforms, base.python, with_dependencies]).encode()
    ).hexdigest()[:16]
    folder = cache_root / f"{base.architecture}-cp{base.python.replace('.', '')}-{key}"
    if (folder / "COMPLETE").is_file():
        return _cached(folder)

    # Download into a private folder and rename it into place: two test workers never see a
    # half-filled cache folder.
    partial = cache_root / f"{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    requirements_file = partial / "requirements.txt"
    requirements_file.write_text(text if locked else "\n".join(pins) + "\n")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        *(f"--platform={tag}" for tag in base.manylinux_platforms),
        f"--python-version={base.python}",
        "--implementation=cp",
        f"--abi=cp{base.python.replace('.', '')}",
        f"--timeout={timeout_seconds}",
        "--retries=1",
        "--dest",
        str(partial),
        "--requirement",
        str(requirements_file),
    ]
    if not with_dependencies:
        command.append("--no-deps")
    if locked:
        command.append("--require-hashes")
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        if any(marker in output for marker in NETWORK_FAILURES):
            raise NetworkUnavailable(
                "cannot reach the package index to download the worker's wheels"
            )
        raise RuntimeError(f"pip download failed for {base.architecture}:\n{output[-3000:]}")
    wheels = sorted(path.name for path in partial.glob("*.whl"))
    (partial / "COMPLETE").write_text("\n".join(wheels) + "\n")
    try:
        partial.rename(folder)
    except OSError:  # another process finished the same download first
        shutil.rmtree(partial, ignore_errors=True)
    return _cached(folder)


def _cached(folder: Path) -> list[Path]:
    return [folder / name for name in (folder / "COMPLETE").read_text().split()]


def check_wheels(wheels: Iterable[Path], base: BaseImage) -> tuple[list[LibraryNeeds], list[str]]:
    """Every library's needs, and one line per need the base image does not meet (or per
    library built for another machine)."""
    expected_machine, _ = ARCHITECTURES[base.architecture]
    libraries: list[LibraryNeeds] = []
    problems: list[str] = []
    for wheel in wheels:
        for library in wheel_libraries(wheel):
            libraries.append(library)
            if library.machine != expected_machine:
                problems.append(
                    f"{library.wheel}: {library.library} is built for {library.machine}, "
                    f"the image runs {expected_machine}"
                )
            problems.extend(library.violations(base))
    return libraries, problems


def wheel_table(wheels: Iterable[Path], libraries: list[LibraryNeeds]) -> list[dict[str, Any]]:
    """One row per wheel with native code: its tag and the highest version of each family."""
    rows = []
    for wheel in wheels:
        own = [library for library in libraries if library.wheel == wheel.name]
        if not own:
            continue
        highest = {
            family: max((lib.needs[family] for lib in own if family in lib.needs), default=None)
            for family in FAMILIES
        }
        rows.append(
            {
                "wheel": wheel.name,
                "platform_tag": platform_tag(wheel),
                "libraries": len(own),
                **{family: format_version(version) for family, version in highest.items()},
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.abi", description=__doc__.split("\n")[0])
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default=None)
    parser.add_argument("--requirements", type=Path, default=WORKER_LOCK)
    arguments = parser.parse_args(argv)
    base = load_base_image(architecture=arguments.architecture)
    try:
        wheels = download_wheels(arguments.requirements, base)
    except NetworkUnavailable as error:
        print(error, file=sys.stderr)
        return 2
    libraries, problems = check_wheels(wheels, base)
    print(f"{base.image}: GLIBC {format_version(base.maxima['GLIBC'])}, ", end="")
    print(f"GLIBCXX {format_version(base.maxima['GLIBCXX'])}, ", end="")
    print(f"CXXABI {format_version(base.maxima['CXXABI'])}")
    print(f"{'wheel':<78} {'tag':<42} {'GLIBC':>6} {'GLIBCXX':>8} {'CXXABI':>7}")
    for row in wheel_table(wheels, libraries):
        print(
            f"{row['wheel']:<78} {row['platform_tag']:<42} {row['GLIBC']:>6} "
            f"{row['GLIBCXX']:>8} {row['CXXABI']:>7}"
        )
    for problem in problems:
        print("INCOMPATIBLE", problem)
    print(f"{len(libraries)} shared libraries in {len(wheels)} wheels; {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

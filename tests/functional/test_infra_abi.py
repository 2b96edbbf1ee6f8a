"""The worker's wheels load on the Lambda base image: every shared library's GLIBC / GLIBCXX /
CXXABI needs, read from its ELF version section, are within what infra/base_image.json records.

The wheels are downloaded once (what pip would install in the image, for its architecture and
Python) into .cache/wheels/ and reused. Without a reachable package index the download tests skip
with one line; everything else here runs offline.
"""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest
from numpy._core import _multiarray_umath

from infra.abi import (
    BASE_IMAGE_PATH,
    BaseImage,
    LibraryNeeds,
    NetworkUnavailable,
    check_wheels,
    download_wheels,
    load_base_image,
    parse_version,
    version_needs,
    wheel_table,
)
from infra.lock import WORKER_LOCK, WORKER_REQUIREMENTS, read_lock
from local_stack.resources import read_template

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]
FACTS = json.loads(BASE_IMAGE_PATH.read_text())


def wheels_or_skip(requirements: list[str] | Path, base: BaseImage, **options: bool) -> list[Path]:
    try:
        return download_wheels(requirements, base, **options)
    except NetworkUnavailable as error:
        pytest.skip(f"{error} (no network): ABI check not run")


def litert_pin() -> str:
    (pin,) = [
        line.strip()
        for line in WORKER_REQUIREMENTS.read_text().splitlines()
        if line.startswith("ai-edge-litert")
    ]
    return pin


# --- the recorded facts -------------------------------------------------------------------------


def test_the_base_image_facts_name_their_sources() -> None:
    assert FACTS["os"] == "Amazon Linux 2023"
    for key in ("glibc", "glibcxx", "cxxabi"):
        parse_version(FACTS[key])
    sources = " ".join(fact["source"] for fact in FACTS["facts"])
    assert "docs.aws.amazon.com/linux/al2023" in sources
    assert "docs.aws.amazon.com/lambda" in sources
    assert "gcc.gnu.org" in sources
    if FACTS["digest"] is None:
        assert "docker buildx imagetools inspect" in FACTS["digest_note"]


def test_the_chosen_image_is_the_dockerfiles_and_the_templates() -> None:
    base = load_base_image()
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    # The first FROM is the base image; the later stages build on it by its stage name.
    image = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.MULTILINE)[0]
    expected = base.image if FACTS["digest"] is None else f"{base.image}@{FACTS['digest']}"
    assert image == expected
    function = read_template()["Resources"]["CatalogueFunction"]["Properties"]
    assert function["Architectures"] == [base.architecture]
    assert base.python == "3.12"


def test_pip_inside_the_image_would_accept_these_platform_tags() -> None:
    platforms = load_base_image(architecture="arm64").manylinux_platforms
    assert platforms[0] == "manylinux_2_34_aarch64"
    assert "manylinux_2_27_aarch64" in platforms
    assert platforms[-1] == "manylinux2014_aarch64"
    assert not [tag for tag in platforms if tag.startswith("manylinux_2_35")]


# --- reading ELF version needs --------------------------------------------------------------------


def test_versions_compare_as_numbers() -> None:
    assert parse_version("2.34") > parse_version("2.4")
    assert parse_version("3.4.30") > parse_version("3.4.29")
    assert parse_version("3.4.9") < parse_version("3.4.21")


def test_reads_the_version_needs_of_a_real_library() -> None:
    """numpy's core extension module, as installed for this interpreter, needs glibc."""
    with open(_multiarray_umath.__file__, "rb") as stream:
        machine, needs = version_needs(io.BytesIO(stream.read()))
    assert machine.startswith("EM_")
    assert needs["GLIBC"] >= (2, 2)


def test_a_need_above_the_base_image_is_a_violation() -> None:
    base = load_base_image()
    library = LibraryNeeds(
        wheel="w.whl",
        library="lib/x.so",
        machine="EM_X86_64",
        needs={"GLIBC": (2, 34), "GLIBCXX": (3, 4, 30)},
    )
    (problem,) = library.violations(base)
    assert "lib/x.so needs GLIBCXX_3.4.30" in problem
    assert "has GLIBCXX_3.4.29" in problem


# --- the worker's wheels ------------------------------------------------------------------------


def test_every_shared_library_of_the_worker_wheels_loads_on_the_base_image() -> None:
    base = load_base_image()
    wheels = wheels_or_skip(WORKER_LOCK, base)
    libraries, problems = check_wheels(wheels, base)
    # Exactly the locked set, one wheel per locked package, at the locked version.
    locked = {(p.name, p.version) for p in read_lock().values()}
    downloaded = {
        (re.sub(r"[-_.]+", "-", w.name.split("-")[0]).lower(), w.name.split("-")[1]) for w in wheels
    }
    assert downloaded == locked

    assert problems == []
    # Not vacuous: LiteRT's core libraries, numpy and Pillow were among those read.
    checked = {library.library for library in libraries}
    assert "ai_edge_litert/libLiteRt.so" in checked
    assert any(name.startswith("numpy/_core/_multiarray_umath") for name in checked)
    assert any(name.startswith("PIL/_imaging.") for name in checked)
    table = {row["wheel"].split("-")[0]: row for row in wheel_table(wheels, libraries)}
    assert {"ai_edge_litert", "numpy", "pillow", "pillow_heif", "pydantic_core"} <= set(table)
    print(json.dumps(list(table.values()), indent=1), file=sys.stderr)


def test_the_check_rejects_litert_2_3_on_arm64() -> None:
    """Why the function is not on arm64: the same pin's aarch64 wheel needs GCC 12's libstdc++."""
    base = load_base_image(architecture="arm64")
    wheels = wheels_or_skip([litert_pin()], base, with_dependencies=False)
    _, problems = check_wheels(wheels, base)

    # If this fails, the pinned LiteRT's aarch64 wheel now fits Amazon Linux 2023: arm64 (about
    # 20% cheaper) is possible again; re-run python -m infra.abi --architecture arm64 and update
    # infra/base_image.json, the Dockerfile's FROM and the template's Architectures together.
    assert any("libLiteRt.so needs GLIBCXX_3.4.30" in problem for problem in problems), problems

"""The documentation says what the code does: every flag of every command is documented in
docs/reference.md with its default shown in ``--help``, every status and reason the code can write
is in docs/statuses.md, and every link between the pages reaches a page and a heading that exist.
"""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import get_args

import pytest

from contracts.catalogue import ReviewOutcome, Status
from contracts.image import RejectionReason
from contracts.unfamiliarity import REASON_UNFAMILIAR
from handler.worker import RefusalReason

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference.md"

# Every command a user runs, as docs/reference.md heads its section.
COMMANDS: dict[str, list[str]] = {
    "python -m model_build.train": ["-m", "model_build.train"],
    "python -m model_build.evaluate": ["-m", "model_build.evaluate"],
    "python -m model_build.export": ["-m", "model_build.export"],
    "python -m model_build.publish": ["-m", "model_build.publish"],
    "python -m model_build.audit": ["-m", "model_build.audit"],
    "python -m local_stack": ["-m", "local_stack"],
    "python -m review": ["-m", "review"],
    "python -m review.reviewed_dataset": ["-m", "review.reviewed_dataset"],
    "python -m review.agreement": ["-m", "review.agreement"],
    "python -m operations.backfill": ["-m", "operations.backfill"],
    "python -m infra.stage_model": ["-m", "infra.stage_model"],
    "python infra/image_check.py": ["infra/image_check.py"],
}
_OPTION_LINE = re.compile(r"^  (?:-\w, )?(--[\w-]+)(?: \S+)?(?: {2,}|$)")
_FLAG = re.compile(r"`(--[\w-]+)")


@cache
def help_texts() -> dict[str, str]:
    """``--help`` of every command, run as a user runs it (in parallel: each imports a lot)."""

    def run(arguments: list[str]) -> str:
        completed = subprocess.run(
            [sys.executable, *arguments, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={"TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "100", "PATH": "/usr/bin:/bin"},
        )
        assert completed.returncode == 0, completed.stderr[-2000:]
        return completed.stdout

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(COMMANDS, pool.map(run, COMMANDS.values()), strict=True))


def options_in_help(text: str) -> dict[str, str]:
    """``{flag: its help text, whitespace collapsed}`` from an argparse ``--help``."""
    options: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        match = _OPTION_LINE.match(line)
        if match:
            current = match.group(1)
            options[current] = line[match.end() :]
        elif current and line.startswith("    "):
            options[current] += " " + line
        else:
            current = None
    options.pop("--help", None)
    return {flag: " ".join(words.split()) for flag, words in options.items()}


def reference_sections() -> dict[str, str]:
    """``{"python -m …": the section's text}`` of docs/reference.md's "### " headings."""
    sections, current = {}, None
    for line in REFERENCE.read_text().splitlines():
        if line.startswith("#"):
            current = line[4:].strip() if line.startswith("### ") else None
            if current is not None:
                sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def documented_flags(section: str) -> set[str]:
    """Flags in the first column of the section's table."""
    return {
        match.group(1)
        for line in section.splitlines()
        if line.startswith("| `--")
        for match in [_FLAG.match(line[2:])]
        if match
    }


def test_options_in_help_reads_argparse_output() -> None:
    text = (
        "options:\n  -h, --help            show this help message and exit\n"
        "  --data DATA           dataset folder,\n                        given again"
        " (default: none)\n  --fresh               start anew (default: off)\n"
    )
    assert options_in_help(text) == {
        "--data": "dataset folder, given again (default: none)",
        "--fresh": "start anew (default: off)",
    }


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_has_help_with_its_default(command: str) -> None:
    options = options_in_help(help_texts()[command])
    undocumented = [
        flag for flag, text in options.items() if "(default" not in text and "required" not in text
    ]
    assert options, f"no options parsed from {command} --help"
    assert undocumented == [], f"{command}: flags without help text and default: {undocumented}"


@pytest.mark.parametrize("command", COMMANDS)
def test_reference_documents_exactly_the_flags_of_each_command(command: str) -> None:
    sections = reference_sections()
    assert command in sections, f"docs/reference.md has no section '### {command}'"
    in_help = set(options_in_help(help_texts()[command]))
    in_docs = documented_flags(sections[command])
    assert in_help - in_docs == set(), f"{command}: in --help, not in docs/reference.md"
    assert in_docs - in_help == set(), f"{command}: in docs/reference.md, not in --help"


def test_reference_has_no_section_for_a_command_that_is_not_checked() -> None:
    extra = set(reference_sections()) - set(COMMANDS)
    assert extra == set(), f"sections of docs/reference.md no test checks: {extra}"


def test_documented_flags_reads_the_first_column_only() -> None:
    section = "| flag | default |\n|---|---|\n| `--a N` | 1 (see `--b`) |\n| `--c` | off |\n"
    assert documented_flags(section) == {"--a", "--c"}


# --- statuses and reasons --------------------------------------------------------------------


def test_every_status_and_reason_the_code_writes_is_in_the_statuses_table() -> None:
    table = (DOCS / "statuses.md").read_text()
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| `")]
    statuses = {row[1].strip().strip("`") for row in rows}
    reasons = {row[2].strip().strip("`") for row in rows} - {"—"}
    rejected_by_people = {ReviewOutcome.NOT_A_PRODUCT.value, ReviewOutcome.UNUSABLE.value}
    code_reasons = {
        *get_args(RejectionReason),
        *get_args(RefusalReason),
        REASON_UNFAMILIAR,
        *rejected_by_people,
    }
    assert statuses == {status.value for status in Status}
    assert code_reasons - reasons == set(), "reasons the code writes, missing from the table"
    assert reasons - code_reasons == set(), "reasons in the table the code never writes"


# --- links between the pages -----------------------------------------------------------------

_LINK = re.compile(r"\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """GitHub's heading id: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, fenced = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            found.add(github_anchor(line.lstrip("#")))
    return found


def test_github_anchor_matches_githubs_rule() -> None:
    assert github_anchor(" 5. The dead-letter queue") == "5-the-dead-letter-queue"
    assert github_anchor(" The catalogue (contract 5)") == "the-catalogue-contract-5"
    assert github_anchor(" python -m model_build.train") == "python--m-model_buildtrain"


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda path: path.name
)
def test_every_link_reaches_a_page_and_heading_that_exist(page: Path) -> None:
    broken = []
    for target in _LINK.findall(page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        heading_missing = (
            anchor and destination.suffix == ".md" and anchor not in anchors(destination)
        )
        if not destination.exists() or heading_missing:
            broken.append(target)
    assert broken == []

"""The worker's Lambda image has no TensorFlow: not in its requirements, not imported."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPOSITORY_ROOT

FORBIDDEN = ("tensorflow", "keras", "tf-keras", "tf_keras", "tensorflow-cpu", "tf-nightly")


def test_handler_requirements_have_no_tensorflow() -> None:
    lines = (REPOSITORY_ROOT / "handler" / "requirements.txt").read_text().splitlines()
    names = [
        re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower()
        for line in lines
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "ai-edge-litert" in names
    assert not [name for name in names if name in FORBIDDEN or name.startswith("tensorflow")]


def test_importing_the_handler_does_not_import_tensorflow() -> None:
    script = (
        "import sys\n"
        "import handler.app, local_stack.stack, operations.backfill\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(','.join(loaded))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert completed.stdout.strip() == ""

"""Where a running local stack can be found: ``python -m local_stack --serve`` writes it, tools
such as the review console (``python -m review`` with no arguments) read it.

The file (``.cache/local-stack.json`` under the working directory, or ``$MOMEE_LOCAL_STACK_STATE``)
holds the moto endpoint, region, bucket, table and the serving process's id; it is removed when
that process stops. A file left behind by a process that died is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

STATE_ENV: Final[str] = "MOMEE_LOCAL_STACK_STATE"
DEFAULT_STATE_PATH: Final[Path] = Path(".cache") / "local-stack.json"


@dataclass(frozen=True)
class LocalStackState:
    endpoint_url: str
    region: str
    bucket: str
    table: str
    queue_url: str
    model_uri: str | None
    pid: int


def state_path() -> Path:
    return Path(os.environ.get(STATE_ENV) or DEFAULT_STATE_PATH)


def write_state(state: LocalStackState, path: Path | None = None) -> Path:
    target = path or state_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(state), indent=2))
    temporary.replace(target)
    return target


def read_state(path: Path | None = None) -> LocalStackState | None:
    """The running local stack, or ``None`` when there is none (no file, or its process died)."""
    target = path or state_path()
    try:
        state = LocalStackState(**json.loads(target.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None
    return state if _alive(state.pid) else None


def remove_state(path: Path | None = None) -> None:
    with contextlib.suppress(FileNotFoundError):
        (path or state_path()).unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

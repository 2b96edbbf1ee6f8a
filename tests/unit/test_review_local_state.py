"""How ``python -m review`` finds the local stack: the state file ``--serve`` writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from local_stack.state import LocalStackState, read_state, remove_state, write_state
from review.__main__ import main


def state(pid: int) -> LocalStackState:
    return LocalStackState(
        endpoint_url="http://127.0.0.1:5000",
        region="eu-west-1",
        bucket="b",
        table="t",
        queue_url="http://127.0.0.1:5000/q",
        model_uri=None,
        pid=pid,
    )


def test_state_round_trip_and_removal(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "local-stack.json"
    write_state(state(os.getpid()), path)
    assert read_state(path) == state(os.getpid())
    remove_state(path)
    assert read_state(path) is None
    remove_state(path)  # twice: harmless


def test_state_of_a_process_that_died_is_ignored(tmp_path: Path) -> None:
    path = write_state(state(2**22 + 12345), tmp_path / "s.json")  # above Linux's pid_max default
    assert read_state(path) is None
    path.write_text("{not json")
    assert read_state(path) is None


def test_console_without_names_or_a_running_stack_says_how_to_start_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MOMEE_LOCAL_STACK_STATE", str(tmp_path / "none.json"))
    assert main([]) == 2
    assert "python -m local_stack --serve" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--table", "t"])

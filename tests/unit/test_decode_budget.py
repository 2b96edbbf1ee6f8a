"""Issue 9: decodes are admitted against the container's memory budget."""

from __future__ import annotations

import threading
import time

import pytest

from contracts.image import ImageRejected
from handler.decode_budget import MIB, RUNTIME_RESERVE_MB, DecodeBudget
from handler.settings import load_settings


def test_the_budget_is_the_function_memory_less_the_runtime_reserve():
    assert DecodeBudget.for_function_memory(1024).total_bytes == (1024 - RUNTIME_RESERVE_MB) * MIB
    assert DecodeBudget.for_function_memory(3008).total_bytes == (3008 - RUNTIME_RESERVE_MB) * MIB
    # A tiny function still decodes small photos.
    assert DecodeBudget.for_function_memory(256).total_bytes == 128 * MIB


def test_the_function_memory_comes_from_lambdas_own_variable(monkeypatch):
    monkeypatch.setenv("CATALOGUE_TABLE", "table")
    monkeypatch.setenv("MODEL_URI", "/models")
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", raising=False)
    assert load_settings().aws_lambda_function_memory_size == 1024
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")
    assert load_settings().aws_lambda_function_memory_size == 2048


def test_a_decode_bigger_than_the_whole_budget_is_refused_at_once():
    budget = DecodeBudget(100)
    with pytest.raises(ImageRejected) as raised, budget.reserve(101):
        pass
    assert raised.value.reason == "too_much_memory"
    assert budget.available_bytes == 100


def test_a_decode_waits_until_the_others_give_enough_back():
    # GIVEN a budget of 100 with 80 held by a running decode
    budget = DecodeBudget(100)
    admitted = threading.Event()
    release_first = threading.Event()

    def first() -> None:
        with budget.reserve(80):
            release_first.wait(5)

    def second() -> None:
        with budget.reserve(50):
            admitted.set()

    running = threading.Thread(target=first)
    running.start()
    while budget.available_bytes != 20:
        time.sleep(0.001)
    waiting = threading.Thread(target=second)
    waiting.start()
    # WHEN a decode of 50 asks THEN it waits while the 80 are held
    assert not admitted.wait(0.2)
    # AND runs once they are given back
    release_first.set()
    assert admitted.wait(5)
    running.join(5)
    waiting.join(5)
    assert budget.available_bytes == 100


def test_what_was_reserved_is_given_back_when_the_decode_fails():
    budget = DecodeBudget(100)
    with pytest.raises(RuntimeError), budget.reserve(60):
        raise RuntimeError("decoder failed")
    assert budget.available_bytes == 100


def test_concurrent_decodes_never_hold_more_than_the_budget():
    budget = DecodeBudget(100)
    held = []
    lock = threading.Lock()
    current = [0]

    def decode(cost: int) -> None:
        with budget.reserve(cost):
            with lock:
                current[0] += cost
                held.append(current[0])
            time.sleep(0.002)
            with lock:
                current[0] -= cost

    threads = [threading.Thread(target=decode, args=(cost,)) for cost in [30, 70, 50, 90, 10] * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert max(held) <= 100
    assert budget.available_bytes == 100

"""Waiting in tests for something that happens elsewhere (a process, a node, a thread):
poll, bounded, and fail the test naming what never happened."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest
import trio

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str, *,
             every_s: float = 0.05) -> T:
    """Poll `check` every `every_s` until it returns something other than None, and
    return that; fail the test after `timeout_s`, naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, *,
               every_s: float = 0.05) -> None:
    """Poll `predicate` until it holds; fail the test after `timeout_s`, naming `what`."""
    wait_for(lambda: True if predicate() else None, timeout_s, what, every_s=every_s)


async def await_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """In trio: check `predicate` every 5 ms until it holds; fail after `timeout_s`."""
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(0.005)

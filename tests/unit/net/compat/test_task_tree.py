"""Service manager: stock py-libp2p 0.8.1 walks its whole task tree to find the parent of
every task started from outside it (pubsub: one per gossip message); memoized, once per
calling task. On real hosts: tests/integration/test_net_upkeep.py."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import pytest
import trio
from libp2p.tools.anyio_service import Service, background_trio_service
from libp2p.tools.anyio_service.trio_tasks import FunctionTask

from p2pinfer.net.compat import task_tree
from p2pinfer.net.compat.task_tree import memoize_task_parents
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

STARTS = 20


class Busy(Service):
    """A service with a few tasks of its own, so that there is a tree to walk."""

    async def run(self) -> None:
        for _ in range(5):
            self.manager.run_task(trio.sleep_forever)
        await self.manager.wait_finished()


def count_walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    walks: list[int] = []
    iterate = FunctionTask.iterate_tasks.__func__  # type: ignore[attr-defined]

    def counting(cls: type[FunctionTask], *tasks: Any) -> Any:
        callers = traceback.walk_stack(sys._getframe(1))  # from our caller up
        if not any(f.f_code.co_name == "iterate_tasks" for f, _ in callers):
            walks.append(len(tasks))  # a walk's top call, not its recursion
        return iterate(cls, *tasks)

    monkeypatch.setattr(FunctionTask, "iterate_tasks", classmethod(counting))
    return walks


async def start_tasks_from_outside(monkeypatch: pytest.MonkeyPatch, *, memoize: bool) -> int:
    walks = count_walks(monkeypatch)
    async with background_trio_service(Busy()) as manager:
        await trio.sleep(0.01)  # Busy has started its own tasks (from its own trio task)
        if memoize:
            assert memoize_task_parents(manager)
            assert memoize_task_parents(manager)  # idempotent
        walks.clear()
        for _ in range(STARTS):
            manager.run_task(trio.sleep, 0)
        await trio.sleep(0.01)
        manager.cancel()
    return len(walks)


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(task_tree)


async def test_defect_stock_libp2p_walks_the_tree_for_every_task_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # If this fails, upstream stopped walking per task: drop the workaround.
    assert await start_tasks_from_outside(monkeypatch, memoize=False) >= STARTS


async def test_memoized_the_tree_is_walked_once_per_calling_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert await start_tasks_from_outside(monkeypatch, memoize=True) == 1


def test_a_manager_of_another_kind_is_left_alone() -> None:
    assert memoize_task_parents(object()) is False  # type: ignore[arg-type]

"""`tasks.beside`: work with a watcher task beside it (the engine's stop event, an HTTP
route's disconnect watch)."""

from __future__ import annotations

import pytest
import trio

from p2pinfer.tasks import beside


async def test_the_works_result_comes_back_and_the_watcher_is_cancelled() -> None:
    watcher_ended = trio.Event()

    async def watch(_: trio.CancelScope) -> None:
        try:
            await trio.sleep_forever()
        finally:
            watcher_ended.set()

    async def work() -> int:
        await trio.sleep(0)
        return 7

    assert await beside(watch, work) == 7
    assert watcher_ended.is_set()


async def test_a_watcher_that_cancels_the_work_gives_none() -> None:
    async def watch(scope: trio.CancelScope) -> None:
        await trio.sleep(0.01)  # the client went away
        scope.cancel()

    async def work() -> int:
        await trio.sleep_forever()
        raise AssertionError("never")

    with trio.fail_after(5):
        assert await beside(watch, work) is None


async def test_the_works_error_is_raised_as_it_came_not_in_a_group() -> None:
    async def watch(scope: trio.CancelScope) -> None:
        await trio.sleep_forever()

    async def work() -> int:
        await trio.sleep(0)
        raise ValueError("a model that does not embed")

    with pytest.raises(ValueError, match="does not embed"):
        await beside(watch, work)

"""A small trio helper shared by the layers: work with a watcher task beside it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

_T = TypeVar("_T")


async def beside(
    watch: Callable[[trio.CancelScope], Awaitable[None]], work: Callable[[], Awaitable[_T]]
) -> _T | None:
    """`await work()` while `watch(scope)` runs beside it; the watcher may cancel `scope`,
    the work's (None is returned then), and is itself cancelled when the work ends. An
    error of the work is raised as it came, not inside trio's (strict) exception group,
    so callers catch it as usual, also when a cancellation arrives at the same time."""
    result: _T | None = None
    error: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, nursery.cancel_scope)
        try:
            result = await work()
        except Exception as exc:  # raised below, outside the nursery
            error = exc
        finally:
            nursery.cancel_scope.cancel()
    if error is not None:
        raise error
    return result

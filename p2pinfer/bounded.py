"""Tables that remember the most recent entries only, and lists read up to a limit: what
a peer's messages fill (keys it used, relays it named, peers it asked) or name (ids,
addresses) must not grow without bound."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def keep_latest(table: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    """Put `key` last in `table` with `value`; drop the oldest beyond `limit` entries."""
    table.pop(key, None)
    table[key] = value
    while len(table) > limit:
        table.popitem(last=False)


T = TypeVar("T")


def first_distinct(items: Iterable[T], limit: int) -> list[T]:
    """The first `limit` distinct items of `items`, in order (a peer's list may repeat
    itself and run long: what reads it stops at `limit`)."""
    kept: list[T] = []
    seen: set[T] = set()
    for item in items:
        if len(kept) >= limit:
            break
        if item not in seen:
            seen.add(item)
            kept.append(item)
    return kept

"""Tables that remember the most recent entries only: what a peer's messages fill (keys it
used, relays it named, peers it asked) must not grow without bound."""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def keep_latest(table: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    """Put `key` last in `table` with `value`; drop the oldest beyond `limit` entries."""
    table.pop(key, None)
    table[key] = value
    while len(table) > limit:
        table.popitem(last=False)

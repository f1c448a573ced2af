"""`keep_latest`: the one bounded most-recent table that admission, AutoNAT and the relay
client remember peers' keys and addresses in."""

from __future__ import annotations

from collections import OrderedDict

from p2pinfer.bounded import keep_latest


def test_a_swarm_of_new_keys_leaves_only_the_latest_limit_entries() -> None:
    table: OrderedDict[str, int] = OrderedDict()
    keep_latest(table, "honest", 1, limit=3)
    for i in range(10):
        keep_latest(table, f"sybil-{i}", i, limit=3)
    assert list(table) == ["sybil-7", "sybil-8", "sybil-9"]  # "honest" aged out
    assert len(table) == 3


def test_a_key_seen_again_takes_its_new_value_and_moves_last() -> None:
    table: OrderedDict[str, int] = OrderedDict()
    for key in ("a", "b", "c"):
        keep_latest(table, key, 0, limit=3)
    keep_latest(table, "a", 7, limit=3)
    keep_latest(table, "d", 0, limit=3)
    assert list(table.items()) == [("c", 0), ("a", 7), ("d", 0)]

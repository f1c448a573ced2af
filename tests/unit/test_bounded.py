"""`keep_latest`: the one bounded most-recent table that admission, AutoNAT and the relay
client remember peers' keys and addresses in."""

from __future__ import annotations

from collections import OrderedDict

from p2pinfer.bounded import Held, PerMinute, RateLimiter, keep_latest


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


def test_per_minute_counts_each_key_and_all_keys_and_forgets_idle_keys() -> None:
    now = [0.0]
    rates: PerMinute[str] = PerMinute(max_keys=3, clock=lambda: now[0])
    assert [rates.admit("a", 2, 3) for _ in range(3)] == [True, True, False]  # a's own 2
    assert rates.admit("b", 2, 3) and not rates.admit("c", 2, 3)  # all keys' 3
    assert rates.admit("proven", 2, None)  # outside the budget of all keys
    now[0] = 61.0  # a minute later every window is empty again
    assert rates.admit("c", 2, 3) and rates.admit("a", 2, 3)
    assert rates.admit("d", 2, 3) and len(rates._keys) <= 3  # idle "b", "proven" forgotten


def test_refused_keys_take_no_room_and_many_active_keys_stay_bounded() -> None:
    """The attack: fresh keys ask while the budget of all keys is spent. Each refused ask
    stored an empty window that only an admitted ask swept away, so every fresh key
    stayed (a million keys, a million entries); and keys outside the budget of all keys
    (`in_all` None), all active within a minute, were never forgotten either."""
    now = [0.0]
    rates: PerMinute[str] = PerMinute(max_keys=100, clock=lambda: now[0])
    assert rates.admit("first", 2, 1)
    assert not any(rates.admit(f"fresh{i}", 2, 1) for i in range(10_000))
    assert len(rates._keys) <= 100
    assert not rates.admit("first", 2, 1)  # still counted: the budget of all is spent
    assert all(rates.admit(f"active{i}", 2, None) for i in range(10_000))
    assert len(rates._keys) <= 100
    # The latest keys keep their counts; a key's own limit holds while it is kept.
    assert rates.admit("active9999", 2, None) and not rates.admit("active9999", 2, None)


def test_per_minute_says_how_long_a_key_at_its_limit_waits_without_counting() -> None:
    now = [0.0]
    rates: PerMinute[str] = PerMinute(clock=lambda: now[0])
    assert rates.wait_s("a", 2) == 0.0 and rates.wait_s("a", 2) == 0.0  # nothing counted
    rates.admit("a", 2, None)
    now[0] = 10.0
    rates.admit("a", 2, None)
    assert rates.wait_s("a", 2) == 50.0  # until the first leaves the minute
    assert rates.wait_s("a", 3) == 0.0 and rates.wait_s("b", 2) == 0.0
    now[0] = 60.5
    assert rates.wait_s("a", 2) == 0.0


def test_a_rate_limiter_charges_each_request_its_cost() -> None:
    now = [0.0]
    bytes_per_s = RateLimiter(100.0, 1_000, lambda: now[0])
    assert bytes_per_s.acquire("peer", 600) == 0.0
    assert bytes_per_s.acquire("peer", 600) == 2.0  # 400 left: 200 more take 2 s
    assert bytes_per_s.acquire("other", 600) == 0.0  # each key its own bucket
    now[0] = 2.0
    assert bytes_per_s.acquire("peer", 600) == 0.0
    assert bytes_per_s.acquire("peer", 1_001) == float("inf")  # over the burst: never
    assert bytes_per_s.acquire("peer") == 0.01  # a plain request costs 1: 0.01 s away


def test_held_counts_in_all_and_per_key_and_forgets_a_key_holding_nothing() -> None:
    held: Held[str] = Held()
    with held.holding("a"), held.holding("a"), held.holding(None):
        assert (held.total, held.of("a"), held.of("b")) == (3, 2, 0)
    assert held.total == 0 and held.of("a") == 0 and not held._by_key

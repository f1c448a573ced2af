"""Which peers governance syncs with: each new connection once, then one peer in turn."""

from __future__ import annotations

from p2pinfer.gov.service import SyncPlan


def test_each_connected_peer_is_synced_once_then_one_in_turn() -> None:
    plan = SyncPlan()
    assert plan.new_peers(["a", "b", "c"]) == ["a", "b", "c"]
    assert plan.new_peers(["a", "b", "c"]) == []  # no stream per peer per round
    assert [plan.next_in_turn() for _ in range(4)] == ["a", "b", "c", "a"]


def test_a_newly_connected_peer_is_synced_at_once() -> None:
    plan = SyncPlan()
    plan.new_peers(["a"])
    assert plan.new_peers(["a", "late"]) == ["late"]


def test_a_peer_that_reconnects_is_synced_again() -> None:
    plan = SyncPlan()
    plan.new_peers(["a", "b"])
    assert plan.new_peers(["b"]) == []  # a went away
    assert plan.new_peers(["a", "b"]) == ["a"]
    assert {plan.next_in_turn(), plan.next_in_turn()} == {"a", "b"}


def test_no_peers_no_turn() -> None:
    plan = SyncPlan()
    assert plan.next_in_turn() is None
    plan.new_peers(["a"])
    plan.new_peers([])
    assert plan.next_in_turn() is None

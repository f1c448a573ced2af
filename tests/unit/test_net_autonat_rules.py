"""AutoNAT's pure rules: a dial-back reaches only the observed IP, a bounded number of times
a minute, and the status needs agreeing peers."""

from __future__ import annotations

import multiaddr
import pytest

from p2pinfer.net.autonat_rules import (
    DialBackLimiter,
    Verdicts,
    dial_back_addrs,
    observed_ip,
    voter,
)

PEER = "12D3KooWKQVkG5z7B3pbEzP9qiVqJtn7tk1mx3THmkWPmh2VPv5C"


def raw(text: str) -> bytes:
    return bytes(multiaddr.Multiaddr(text).to_bytes())


def test_every_requested_tcp_address_is_dialled_at_the_observed_ip_only() -> None:
    requested = [raw("/ip4/10.0.0.5/tcp/4001"), raw(f"/ip4/198.51.100.7/tcp/4002/p2p/{PEER}"),
                 raw("/ip4/203.0.113.1/tcp/4001")]  # same port again: dialled once
    assert dial_back_addrs(requested, "203.0.113.1", limit=4) == [
        "/ip4/203.0.113.1/tcp/4001", "/ip4/203.0.113.1/tcp/4002"]
    assert dial_back_addrs([raw("/ip4/10.0.0.5/tcp/7")], "2001:db8::1", limit=4) == [
        "/ip6/2001:db8::1/tcp/7"]


@pytest.mark.parametrize("requested", [
    [raw("/ip4/1.2.3.4/udp/4001/quic-v1")],
    [raw("/dns4/example.com/tcp/4001")],
    [raw(f"/ip4/1.2.3.4/tcp/4001/p2p/{PEER}/p2p-circuit")],
    [b"\xff\x00junk", b""],
])
def test_addresses_that_are_not_plain_ip_tcp_are_never_dialled(requested: list[bytes]) -> None:
    assert dial_back_addrs(requested, "203.0.113.1", limit=4) == []


def test_at_most_limit_ports_are_dialled_per_request() -> None:
    requested = [raw(f"/ip4/203.0.113.1/tcp/{port}") for port in range(1000, 1100)]
    assert len(dial_back_addrs(requested, "203.0.113.1", limit=4)) == 4


def test_observed_ip_unwraps_ipv4_mapped_and_rejects_names() -> None:
    assert observed_ip("::ffff:192.0.2.1") == "192.0.2.1"
    assert observed_ip("2001:0db8:0:0:0:0:0:1") == "2001:db8::1"
    assert observed_ip("example.com") is None


def test_the_limiter_bounds_each_peer_and_all_peers_in_any_minute() -> None:
    limiter = DialBackLimiter(per_peer=2, total=3)
    start = 59_990  # just before a minute boundary: the window slides, it does not reset
    assert limiter.admit("a", start) is None and limiter.admit("a", start + 1) is None
    assert limiter.admit("a", start + 20) is not None  # a's third within 60 s
    assert limiter.admit("b", start + 30) is None
    assert limiter.admit("c", start + 40) is not None  # the total for 60 s is spent
    assert limiter.admit("c", start + 60_000) is None  # a's first has left the window
    assert limiter.admit("a", start + 60_001) is None


def test_the_limiter_does_not_grow_past_its_peer_capacity() -> None:
    limiter = DialBackLimiter(per_peer=1, total=1_000, max_peers=10)
    admitted = [limiter.admit(f"p{i}", 0) is None for i in range(20)]
    assert admitted == [True] * 10 + [False] * 10


def test_the_status_needs_confirmations_and_a_majority() -> None:
    verdicts = Verdicts(confirmations=2)
    assert verdicts.status == "unknown"
    verdicts.record("a", True)
    assert verdicts.status == "unknown"
    verdicts.record("b", True)
    assert verdicts.status == "public"
    verdicts.record("c", False)
    verdicts.record("d", False)
    verdicts.record("e", False)
    assert verdicts.status == "private"
    verdicts.record("c", True)  # a peer's latest verdict replaces its earlier one
    assert verdicts.counts() == (3, 2) and verdicts.status == "public"


def test_in_a_small_network_two_agreeing_peers_are_enough() -> None:
    # Two public nodes are all a NATed node can ask: with the default 3 confirmations it
    # stayed unknown forever and never reserved a relay by itself.
    behind_nat = Verdicts(confirmations=3)
    behind_nat.record("bootstrap", False)
    assert behind_nat.status == "unknown"  # never on one peer's word
    behind_nat.record("relay", False)
    assert behind_nat.status == "private"
    public = Verdicts(confirmations=3)
    public.record("a", True)
    public.record("b", True)
    assert public.status == "public"


def test_once_more_peers_answer_the_full_count_is_needed_again() -> None:
    verdicts = Verdicts(confirmations=3)
    verdicts.record("a", False)
    verdicts.record("b", False)
    verdicts.record("c", True)  # three answers: 3 agreeing are needed, 2 do not do
    assert verdicts.status == "unknown"
    verdicts.record("d", False)
    assert verdicts.status == "private"


def test_two_peers_that_disagree_give_no_verdict() -> None:
    verdicts = Verdicts(confirmations=3)
    verdicts.record("a", False)
    verdicts.record("b", True)
    assert verdicts.status == "unknown"


def test_keys_on_one_address_group_are_one_voter() -> None:
    # Attack 45: a verdict counts once per address group, not per (free) key.
    assert voter("A", "198.51.100.7") == voter("B", "198.51.100.7") == "198.51.100.7"
    assert voter("A", "2001:db8:0:1::1") == voter("B", "2001:db8:0:ff::9") == "2001:db8::/56"
    assert voter("A", "::ffff:198.51.100.7") == "198.51.100.7"
    # Loopback (a local testnet's nodes share 127.0.0.1) and unknown addresses: by key.
    assert voter("A", "127.0.0.1") == "A" and voter("B", "::1") == "B"
    assert voter("A", None) == "A" and voter("B", "not-an-ip") == "B"
    verdicts = Verdicts(confirmations=3)
    for key in "abcde":
        verdicts.record(voter(key, "198.51.100.7"), False)
    for key, ip in (("x", "192.0.2.1"), ("y", "192.0.2.2"), ("z", "203.0.113.3")):
        verdicts.record(voter(key, ip), True)
    assert verdicts.counts() == (3, 1) and verdicts.status == "public"


def test_dial_backs_seen_arriving_make_a_node_public_whatever_more_voters_claim() -> None:
    # Attack 77: liars on 4 address groups outvoted 3 honest ones; an arrival is a fact.
    verdicts = Verdicts(confirmations=3)
    for liar in ("198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"):
        verdicts.record(liar, False)
    verdicts.record("203.0.113.1", True)  # its word only: an OK anyone can send
    assert verdicts.status == "private"
    verdicts.record("203.0.113.2", True, verified=True)
    assert verdicts.status == "private"  # one arrival: not yet MIN_AGREEING
    verdicts.record("203.0.113.3", True, verified=True)
    assert verdicts.verified() == 2 and verdicts.status == "public"
    verdicts.record("203.0.113.3", False)  # its latest verdict counts
    assert verdicts.verified() == 1 and verdicts.status == "private"

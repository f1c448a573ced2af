"""Which peers a validator's check reaches through relays only (`behind_nat`: an advert
naming relays and no public address; a lying advert cannot make the check go missing,
that is the checker's fallback in tests/integration/test_jobs_relayed.py), and which
ones a consumer tries directly before their relays (`worth_a_direct_try`); how a relay
shares its slots among source addresses (`slot_decision`, attack 34); which addresses a
DCUtR punch may dial (`punch_targets`, attack 35)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, Limit, Reservation, Status
from libp2p.utils.varint import encode_varint_prefixed

from p2pinfer.addresses import local_ip_towards
from p2pinfer.net.relay_client import answer_limits
from p2pinfer.net.relay_rules import (
    SlotDecision,
    behind_nat,
    circuit_addr,
    ip_scope,
    path_of,
    public_addr,
    punch_targets,
    slot_decision,
    slot_group,
    too_limited,
    worth_a_direct_try,
)

RELAY = "12D3KooWJ2i2gvzmJeoNr36PBAB2EvNn6NEmeUQAuxiG2uyrjSzn"
TARGET = "12D3KooWHLw8jhEQRVqEmVNnRBv8SPC4yuJ5pAo6kKth9owmXQsn"
CIRCUIT = circuit_addr("/ip4/203.0.113.7/tcp/4001", RELAY, TARGET)


@pytest.mark.parametrize(("addr", "public"), [
    ("/ip4/203.0.113.7/tcp/4001", False),  # TEST-NET-3: documentation range, not global
    ("/ip4/8.8.8.8/tcp/4001", True),
    ("/ip4/10.203.10.10/tcp/4001", False),
    ("/ip4/192.168.1.20/tcp/4001/p2p/" + TARGET, False),
    ("/ip4/127.0.0.1/tcp/4001", False),
    ("/ip4/100.64.0.1/tcp/4001", False),  # carrier-grade NAT
    ("/ip6/2001:4860:4860::8888/tcp/4001", True),
    ("/ip6/fe80::1/tcp/4001", False),
    ("/dns4/node.example.org/tcp/4001", True),
    ("/dns4/box.local/tcp/4001", False),
    ("/ip4/not-an-ip/tcp/4001", False),
    ("garbage", False),
    ("", False),
])
def test_public_addr(addr: str, public: bool) -> None:
    assert public_addr(addr) is public


def test_a_peer_with_relays_and_only_private_addresses_is_behind_nat() -> None:
    assert behind_nat(["/ip4/10.203.10.10/tcp/4001", "/ip4/127.0.0.1/tcp/4001", CIRCUIT])
    assert behind_nat([CIRCUIT])


def test_a_public_address_or_no_relay_means_it_is_dialled_as_consumers_dial_it() -> None:
    assert not behind_nat(["/ip4/8.8.8.8/tcp/4001", CIRCUIT])
    assert not behind_nat(["/ip4/10.203.10.10/tcp/4001"])
    assert not behind_nat([])


def test_path_of_a_connection() -> None:
    assert path_of([CIRCUIT]) == "relayed"
    assert path_of(["/ip4/8.8.8.8/tcp/4001"]) == path_of(None) == "direct"


def routes(table: dict[str, str]) -> Callable[[str], str | None]:
    """`local_ip_towards` on a machine whose source address per destination is `table`."""
    return table.get


def test_a_provider_behind_another_nat_is_reached_through_its_relay_at_once() -> None:
    # Our machine sits at 192.168.1.5; the provider at 10.0.0.7 behind its own router.
    towards = routes({"10.0.0.7": "192.168.1.5", "192.168.1.20": "192.168.1.5"})
    assert not worth_a_direct_try(["/ip4/10.0.0.7/tcp/4001", CIRCUIT], towards)
    assert not worth_a_direct_try([CIRCUIT], towards)
    assert not worth_a_direct_try(["/ip4/10.9.9.9/tcp/4001", CIRCUIT], towards)  # no route


def test_a_public_or_same_lan_or_loopback_address_is_tried_directly_first() -> None:
    towards = routes({"192.168.1.20": "192.168.1.5"})
    assert worth_a_direct_try(["/ip4/8.8.8.8/tcp/4001", CIRCUIT], towards)
    assert worth_a_direct_try(["/ip4/192.168.1.20/tcp/4001", CIRCUIT], towards)  # our LAN
    assert worth_a_direct_try(["/ip4/127.0.0.1/tcp/4001", CIRCUIT], towards)


def test_the_local_route_lookup_sends_nothing_and_knows_loopback() -> None:
    assert local_ip_towards("127.0.0.1") == "127.0.0.1"


@pytest.mark.parametrize(("circuit_bytes", "circuit_s", "limited"), [
    (128 * 1024, 120, True),  # go-libp2p's default relay: for hole punching only
    (16 * 1024 * 1024, 900, False),  # ours
    (0, 0, False),  # no limit said
    (0, 60, True), (512 * 1024, 0, True), (1024 * 1024, 300, False),
])
def test_a_relay_whose_circuits_end_too_soon_is_too_limited_for_jobs(
    circuit_bytes: int, circuit_s: int, limited: bool
) -> None:
    assert too_limited(circuit_bytes, circuit_s) is limited


def test_the_limits_are_read_from_the_relays_reservation_answer() -> None:
    def answer(limit: Limit | None) -> bytes:
        msg = HopMessage(type=HopMessage.STATUS, status=Status.OK,
                         reservation=Reservation(expire=2_000_000_000))
        if limit is not None:
            msg.limit.CopyFrom(limit)
        return encode_varint_prefixed(msg.SerializeToString())

    assert answer_limits(answer(Limit(duration=120, data=131072))) == (131072, 120)
    assert answer_limits(answer(Limit(duration=900))) == (0, 900)
    assert answer_limits(answer(None)) == (0, 0)
    assert answer_limits(answer(Limit(data=5))[:-1]) == (0, 0)  # cut short
    assert answer_limits(b"") == (0, 0) and answer_limits(b"\x05\xff\xff") == (0, 0)


# -- relay slots (attack 34) ---------------------------------------------------------

def slots(*groups: str) -> dict[str, str]:
    return {f"p{i}": g for i, g in enumerate(groups)}


def test_a_slot_is_counted_under_the_ipv4_address_or_the_ipv6_56() -> None:
    assert slot_group("198.51.100.7") == "198.51.100.7"
    assert slot_group("2001:db8:0:ff::1") == slot_group("2001:db8:0:1::2") \
        == "2001:db8::/56"
    assert slot_group("2001:db8:0:100::1") != slot_group("2001:db8::1")
    assert slot_group("::ffff:198.51.100.7") == "198.51.100.7"
    assert slot_group(None) is None and slot_group("relay.example") is None


def test_a_refresh_keeps_its_slot_even_when_full_or_without_an_address() -> None:
    held = slots("a", "a", "b", "b")
    assert slot_decision(held, "p0", None, total=4, per_group=2) == SlotDecision()
    assert slot_decision(held, "new", None, total=4, per_group=2).refusal == "no-ip"


def test_a_full_relay_gives_a_newcomer_the_oldest_slot_of_the_largest_group() -> None:
    held = slots("a", "b", "b", "a")
    decision = slot_decision(held, "new", "c", total=4, per_group=2)
    assert decision == SlotDecision(evict="p0")  # a and b hold 2 each: a's slot is older
    assert slot_decision(held, "new", "c", total=4, per_group=4).evict == "p0"


def test_no_slot_moves_between_groups_within_one_of_each_other() -> None:
    held = slots("a", "a", "b", "c")
    assert slot_decision(held, "new", "b", total=4, per_group=4).refusal == "reservations"
    assert slot_decision(held, "new", "d", total=4, per_group=4).evict == "p0"
    assert slot_decision(held, "new", "a", total=4, per_group=2).refusal == \
        "reservations-per-ip"


def test_arrival_order_cannot_shut_a_group_out() -> None:
    # Squatters from 4 addresses fill 16 slots first; 4 homes then ask for two slots
    # each (two providers behind one NAT), and the squatters keep asking again: every
    # group ends with an equal share.
    total, per_group = 16, 4
    held: dict[str, str] = {}
    asks = [(f"s{a}-{k}", f"squat{a}") for a in range(4) for k in range(4)]
    asks += [(f"prov{i}-{k}", f"home{i}") for k in range(2) for i in range(4)]
    asks += [(f"s{a}-again{k}", f"squat{a}") for k in range(8) for a in range(4)]
    for peer, group in asks:
        decision = slot_decision(held, peer, group, total=total, per_group=per_group)
        if decision.refusal is None:
            if decision.evict is not None:
                del held[decision.evict]
            held[peer] = group
    assert len(held) == total
    assert all(f"prov{i}-{k}" in held for i in range(4) for k in range(2))
    assert sorted(list(held.values()).count(g) for g in set(held.values())) == [2] * 8


# -- DCUtR punch targets (attack 35) ---------------------------------------------------

INTERNET_RELAY = "/ip4/8.8.8.8/tcp/4001"


@pytest.mark.parametrize(("host", "scope"), [
    ("8.8.8.8", "global"), ("2606:4700::1111", "global"),
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("192.168.1.1", "private"), ("10.0.0.1", "private"), ("100.64.0.1", "private"),
    ("fd00::1", "private"),
    ("169.254.0.1", None), ("fe80::1", None), ("0.0.0.0", None), ("224.0.0.1", None),
    ("240.0.0.1", None), ("printer.local", None),
])
def test_an_address_scope(host: str, scope: str | None) -> None:
    assert ip_scope(host) == scope


def test_over_an_internet_relay_only_global_tcp_addresses_are_punched() -> None:
    named = ["/ip4/192.168.1.1/tcp/80", "/ip4/127.0.0.1/tcp/11434", "/ip6/fe80::1/tcp/22",
             "/dns4/printer.local/tcp/631", "/ip4/9.9.9.9/udp/4001/quic-v1",
             "/ip4/8.8.8.8/tcp/4001", f"/ip4/9.9.9.9/tcp/4001/p2p/{TARGET}",
             "/ip4/9.9.9.9/tcp/4001", "/ip4/1.1.1.1/tcp/99999"]
    assert punch_targets(named, [INTERNET_RELAY], limit=4) == ["/ip4/9.9.9.9/tcp/4001"]


def test_a_testnet_relay_lets_its_own_scope_be_punched_and_no_other() -> None:
    named = ["/ip4/127.0.0.3/tcp/5000", "/ip4/10.0.0.2/tcp/4001", "/ip4/1.1.1.1/tcp/1"]
    assert punch_targets(named, ["/ip4/127.0.0.1/tcp/9"], limit=4) == [
        "/ip4/127.0.0.3/tcp/5000", "/ip4/1.1.1.1/tcp/1"]
    assert punch_targets(named, ["/ip4/10.9.8.11/tcp/4001"], limit=4) == [
        "/ip4/10.0.0.2/tcp/4001", "/ip4/1.1.1.1/tcp/1"]
    assert punch_targets(named, [], limit=4) == ["/ip4/1.1.1.1/tcp/1"]


def test_a_punch_dials_at_most_its_limit_of_distinct_addresses() -> None:
    named = [f"/ip4/1.1.1.{i % 6}/tcp/4001" for i in range(20)]
    assert punch_targets(named, [INTERNET_RELAY], limit=4) == [
        f"/ip4/1.1.1.{i}/tcp/4001" for i in range(4)]

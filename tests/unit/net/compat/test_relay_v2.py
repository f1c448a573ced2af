"""Circuit Relay v2 HOP: stock py-libp2p 0.8.1 reserves a slot for whatever peer a RESERVE
names, keeps slots of gone peers, lets an idle circuit outlive its duration, and ends
another circuit of the same peer when one ends; BoundedCircuitV2 does none of these.
End to end: tests/integration/test_net_relay*.py."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import trio
from libp2p import new_host
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, PeerId
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.compat import relay_v2
from p2pinfer.net.compat.relay_v2 import BoundedCircuitV2
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

LIMITS = RelayLimits(duration=60, data=1 << 20, max_circuit_conns=4, max_reservations=8,
                     reservation_ttl=3600)


def peer() -> ID:
    return ID.from_base58(NodeIdentity.generate().peer_id)


class FakeStream:
    """A stream of the connection from `remote`: records writes and resets; reads block."""

    def __init__(self, remote: ID) -> None:
        self.muxed_conn = SimpleNamespace(peer_id=remote)
        self.written: list[bytes] = []
        self.was_reset = False

    async def write(self, data: bytes) -> None:
        self.written.append(data)

    async def read(self, n: int | None = None) -> bytes:
        await trio.sleep_forever()
        return b""

    async def reset(self) -> None:
        self.was_reset = True

    async def close(self) -> None:
        self.was_reset = True  # either way, the circuit is over


    def is_open(self) -> bool:
        return not self.was_reset


class EndedStream(FakeStream):
    """A stream whose sender has closed it: reads return end of stream."""

    async def read(self, n: int | None = None) -> bytes:
        return b""


def relay(cls: type[CircuitV2Protocol]) -> Any:
    return cls(new_host(), limits=LIMITS, allow_hop=True)


async def reserve_naming_another(cls: type[CircuitV2Protocol]) -> tuple[ID, ID, set[ID]]:
    """A RESERVE over a connection from one peer that names another; who got the slot."""
    hop = relay(cls)
    asker, named = peer(), peer()
    msg = HopMessage(type=HopMessage.RESERVE, peer=PeerId(id=named.to_bytes()))
    with trio.fail_after(5):
        await hop._handle_reserve(FakeStream(asker), msg)
    return asker, named, set(hop.resource_manager._reservations)


async def idle_circuit(cls: type[CircuitV2Protocol]) -> tuple[bool, FakeStream, FakeStream]:
    """Relay an idle circuit whose duration ends in 50 ms; whether it ended within 2 s."""
    hop = relay(cls)
    src, dst = FakeStream(peer()), FakeStream(peer())
    with trio.move_on_after(2) as scope:
        await hop._relay_data(src, dst, peer(), time.monotonic() + 0.05, None)
    return not scope.cancelled_caught, src, dst


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(relay_v2)


async def test_defect_stock_relay_reserves_for_the_peer_a_reserve_names() -> None:
    # If this fails, upstream uses the connection's peer: drop that override.
    _, named, held = await reserve_naming_another(CircuitV2Protocol)
    assert held == {named}


async def test_a_reserve_takes_a_slot_for_the_connections_peer_only() -> None:
    asker, _, held = await reserve_naming_another(BoundedCircuitV2)
    assert held == {asker}


async def test_defect_stock_relay_lets_an_idle_circuit_outlive_its_duration() -> None:
    # If this fails, upstream cuts a waiting read at the deadline: drop that override.
    ended, _, _ = await idle_circuit(CircuitV2Protocol)
    assert not ended


async def test_an_idle_circuit_is_cut_at_its_duration() -> None:
    ended, src, dst = await idle_circuit(BoundedCircuitV2)
    assert ended and src.was_reset and dst.was_reset


def test_slots_of_peers_no_longer_connected_are_freed() -> None:
    hop = relay(BoundedCircuitV2)
    gone = peer()
    hop.resource_manager.reserve(gone)
    assert hop.prune_reservations() == [gone]  # new_host() is connected to no one
    assert gone not in hop.resource_manager._reservations


async def one_circuit_ends_while_another_to_the_same_peer_runs(
        cls: type[CircuitV2Protocol]) -> tuple[FakeStream, FakeStream]:
    """Two consumers' circuits to one provider, filed as `_handle_connect` files them
    (the later under the provider's id); the first ends. The provider's stream of each."""
    hop = relay(cls)
    provider = peer()
    first_src, first_dst = EndedStream(peer()), FakeStream(provider)
    second_src, second_dst = FakeStream(peer()), FakeStream(provider)
    hop._active_relays[provider] = (first_src, first_dst)
    hop._active_relays[provider] = (second_src, second_dst)  # the second came in meanwhile
    with trio.fail_after(5):
        await hop._relay_data(first_src, first_dst, provider, None, [1 << 20])
    return first_dst, second_dst


async def test_defect_stock_relay_ends_the_latest_circuit_of_a_peer_when_any_ends() -> None:
    # If this fails, upstream ends only the circuit whose direction ended: drop that part.
    first, second = await one_circuit_ends_while_another_to_the_same_peer_runs(
        CircuitV2Protocol)
    assert second.was_reset and not first.was_reset


async def test_a_circuit_ending_leaves_the_other_circuits_of_its_peer_alone() -> None:
    first, second = await one_circuit_ends_while_another_to_the_same_peer_runs(
        BoundedCircuitV2)
    assert first.was_reset and not second.was_reset  # its own end passed on, only that


async def test_an_ended_circuit_leaves_no_entry_behind() -> None:
    hop = relay(BoundedCircuitV2)
    provider, source = peer(), peer()
    src, dst = EndedStream(source), FakeStream(provider)
    hop._active_relays[source] = (src, None)
    hop._active_relays[provider] = (src, dst)
    with trio.fail_after(5):
        await hop._relay_data(src, dst, source, None, [1 << 20])
    assert hop._active_relays == {}

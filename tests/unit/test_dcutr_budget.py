"""When a consumer tries DCUtR (`GuardedDCUtR.maybe_upgrade`): only over relay-only
connections, only with enough of the stream's deadline left, once a minute per peer.
A fake host and a recording `upgrade` (the punch itself is tested in docker,
tests/integration/test_docker_nat.py)."""

from __future__ import annotations

from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.rcmgr import Direction

from p2pinfer.net.dcutr import (
    IDLE_POLL_S,
    MIN_TRY_S,
    STREAM_RESERVE_S,
    UPGRADE_TIMEOUT_S,
    GuardedDCUtR,
)

RELAYED = "/ip4/10.0.0.11/tcp/4001/p2p/12D3KooWRelay/p2p-circuit"
DIRECT = "/ip4/10.0.0.20/tcp/4001"
PEER = ID(b"\x00\x24" + bytes(range(36)))


class Stream:
    def __init__(self, protocol: str | None) -> None:
        self.protocol = protocol

    def get_protocol(self) -> str | None:
        return self.protocol


class Conn:
    def __init__(self, addr: str, direction: Direction = Direction.OUTBOUND) -> None:
        self.addr = addr
        self.direction = direction
        self.closed = False
        self.streams: list[Stream] = []

    def get_transport_addresses(self) -> list[str]:
        return [self.addr]

    def get_streams(self) -> tuple[Stream, ...]:
        return tuple(self.streams)

    @property
    def is_closed(self) -> bool:
        return self.closed

    async def close(self) -> None:
        self.closed = True


class Network:
    def __init__(self, *addrs: str) -> None:
        self.conns = [Conn(a) for a in addrs]

    @property
    def connections(self) -> dict[ID, list[Conn]]:  # what py-libp2p's own check reads
        return {PEER: list(self.conns)} if self.conns else {}

    def get_connections(self, pid: ID) -> list[Conn]:
        return list(self.conns)


class Host:
    def __init__(self, *addrs: str) -> None:
        self.network = Network(*addrs)

    def get_network(self) -> Network:
        return self.network


class Recording(GuardedDCUtR):
    def __init__(self, host: Any, result: bool = False) -> None:
        super().__init__(host)
        self.tries: list[float] = []
        self.closes: list[bool] = []
        self.result = result

    async def upgrade(self, pid: ID, *, timeout_s: float = UPGRADE_TIMEOUT_S,
                      close_relayed: bool = True) -> bool:
        self.tries.append(timeout_s)
        self.closes.append(close_relayed)
        return self.result


async def test_a_relay_only_peer_gets_one_full_try_a_minute() -> None:
    dcutr = Recording(Host(RELAYED))
    deadline = trio.current_time() + 10.0
    assert not await dcutr.maybe_upgrade(PEER, deadline)
    assert not await dcutr.maybe_upgrade(PEER, deadline)  # failed a moment ago: not again
    assert dcutr.tries == [UPGRADE_TIMEOUT_S]


async def test_the_try_fits_the_stream_deadline_and_is_skipped_under_the_minimum() -> None:
    dcutr = Recording(Host(RELAYED), result=True)
    now = trio.current_time()
    # An advert fetch's 5 s, most of it spent on the direct dial and the relayed one.
    assert not await dcutr.maybe_upgrade(PEER, now + STREAM_RESERVE_S + MIN_TRY_S - 0.5)
    assert dcutr.tries == []
    assert await dcutr.maybe_upgrade(PEER, now + STREAM_RESERVE_S + 4.0)
    assert dcutr.tries and abs(dcutr.tries[0] - 4.0) < 0.1


async def test_no_try_where_a_direct_connection_exists_or_none_at_all() -> None:
    for host in (Host(RELAYED, DIRECT), Host(DIRECT), Host()):
        dcutr = Recording(host)
        assert not await dcutr.maybe_upgrade(PEER, trio.current_time() + 10.0)
        assert dcutr.tries == []


class LatePunch(GuardedDCUtR):
    """A punch whose direct connection comes up (the other side's dial, or ours
    finishing) while the try is still waiting, and which then never returns."""

    async def initiate_hole_punch(self, peer_id: ID) -> bool:
        self.host.get_network().conns.append(Conn(DIRECT))
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_punch_that_lands_after_the_try_gave_up_counts_and_closes_the_relay_leg() -> None:
    host = Host(RELAYED)
    dcutr = LatePunch(host)
    assert await dcutr.upgrade(PEER, timeout_s=0.05)
    assert dcutr.upgrades == 1
    relayed, direct = host.network.conns
    assert relayed.closed and not direct.closed


async def test_behind_a_stream_the_dialling_side_tries_once_and_the_relay_leg_waits() -> None:
    host = Host(RELAYED)
    relayed = host.network.conns[0]
    relayed.streams = [Stream("/p2pinfer/job/1"), Stream("/meshsub/1.1.0")]
    dcutr = Recording(host, result=True)
    async with trio.open_nursery() as nursery:
        assert dcutr.start_behind(PEER, nursery)
        assert not dcutr.start_behind(PEER, nursery)  # one try per peer at a time
        await trio.sleep(3 * IDLE_POLL_S)
        assert dcutr.tries == [UPGRADE_TIMEOUT_S] and dcutr.closes == [False]
        assert not relayed.closed  # the job's stream still runs on it
        relayed.streams = [Stream("/meshsub/1.1.0")]  # the job ended; gossip holds nothing
        await trio.sleep(3 * IDLE_POLL_S)
        assert relayed.closed


async def test_behind_nothing_is_tried_by_the_side_the_relay_brought_a_peer_to() -> None:
    # Both sides of a relayed connection are nodes; only the one that dialled initiates.
    dcutr = Recording(Host(RELAYED), result=True)
    dcutr.host.get_network().conns[0].direction = Direction.INBOUND
    async with trio.open_nursery() as nursery:
        assert not dcutr.start_behind(PEER, nursery)
    assert dcutr.tries == []


async def test_behind_a_failed_try_is_not_repeated_within_a_minute() -> None:
    dcutr = Recording(Host(RELAYED), result=False)
    async with trio.open_nursery() as nursery:
        assert dcutr.start_behind(PEER, nursery)
    async with trio.open_nursery() as nursery:
        assert not dcutr.start_behind(PEER, nursery)
    assert dcutr.tries == [UPGRADE_TIMEOUT_S]

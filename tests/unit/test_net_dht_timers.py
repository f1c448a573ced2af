"""The DHT's timers (`Refresher`): a node with few connections walks often, but announces
its models again only every provide interval, or when it meets a new peer.

The walk and the records are counting fakes (`CountingWalk`, `CountingRecords`): what is
under test is when each runs, on trio's mock clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import trio
import trio.testing

from p2pinfer.net.dht import ProviderRecords, Refresher


@dataclass
class Times:
    provide_interval_s: float = 600.0
    few_peers_refresh_s: float = 30.0


class CountingWalk:
    def __init__(self) -> None:
        self.at: list[float] = []

    async def __call__(self) -> None:
        self.at.append(trio.current_time())


class CountingRecords:
    def __init__(self) -> None:
        self.at: list[float] = []

    async def reprovide_all(self) -> None:
        self.at.append(trio.current_time())


def refresher(walk: CountingWalk, records: CountingRecords, connected: int) -> Refresher:
    return Refresher(walk, cast(ProviderRecords, records), lambda: connected, Times())


async def run_for(refresh: Refresher, seconds: float, during: Any = None) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(refresh.run)
        if during is not None:
            await during()
        await trio.sleep_until(seconds)
        nursery.cancel_scope.cancel()


async def test_a_lonely_node_walks_every_30_s_but_announces_every_600_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    walk, records = CountingWalk(), CountingRecords()
    await run_for(refresher(walk, records, connected=1), 1201)
    assert len(walk.at) == 40  # at 30, 60, ... 1200 s
    assert records.at == [600.0, 1200.0]


async def test_a_well_connected_node_walks_and_announces_every_600_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    walk, records = CountingWalk(), CountingRecords()
    await run_for(refresher(walk, records, connected=8), 1201)
    assert walk.at == records.at == [600.0, 1200.0]


async def test_a_new_peer_brings_a_walk_and_an_announcement_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    walk, records = CountingWalk(), CountingRecords()
    refresh = refresher(walk, records, connected=1)

    async def meet_a_peer_at_10_s() -> None:
        await trio.sleep(10)
        refresh.new_peer()

    await run_for(refresh, 41, meet_a_peer_at_10_s)
    assert walk.at == [10.0, 40.0]  # the next lonely walk counts from the last one
    assert records.at == [10.0]  # not again at 40 s: the interval counts from 10 s

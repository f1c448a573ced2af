"""Attack 53 on real hosts: the governance sync stream as a free download of the store.

`/p2pinfer/gov/1.0.0` answers an empty request with every stored message (up to 2,000
frames). 1,000 of them may come from authors without verified stake: votes anyone signs
with free keys (32 keys of 32 messages), which every node stores and relays. So one
peer that opens sync streams in a loop had the node read its store and write ~1,000
frames through Noise and Yamux for each, as often as it asked: the node's event loop
spent on a stranger's downloads, for nothing but a stream opened.

Now (`gov/sync_door.py`) a peer may sync 3 times at once, then once every 5 s; 8 syncs
are served at once (2 to one address), each for at most 5 s; and the
messages of unstaked authors go out only within one byte budget for all askers together
(64 KiB a second, 1 MiB at once). Staked authors' messages come first in every sync and
are not held to that budget, so an honest asker still gets what counts while the budget
is spent.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from p2pinfer.errors import NetworkError, ProtocolError
from p2pinfer.gov.messages import MAX_MESSAGE, decode_message, sign_vote
from p2pinfer.gov.service import GOV_PROTOCOL, GovService
from p2pinfer.gov.status import ProposalDraft
from p2pinfer.gov.store import MAX_PER_AUTHOR, MAX_UNSTAKED, GovStore
from p2pinfer.gov.sync_door import (
    SYNC_BURST,
    SYNC_EVERY_S,
    UNSTAKED_BURST_BYTES,
    UNSTAKED_BYTES_PER_S,
)
from p2pinfer.gov.tally import MIN_VOTING_MS
from p2pinfer.identity import NodeIdentity
from p2pinfer.market.ledger import Ledger
from p2pinfer.market.stake import DEFAULT_MINIMUM_STAKE, sign_stake
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from tests.integration.net_helpers import config, now_ms

pytestmark = pytest.mark.network


def junk_votes() -> list[bytes]:
    """MAX_UNSTAKED votes on made-up proposals, MAX_PER_AUTHOR per free key."""
    votes: list[bytes] = []
    while len(votes) < MAX_UNSTAKED:
        key = NodeIdentity.generate()
        stake = sign_stake(key, 1, 0)
        for _ in range(min(MAX_PER_AUTHOR, MAX_UNSTAKED - len(votes))):
            votes.append(sign_vote(key, os.urandom(32), True, stake=stake,
                                   issued_at=now_ms()).encode())
    return votes


@dataclass
class Victim:
    net: NetHost
    gov: GovService
    store: GovStore


@asynccontextmanager
async def victim(tmp: Path) -> AsyncIterator[Victim]:
    """B: a staked node with one proposal of its own and a full unstaked share."""
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        net = await stack.enter_async_context(run_host(config(ip="127.0.0.2")))
        identity = net.config.identity
        ledger = stack.enter_context(Ledger.open(tmp / "b-ledger.sqlite3", identity))
        store = GovStore(tmp / "b-gov.sqlite3")
        stack.callback(store.close)
        gov = GovService(identity, net, store, stake=2 * DEFAULT_MINIMUM_STAKE, ledger=ledger)
        await gov.start(nursery)
        deadline = now_ms() + MIN_VOTING_MS + 60_000  # the proposal is signed a moment later
        await gov.propose(ProposalDraft("check_rate_pm", 50, deadline, deadline))
        for raw in junk_votes():  # as gossip or a sync would bring them in
            assert await gov._add(decode_message(raw))
        assert (await gov.status()).messages == MAX_UNSTAKED + 1
        yield Victim(net, gov, store)
        nursery.cancel_scope.cancel()


@dataclass
class Pulled:
    """What one sync brought: frames and bytes, from staked authors (here: B) and others."""

    staked: int = 0
    unstaked: int = 0
    unstaked_bytes: int = 0

    @property
    def frames(self) -> int:
        return self.staked + self.unstaked


async def pull(net: NetHost, b: Victim) -> Pulled:
    """One sync from B, read to its end."""
    stream = await net.open_stream(b.net.peer_id, GOV_PROTOCOL)
    pulled = Pulled()
    try:
        while True:
            raw = await stream.read_frame(max_size=MAX_MESSAGE, timeout_s=20)
            if decode_message(raw).author == b.net.config.identity.public_key:
                pulled.staked += 1
            else:
                pulled.unstaked, pulled.unstaked_bytes = \
                    pulled.unstaked + 1, pulled.unstaked_bytes + len(raw)
    except (NetworkError, ProtocolError):
        pass
    finally:
        await stream.close()
    return pulled


def budget(elapsed_s: float) -> float:
    """The most bytes of unstaked authors' messages B may send in `elapsed_s`."""
    return UNSTAKED_BURST_BYTES + UNSTAKED_BYTES_PER_S * elapsed_s + MAX_MESSAGE


async def test_a_peer_syncing_in_a_loop_gets_its_share_not_the_store_each_time(
    tmp_path: Path,
) -> None:
    with trio.fail_after(120):
        async with victim(tmp_path) as b, \
                run_host(config(ip="127.0.0.1")) as mallory, \
                run_host(config(ip="127.0.0.3")) as carol:
            await mallory.connect(b.net.addrs()[0])
            started, cpu = time.monotonic(), time.process_time()
            pulled = [await pull(mallory, b) for _ in range(20)]
            elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
            print(f"20 syncs: {sum(p.frames for p in pulled)} frames, "
                  f"{sum(p.unstaked_bytes for p in pulled)} unstaked bytes in "
                  f"{elapsed:.2f} s, {cpu:.2f} CPU-s (all hosts)")
            # Carol, honest and new, syncs while the unstaked budget is spent: she gets
            # the staked proposal all the same.
            await carol.connect(b.net.addrs()[0])
            carol_got = await pull(carol, b)
    # On the old code each of the 20 syncs was the whole store: 20,020 frames, ~7 MB.
    served = sum(1 for p in pulled if p.frames)
    assert SYNC_BURST <= served <= SYNC_BURST + int(elapsed / SYNC_EVERY_S), (pulled, elapsed)
    assert sum(p.unstaked_bytes for p in pulled) <= budget(elapsed), pulled
    assert carol_got.staked == 1, carol_got


async def test_fresh_keys_share_one_budget_for_unstaked_messages(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with victim(tmp_path) as b, AsyncExitStack() as stack:
            sybils = [await stack.enter_async_context(run_host(config(ip="127.0.0.1")))
                      for _ in range(6)]
            for sybil in sybils:
                await sybil.connect(b.net.addrs()[0])
            started = time.monotonic()
            pulled = [await pull(sybil, b) for sybil in sybils]
            elapsed = time.monotonic() - started
    # Every key's sync is let in and brings the staked proposal, but all six share the
    # unstaked budget: six whole stores (~2 MB) on the old code.
    assert all(p.staked == 1 for p in pulled), pulled
    assert sum(p.unstaked_bytes for p in pulled) <= budget(elapsed), (pulled, elapsed)


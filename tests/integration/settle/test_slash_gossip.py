"""Slash votes over real libp2p hosts: two staked validators gossip their votes on
SLASH_TOPIC, every node collects them, and the provider is slashed exactly once on the
chain (a fake one here: the contracts themselves are in test_stake_on_chain.py)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import trio

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.host import run_host
from p2pinfer.protocol import SLASH_TOPIC
from p2pinfer.settle.account import account_of, bind_signature
from p2pinfer.settle.addresses import address_bytes
from p2pinfer.settle.node_stakes import StakeServices, start_stakes
from p2pinfer.settle.slasher import slash_amount
from tests.integration.net_helpers import config, now_ms
from tests.support.fake_chain import FakeChainForTests

ANY_ACCOUNT = "0x" + "01" * 20  # whose view of the chain: these tests send no transaction

pytestmark = pytest.mark.network

CREDIT = 1_000_000
PROVIDER_STAKE = 30_000 * CREDIT
REPORT = b"a confirmed check report"


async def test_two_validators_votes_gossiped_slash_the_provider_once() -> None:
    chain = FakeChainForTests(ANY_ACCOUNT, slash_threshold=2, validator_min_stake=10_000 * CREDIT)
    provider = NodeIdentity.generate()
    payee = account_of(provider)
    chain.stake(payee.address, PROVIDER_STAKE)
    validators = [NodeIdentity.generate() for _ in range(2)]
    for v in validators:
        chain.stake(account_of(v).address, 10_000 * CREDIT)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            hub = await stack.enter_async_context(run_host(config()))
            hosts = [await stack.enter_async_context(run_host(config(v))) for v in validators]
            services: list[StakeServices] = []
            for host in [hub, *hosts]:
                started = await start_stakes(chain, host.config.identity, host, nursery,
                                             ledger=None, clock_ms=now_ms)
                assert started is not None
                services.append(started)
            for host in hosts:
                await host.connect(hub.addrs()[0])
                await hub.wait_for_mesh(host.peer_id, SLASH_TOPIC)
                await host.wait_for_mesh(hub.peer_id, SLASH_TOPIC)
            for s in services[1:]:
                done = await s.slasher.on_fraud(provider.peer_id, address_bytes(payee.address),
                                                bind_signature(payee, provider.peer_id), REPORT)
                assert done.startswith("voted"), done
            while len(chain.used_evidence) < 1 or any(len(s.slasher.votes) for s in services):
                await trio.sleep(0.05)
            await trio.sleep(0.5)  # room for a second submission, which must not land
            nursery.cancel_scope.cancel()
    assert chain.stakes[payee.address] == PROVIDER_STAKE - slash_amount(PROVIDER_STAKE)
    assert len(chain.used_evidence) == 1
    results = [o.result for s in services for o in s.slasher.journal]
    assert sum(r.startswith("slashed") for r in results) == 1

"""Stake on a real local chain (eth-tester's py-evm, contracts from deploy_all, served in
this process; `ChainClient` in worker threads, as a node calls it): 2-of-3 staked
validators' gossiped votes slash a provider, whose stake and the token's supply fall by
the slashed amount; governance weights equal the stake locked at the snapshot block."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from p2pinfer.gov.messages import sign_proposal, sign_vote
from p2pinfer.identity import NodeIdentity
from p2pinfer.market.stake import sign_stake
from p2pinfer.protocol import SLASH_TOPIC
from p2pinfer.settle.account import account_of, bind_signature
from p2pinfer.settle.addresses import address_bytes
from p2pinfer.settle.chain import ChainClient
from p2pinfer.settle.chain_serve import ChainServeOptions, serve_chain
from p2pinfer.settle.chain_weight import ChainWeights, OwnAccount
from p2pinfer.settle.devchain import DevChain
from p2pinfer.settle.node_stakes import slash_params_of
from p2pinfer.settle.slasher import Slasher, slash_amount
from p2pinfer.settle.stakes import StakeBook

pytestmark = pytest.mark.network

T = TypeVar("T")
CREDIT = 10**6
HOUR = 3_600_000
REPORT = b"the signed bytes of a confirmed check report"


async def off_loop(fn: Callable[[], T]) -> T:
    # The chain's py-evm runs on the trio thread: every JSON-RPC call from a worker.
    return await trio.to_thread.run_sync(fn)


class Chain:
    def __init__(self, dev: DevChain, deployment: dict[str, Any]) -> None:
        self.dev, self.deployment = dev, deployment
        self.clients: list[ChainClient] = []  # closed when the fixture ends

    async def staker(self, credits: int) -> tuple[NodeIdentity, ChainClient]:
        """A fresh node whose account holds and locks `credits`."""
        identity = NodeIdentity.generate()
        account = account_of(identity)
        self.dev.fund(account.address, credits * CREDIT)
        client = await off_loop(lambda: ChainClient.connect(
            self.deployment["rpc"], self.deployment["channels"], account,
            expected_chain_id=self.deployment["chain_id"]))
        self.clients.append(client)
        if credits:
            await off_loop(lambda: client.lock(credits * CREDIT))
        return identity, client


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[Chain]:
    dev = DevChain()
    options = ChainServeOptions(deployment_file=tmp_path / "deployment.json", port=0)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            deployment = await nursery.start(serve_chain, options, dev)
        opened = Chain(dev, deployment)
        yield opened
        for client in opened.clients:
            client.close()
        nursery.cancel_scope.cancel()


async def test_two_of_three_validators_slash_the_provider_on_chain(chain: Chain) -> None:
    with trio.fail_after(120):
        provider, p_client = await chain.staker(20_000)
        validators = [await chain.staker(10_000) for _ in range(3)]
        params = await off_loop(lambda: slash_params_of(p_client))
        assert (params.threshold, params.validator_min_stake) == (2, 10_000 * CREDIT)
        supply = await off_loop(lambda: int(p_client.token.functions.totalSupply().call()))
        published: list[bytes] = []

        async def publish(topic: str, raw: bytes) -> None:
            assert topic == SLASH_TOPIC
            published.append(raw)

        slashers = [Slasher(identity, client, StakeBook(client), params, publish=publish,
                            clock_ms=lambda: 0) for identity, client in validators]
        payee = account_of(provider)
        for slasher in slashers[:2]:  # two of the three confirmed the fraud
            done = await slasher.on_fraud(provider.peer_id, address_bytes(payee.address),
                                          bind_signature(payee, provider.peer_id), REPORT)
            assert done.startswith("voted"), done
        collector = slashers[2]
        assert [await collector.receive(raw) for raw in published[:1]] == [""]
        while await collector.stakes.refresh():
            pass
        assert await collector.submit_ready() == 0  # one signature: never submitted
        assert await collector.receive(published[1]) == ""
        while await collector.stakes.refresh():
            pass
        assert await collector.submit_ready() == 1
        amount = slash_amount(20_000 * CREDIT)
        assert collector.journal[-1].result.startswith("slashed")
        assert await off_loop(lambda: p_client.stake_of(payee.address)) == 20_000 * CREDIT - amount
        after = await off_loop(lambda: int(p_client.token.functions.totalSupply().call()))
        assert supply - after == amount
        # The first voter submits too, later: the chain refuses the used evidence.
        assert await slashers[0].receive(published[1]) == ""
        while await slashers[0].stakes.refresh():
            pass
        await slashers[0].submit_ready()
        assert slashers[0].journal[-1].result == "already slashed"
        assert await off_loop(lambda: p_client.stake_of(payee.address)) == 20_000 * CREDIT - amount


async def test_governance_weights_are_the_stake_locked_at_the_snapshot(chain: Chain) -> None:
    with trio.fail_after(120):
        (alice, a_client), (bob, _) = await chain.staker(30_000), await chain.staker(10_000)
        snapshot = await off_loop(a_client.block_number)
        carol, _ = await chain.staker(50_000)  # locked after the snapshot: weighs nothing
        weights = ChainWeights(a_client, OwnAccount.of(alice))
        proposal = sign_proposal(alice, "check_rate_pm", 10, voting_deadline=2 * HOUR,
                                 effective_at=2 * HOUR, issued_at=HOUR, snapshot_block=snapshot)
        votes = []
        for n, voter in enumerate((alice, bob, carol)):
            own = OwnAccount.of(voter)
            votes.append(sign_vote(voter, proposal.id, True, stake=sign_stake(voter, 0, 0),
                                   issued_at=HOUR + n, account=own.wire, binding=own.binding))
        await weights.refresh([proposal], votes)
        assert weights.refusal(proposal) == ""
        stake = weights.stake_for(proposal, votes)
        assert dict(stake.by_key) == {alice.public_key: 30_000 * CREDIT,
                                      bob.public_key: 10_000 * CREDIT, carol.public_key: 0}
        assert stake.known_total == 40_000 * CREDIT

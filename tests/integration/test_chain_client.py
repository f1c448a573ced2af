"""`ChainClient` against a local chain served in this process (hypercorn on trio, the
client in a worker thread, as node code calls it): redeeming vouchers in a batch, the
stake history and a slash by two validators, and the chain errors for a wrong chain,
no contract, too little ether and a replayed slash."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
import requests
import trio
from web3 import Web3

from p2pinfer.errors import ChainFundsError, ChainRevertedError, ChainUnreachableError
from p2pinfer.identity import NodeIdentity
from p2pinfer.settle.account import ChainAccount, account_of
from p2pinfer.settle.chain import ChainClient
from p2pinfer.settle.chain_serve import ChainServeOptions, serve_chain
from p2pinfer.settle.devchain import DevChain
from p2pinfer.settle.ports import VoucherClaim
from p2pinfer.settle.vouchers import sign_digest, slash_digest, voucher_digest

T = TypeVar("T")
CREDIT = 10**6


class Chain:
    def __init__(self, dev: DevChain, deployment: dict[str, Any]) -> None:
        self.dev = dev
        self.deployment = deployment
        self.clients: list[ChainClient] = []  # closed when the fixture ends

    def account(self, credits: int, ether: bool = True) -> ChainAccount:
        acct = account_of(NodeIdentity.generate())
        if ether:
            self.dev.fund(acct.address, credits * CREDIT)
        else:  # credits only: the token transfer alone
            self.dev.credit().functions.transfer(acct.address, credits * CREDIT).transact(
                {"from": self.dev.faucet})
        return acct

    async def client(self, acct: ChainAccount) -> ChainClient:
        """A client for `acct`, connected from a worker thread (the server is on this one)."""
        client = await off_loop(lambda: ChainClient.connect(
            self.deployment["rpc"], self.deployment["channels"], acct,
            expected_chain_id=self.deployment["chain_id"]))
        self.clients.append(client)
        return client

    async def channels_to(self, provider: ChainAccount, consumers: int) -> list[ChainAccount]:
        """`consumers` new accounts of 10 credits, each with 5 deposited toward `provider`."""
        accounts = [self.account(10) for _ in range(consumers)]
        for acct in accounts:
            client = await self.client(acct)
            await off_loop(lambda client=client: client.deposit(provider.address, 5 * CREDIT))
        return accounts

    def voucher(self, consumer: ChainAccount, provider: ChainAccount, cumulative: int) -> bytes:
        """`consumer`'s signature on its voucher for `cumulative` toward `provider`."""
        return sign_digest(consumer.private_key, voucher_digest(
            self.deployment["channels"], self.deployment["chain_id"], consumer.address,
            provider.address, cumulative))


async def off_loop(fn: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(fn)


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


async def test_redeem_many_pays_each_voucher_and_the_provider_share(chain: Chain) -> None:
    provider = chain.account(0)
    p_client = await chain.client(provider)
    consumers = await chain.channels_to(provider, 2)
    claims = [VoucherClaim(c.address, n * CREDIT, chain.voucher(c, provider, n * CREDIT))
              for n, c in enumerate(consumers, start=1)]
    with trio.fail_after(60):
        outcome = await off_loop(lambda: p_client.redeem_many(claims))
        assert outcome.block > 0 and outcome.gas_used > 0
        states = [await off_loop(lambda c=c: p_client.channel(c.address, provider.address))
                  for c in consumers]
        share_bps = await off_loop(lambda: int(p_client.channels.functions.split_bps(0).call()))
        earned = await off_loop(lambda: p_client.credits_of(provider.address))
    assert [s.redeemed for s in states] == [CREDIT, 2 * CREDIT]
    assert [s.unredeemed for s in states] == [4 * CREDIT, 3 * CREDIT]
    assert earned == CREDIT * share_bps // 10_000 + 2 * CREDIT * share_bps // 10_000


async def test_two_sends_at_once_from_one_account_both_land(chain: Chain) -> None:
    """A node's redeemer and slasher send from its one account, each from its own worker
    thread. Both read the account's next nonce before either sent: the second
    transaction reused the first's nonce and was refused (nonce too low), so a slash
    or a redemption was lost. The reads are slowed here to make the overlap certain."""
    provider = chain.account(0)
    p_client = await chain.client(provider)
    consumers = await chain.channels_to(provider, 2)
    eth = p_client.w3.eth
    read = eth.get_transaction_count

    def slow_read(*args: Any) -> Any:
        count = read(*args)
        time.sleep(0.3)
        return count

    eth.get_transaction_count = slow_read  # type: ignore[method-assign]

    async def redeem(consumer: ChainAccount) -> None:
        sig = chain.voucher(consumer, provider, CREDIT)
        await off_loop(lambda: p_client.redeem(consumer.address, CREDIT, sig))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for c in consumers:
                nursery.start_soon(redeem, c)
        states = [await off_loop(lambda c=c: p_client.channel(c.address, provider.address))
                  for c in consumers]
    assert [s.redeemed for s in states] == [CREDIT, CREDIT]


async def test_stake_history_and_a_slash_by_two_validators(chain: Chain) -> None:
    provider, v1, v2 = chain.account(100), chain.account(10_000), chain.account(10_000)
    p_client = await chain.client(provider)
    with trio.fail_after(90):
        for acct, units in ((provider, 100 * CREDIT), (v1, 10_000 * CREDIT),
                            (v2, 10_000 * CREDIT)):
            client = await chain.client(acct)
            await off_loop(lambda client=client, u=units: client.lock(u))
        block = await off_loop(p_client.block_number)
        assert await off_loop(lambda: p_client.stake_at(provider.address, block)) == 100 * CREDIT
        assert await off_loop(lambda: p_client.total_stake_at(block)) == 20_100 * CREDIT
        evidence = bytes(range(32))
        digest = slash_digest(str(p_client.stake.address), chain.deployment["chain_id"],
                              provider.address, 30 * CREDIT, evidence)
        sigs = [sign_digest(v.private_key, digest) for v in (v1, v2)]
        v1_client = await chain.client(v1)
        await off_loop(lambda: v1_client.slash(provider.address, 30 * CREDIT, evidence, sigs))
        assert await off_loop(lambda: p_client.stake_of(provider.address)) == 70 * CREDIT
        assert await off_loop(lambda: p_client.stake_at(provider.address, block)) == 100 * CREDIT
        with pytest.raises(ChainRevertedError, match="evidence already used"):
            await off_loop(lambda: v1_client.slash(provider.address, 30 * CREDIT, evidence,
                                                   sigs))


async def test_credits_without_ether_for_gas_is_a_funds_error(chain: Chain) -> None:
    broke = chain.account(5, ether=False)
    client = await chain.client(broke)
    with trio.fail_after(30), pytest.raises(ChainFundsError, match="ether for gas"):
        await off_loop(lambda: client.lock(CREDIT))


class RecordedSession(requests.Session):
    """A requests session that remembers being closed (and every one made)."""

    made: ClassVar[list[RecordedSession]] = []

    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        RecordedSession.made.append(self)

    def close(self) -> None:
        self.closed = True
        super().close()


async def test_another_chain_or_no_contract_is_unreachable_and_leaves_no_connection(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    acct = chain.account(0)
    rpc, channels = chain.deployment["rpc"], chain.deployment["channels"]
    RecordedSession.made.clear()
    monkeypatch.setattr(requests, "Session", RecordedSession)
    with await chain.client(acct) as client:  # a client closes its session when done
        assert await off_loop(client.block_number) >= 0
        assert not RecordedSession.made[0].closed
    assert RecordedSession.made[0].closed
    with trio.fail_after(30):
        with pytest.raises(ChainUnreachableError, match="not the deployment's chain 5"):
            await off_loop(lambda: ChainClient.connect(rpc, channels, acct, expected_chain_id=5))
        with pytest.raises(ChainUnreachableError, match="no contract at"):
            await off_loop(lambda: ChainClient.connect(rpc, Web3.to_checksum_address(
                "0x" + "11" * 20), acct))
    # A connect that fails closes the session it made (web3 would have kept it open).
    assert len(RecordedSession.made) == 3 and all(s.closed for s in RecordedSession.made)


async def test_with_a_block_time_a_transaction_waits_for_the_next_block(tmp_path: Path) -> None:
    dev = DevChain()
    options = ChainServeOptions(deployment_file=tmp_path / "d.json", port=0, block_time_s=0.3)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            deployment = await nursery.start(serve_chain, options, dev)
            chain = Chain(dev, deployment)
            acct = chain.account(3)
            await trio.sleep(0.7)  # the faucet's transfers wait for a block too
            with await chain.client(acct) as client:
                before = await off_loop(client.block_number)
                outcome = await off_loop(lambda: client.lock(CREDIT))
                assert outcome.block > before
                assert await off_loop(lambda: client.stake_of(acct.address)) == CREDIT
        nursery.cancel_scope.cancel()

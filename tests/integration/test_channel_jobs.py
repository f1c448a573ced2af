"""Jobs paid through payment channels over real libp2p hosts and real SQLite ledgers;
the chain is FakeChainForTests (test_chain_settlement.py runs a real local chain)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from p2pinfer.errors import AllProvidersFailedError, InsufficientCreditError
from p2pinfer.identity import NodeIdentity
from p2pinfer.market.channel_entries import VoucherBody
from p2pinfer.market.ledger import Ledger
from p2pinfer.protocol import JobAccept, JobParams, Receipt, decode_as
from p2pinfer.settle.account import account_of, bind_signature
from p2pinfer.settle.addresses import address_bytes
from p2pinfer.settle.channels import CHAIN_READS_PER_ASKER, ChannelBook
from p2pinfer.settle.payer import PayerBook, Voucher
from p2pinfer.settle.redeemer import Redeemer, RedeemPolicy
from p2pinfer.settle.vouchers import sign_digest, voucher_digest
from tests.integration.job_helpers import (
    FAKE_MODEL,
    FakeBackend,
    Provider,
    start_consumer,
    start_provider,
    wait_for_providers,
)
from tests.support.fake_chain import SEED_SPLIT, FakeChainForTests
from tests.support.raw_jobs import first_answer, read_then_leave, signed_request
from tests.support.waiting import await_until

pytestmark = pytest.mark.network

PARAMS = JobParams(max_tokens=8, temperature=0.0, seed=1)
PRICE = 1000


class CheatingPayer(PayerBook):
    """Signs each voucher for less than the cumulative it claims (attack)."""

    async def sign_voucher(self, provider: str, job_id: bytes, charged: int) -> Voucher:
        digest = voucher_digest(self.chain.channels_address, self.chain.chain_id,
                                self.account.address, provider, charged - 1)
        return Voucher(0, charged, sign_digest(self.account.private_key, digest))


async def provider_with_channels(
    stack: AsyncExitStack, nursery: trio.Nursery, tmp: Path, engine: FakeBackend | None = None,
) -> tuple[Provider, ChannelBook, FakeChainForTests]:
    identity = NodeIdentity.generate()
    account = account_of(identity)
    chain = FakeChainForTests(account.address)
    ledger = stack.enter_context(Ledger.open(tmp / "channels.sqlite3", identity))
    book = ChannelBook(chain, ledger, binding=bind_signature(account, identity.peer_id))
    await nursery.start(book.run)
    from p2pinfer.jobs.job_server import JobServerConfig
    provider = await start_provider(stack, nursery, engine or FakeBackend(), tmp,
                                    identity=identity,
                                    channels=book,
                                    config=JobServerConfig(price_per_1k=PRICE))
    return provider, book, chain


def payer_on(chain: FakeChainForTests, identity: NodeIdentity,
             cls: type[PayerBook] = PayerBook) -> tuple[str, object]:
    account = account_of(identity)
    view = chain.as_account(account.address)
    return account.address, lambda ledger: cls(view, account, ledger)


async def test_a_funded_consumer_pays_by_voucher_and_the_provider_redeems_its_share(
        tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider, book, chain = await provider_with_channels(stack, nursery, tmp_path)
            identity = NodeIdentity.generate()
            payer, make = payer_on(chain, identity)
            chain.deposit(payer, chain.address, 10_000_000)
            net, client, ledger = await start_consumer(
                stack, tmp_path, (provider.net.addrs()[0],), identity=identity,
                payer=make)  # type: ignore[arg-type]
            await wait_for_providers(net, FAKE_MODEL, 1)
            first = await client.run(FAKE_MODEL, "hello", PARAMS)
            second = await client.run(FAKE_MODEL, "hello again", PARAMS)
            total = first.charged + second.charged
            receipt = decode_as(second.receipt, Receipt).msg
            assert receipt.cumulative == total and receipt.voucher is not None
            with trio.fail_after(5):
                while book.channels.get(payer) is None or book.channels[payer].held != total:
                    await trio.sleep(0.01)
            # Both sides journaled the voucher; both ledgers still verify.
            signed = [e.body for e in ledger.entries() if isinstance(e.body, VoucherBody)]
            assert [v.cumulative for v in signed] == [first.charged, total]
            ledger.verify_or_raise()
            provider.ledger.verify_or_raise()
            supply = chain.total_supply
            redemption = await Redeemer(book, provider.ledger,
                                        RedeemPolicy(max_interval_s=0, gas_multiple=0)).step()
            assert redemption is not None and redemption.amount == total
            share = total * SEED_SPLIT[0] // 10_000
            assert chain.balances[chain.address] == share
            burned = total - share - total * SEED_SPLIT[1] // 10_000 - (
                total * SEED_SPLIT[3] // 10_000)
            assert supply - chain.total_supply == burned
            nursery.cancel_scope.cancel()


async def test_a_consumer_without_a_funded_channel_is_refused_with_the_deposit_command(
        tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider, _, chain = await provider_with_channels(stack, nursery, tmp_path)
            identity = NodeIdentity.generate()
            _, make = payer_on(chain, identity)
            net, client, _ = await start_consumer(
                stack, tmp_path, (provider.net.addrs()[0],), identity=identity,
                payer=make)  # type: ignore[arg-type]
            await wait_for_providers(net, FAKE_MODEL, 1)
            with pytest.raises(InsufficientCreditError) as refused:
                await client.run(FAKE_MODEL, "hello", PARAMS)
            assert str(refused.value).startswith(
                f"no funded channel to {chain.address}: run `p2pinfer wallet deposit "
                f"{chain.address} CREDITS`")
            assert provider.server.records[-1].outcome == "rejected:insufficient_credit"
            nursery.cancel_scope.cancel()


async def test_a_request_without_a_payer_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider, _, _ = await provider_with_channels(stack, nursery, tmp_path)
            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            with pytest.raises(AllProvidersFailedError, match="needs a payer account"):
                await client.run(FAKE_MODEL, "hello", PARAMS)
            nursery.cancel_scope.cancel()


async def test_a_bad_voucher_leaves_the_job_unpaid_and_the_key_refused(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider, book, chain = await provider_with_channels(stack, nursery, tmp_path)
            identity = NodeIdentity.generate()
            payer, make = payer_on(chain, identity, CheatingPayer)
            chain.deposit(payer, chain.address, 10_000_000)
            net, client, _ = await start_consumer(
                stack, tmp_path, (provider.net.addrs()[0],), identity=identity,
                payer=make)  # type: ignore[arg-type]
            await wait_for_providers(net, FAKE_MODEL, 1)
            await client.run(FAKE_MODEL, "hello", PARAMS)  # the consumer thinks it paid
            with trio.fail_after(5):
                while provider.server.records[-1].outcome != "unpaid":
                    await trio.sleep(0.01)
            assert book.channels[payer].held == 0
            assert not [e for e in provider.ledger.entries() if e.kind in ("charge", "voucher")]
            with pytest.raises(InsufficientCreditError, match="bad voucher"):
                await client.run(FAKE_MODEL, "hello", PARAMS)
            nursery.cancel_scope.cancel()


async def test_keys_bound_to_one_funded_account_take_one_answer_unpaid_not_one_each(
        tmp_path: Path) -> None:
    """Attack 72: with settlement a key is served as a payer once its payer account's
    channel covers the job, and a job left unpaid (an answer read and the stream reset
    before its result, or a result without a voucher) refused the key alone. Keys are
    free and any number of them can be bound to one account, so one deposit bought
    answers without end: a fresh key bound to it for each. On the code before, 6 of 6
    answers were taken so. Now a job left unpaid refuses its payer account at that
    provider too, as a bad voucher does."""
    engine = FakeBackend(tokens=[f"w{i} " for i in range(1_000)], pause_after=40)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider, book, chain = await provider_with_channels(stack, nursery, tmp_path,
                                                                 engine)
            owner = account_of(NodeIdentity.generate())
            chain.deposit(owner.address, chain.address, 10_000_000)
            net, _, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            pid, answers = provider.net.peer_id, []
            for _ in range(6):
                key = NodeIdentity.generate()  # a new key each time, the same account
                raw = signed_request(key, pid, FAKE_MODEL, max_tokens=900,
                                     max_price_per_1k=PRICE, payer=(
                                         address_bytes(owner.address),
                                         bind_signature(owner, key.peer_id)))
                answers.append(await read_then_leave(net, pid, raw, chars=40 * 3))
                await await_until(lambda: len(provider.server.records) == len(answers))
            nursery.cancel_scope.cancel()
    accepted = [a for a in answers if isinstance(a, JobAccept)]
    assert len(accepted) == 1, answers  # 6 on the old code
    assert [(a.code, "left a job unpaid" in a.message)  # type: ignore[attr-defined]
            for a in answers[1:]] == [("insufficient_credit", True)] * 5
    assert [r.outcome for r in provider.server.records] == (
        ["cancelled"] + ["rejected:insufficient_credit"] * 5)
    assert book.channels[owner.address].reserved == 0  # every hold went back


async def test_fresh_unfunded_accounts_cost_a_provider_a_bounded_number_of_chain_reads(
        tmp_path: Path) -> None:
    """Attack 74: a provider reads a payer's channel from the chain the first time it sees
    the account (and again, 2 s apart at most, while it is uncovered). Accounts and keys
    are free, so a peer sending requests that each name a fresh unfunded account made
    the provider call its RPC endpoint once a request (40 of 40 on the code before):
    a paid endpoint's quota spent, and honest new payers refused `busy` while 32 such
    reads were in flight. Now each asker (its connection's address group; its PeerID on
    loopback or through a relay) causes at most CHAIN_READS_PER_ASKER reads a minute,
    all askers together CHAIN_READS_PER_MIN, and a funded newcomer is still served."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider, _, chain = await provider_with_channels(stack, nursery, tmp_path)
            net, _, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            pid, before, answers = provider.net.peer_id, chain.reads, []
            for _ in range(40):
                key, account = NodeIdentity.generate(), account_of(NodeIdentity.generate())
                raw = signed_request(key, pid, FAKE_MODEL, max_price_per_1k=PRICE, payer=(
                    address_bytes(account.address), bind_signature(account, key.peer_id)))
                answers.append((await first_answer(net, pid, raw)).msg)
            reads = chain.reads - before
            identity = NodeIdentity.generate()
            payer, make = payer_on(chain, identity)
            chain.deposit(payer, chain.address, 10_000_000)
            honest, client, _ = await start_consumer(
                stack, tmp_path / "honest", (provider.net.addrs()[0],), identity=identity,
                payer=make)  # type: ignore[arg-type]
            await wait_for_providers(honest, FAKE_MODEL, 1)
            served = await client.run(FAKE_MODEL, "hello", PARAMS)
            nursery.cancel_scope.cancel()
    assert reads == CHAIN_READS_PER_ASKER, reads  # 40 on the old code
    codes = [getattr(a, "code", None) for a in answers]
    assert codes == ["insufficient_credit"] * reads + ["busy"] * (40 - reads), codes
    assert "chain reads" in answers[-1].message  # type: ignore[attr-defined]
    assert served.charged > 0


def test_vouchers_on_the_wire_are_for_this_chain_and_contract() -> None:
    # The digest binds the chain id and the Channels address: a voucher for one does not
    # verify for another (replay across deployments).
    acct = account_of(NodeIdentity.generate())
    other = "0x" + "ab" * 20
    d1 = voucher_digest("0x" + "c0" * 20, 1, acct.address, other, 5)
    d2 = voucher_digest("0x" + "c0" * 20, 2, acct.address, other, 5)
    d3 = voucher_digest("0x" + "c1" * 20, 1, acct.address, other, 5)
    assert len({d1, d2, d3}) == 3

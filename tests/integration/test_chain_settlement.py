"""Jobs paid through channels on a real local chain (eth-tester's py-evm behind the
`p2pinfer chain serve` JSON-RPC front, contracts from deploy_all) and real libp2p hosts:
a funded consumer's job is paid by voucher, the provider redeems, its token balance
rises by exactly its split share and the supply falls by the burn share; a consumer
without a funded channel is refused with the deposit command."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pinfer.errors import InsufficientCreditError
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.job_server import JobServerConfig
from p2pinfer.market.channel_entries import RedeemedClaim, RedemptionBody
from p2pinfer.market.ledger import Ledger
from p2pinfer.protocol import JobParams
from p2pinfer.settle.account import account_of, bind_signature
from p2pinfer.settle.addresses import address_bytes
from p2pinfer.settle.chain import ChainClient
from p2pinfer.settle.chain_serve import ChainServeOptions, serve_chain
from p2pinfer.settle.channels import ChannelBook
from p2pinfer.settle.payer import PayerBook
from p2pinfer.settle.reconcile import reconcile
from p2pinfer.settle.redeemer import Redeemer, RedeemPolicy
from tests.integration.job_helpers import (
    FAKE_MODEL,
    FakeBackend,
    start_consumer,
    start_provider,
    wait_for_providers,
)

pytestmark = pytest.mark.network

PARAMS = JobParams(max_tokens=8, temperature=0.0, seed=1)
CREDIT = 10**6  # token units per credit
SEED_PROVIDER_BPS, SEED_POOL_BPS, SEED_TREASURY_BPS = 6000, 1500, 1000


async def connect(rpc: str, channels: str, identity: NodeIdentity) -> ChainClient:
    return await trio.to_thread.run_sync(
        lambda: ChainClient.connect(rpc, channels, account_of(identity)))


async def call(fn: Any, *args: Any) -> Any:
    # The chain's py-evm runs on the trio thread: every JSON-RPC call from a worker.
    return await trio.to_thread.run_sync(lambda: fn(*args))


# Over 60 lines by design: one channel's life (fund, job, voucher, redeem, split, refusal
# of the unfunded) in the order it happens on one chain.
async def test_a_funded_channel_pays_the_job_and_redeeming_splits_it_on_chain(
        tmp_path: Path) -> None:
    provider_id, consumer_id, broke_id = (NodeIdentity.generate() for _ in range(3))
    fund = tuple((account_of(i).address, 100 * CREDIT)
                 for i in (provider_id, consumer_id, broke_id))
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            data = await nursery.start(serve_chain, ChainServeOptions(
                deployment_file=tmp_path / "chain.json", port=0, fund=fund))
            rpc, channels = data["rpc"], data["channels"]
            # Closed when the block ends (their HTTP sessions), before the chain stops.
            provider_chain = stack.enter_context(await connect(rpc, channels, provider_id))
            consumer_chain = stack.enter_context(await connect(rpc, channels, consumer_id))
            broke_chain = stack.enter_context(await connect(rpc, channels, broke_id))
            provider_acct = account_of(provider_id).address
            await call(consumer_chain.deposit, provider_acct, 5 * CREDIT)

            ledger = stack.enter_context(Ledger.open(tmp_path / "p.sqlite3", provider_id))
            book = ChannelBook(provider_chain, ledger, binding=bind_signature(
                account_of(provider_id), provider_id.peer_id))
            await nursery.start(book.run)
            engine = FakeBackend()
            provider = await start_provider(stack, nursery, engine, tmp_path,
                                            identity=provider_id, channels=book,
                                            config=JobServerConfig(price_per_1k=10_000))
            bootstrap = (provider.net.addrs()[0],)

            net, client, _ = await start_consumer(
                stack, tmp_path / "c", bootstrap, identity=consumer_id,
                payer=lambda lg: PayerBook(consumer_chain, account_of(consumer_id), lg))
            await wait_for_providers(net, FAKE_MODEL, 1)
            outcome = await client.run(FAKE_MODEL, "hello", PARAMS)
            charged = outcome.charged
            assert charged > 0
            with trio.fail_after(10):
                while (book.channels.get(account_of(consumer_id).address) is None
                       or book.channels[account_of(consumer_id).address].held != charged):
                    await trio.sleep(0.02)

            balance_before = await call(provider_chain.credits_of, provider_acct)
            supply_before = await call(provider_chain.token.functions.totalSupply().call)
            redemption = await Redeemer(book, ledger,
                                        RedeemPolicy(max_interval_s=0, gas_multiple=0)).step()
            assert redemption is not None and redemption.amount == charged
            share = charged * SEED_PROVIDER_BPS // 10_000
            burn = charged - share - charged * SEED_POOL_BPS // 10_000 - (
                charged * SEED_TREASURY_BPS // 10_000)
            assert await call(provider_chain.credits_of, provider_acct) == balance_before + share
            supply_after = await call(provider_chain.token.functions.totalSupply().call)
            assert supply_before - supply_after == burn
            state = await call(provider_chain.channel, account_of(consumer_id).address,
                               provider_acct)
            assert state.redeemed == charged
            ledger.verify_or_raise()

            # `ledger --verify --chain-rpc`: the journal and the chain tell one story...
            checked = await call(reconcile, ledger.entries(), provider_chain)
            assert checked.ok and (checked.channels, checked.redemptions) == (1, 1)
            # ...and a journaled redemption the chain never mined is caught.
            ledger.record_settlement(RedemptionBody(
                redemption_channels := bytes.fromhex(channels[2:]), bytes.fromhex(
                    provider_acct[2:]), "0x" + "ab" * 32, 1, 21_000, (RedeemedClaim(
                        bytes.fromhex(account_of(consumer_id).address[2:]), charged + 7, 7),)))
            assert redemption_channels == address_bytes(channels)
            forged = await call(reconcile, ledger.entries(), provider_chain)
            assert [m.reason for m in forged.mismatches] == [
                f"the journal records redemptions up to {charged + 7} units, the chain only "
                f"{charged}", f"redemption 0x{'ab' * 32} is not on the chain"]

            # A job stopped mid-answer (attack 66) is paid for what came, by a voucher too.
            engine.pause_after = 3
            async with client.job(FAKE_MODEL, "go on", JobParams(max_tokens=16)) as job:
                await job.next_delta()
                await engine.paused.wait()
            with trio.fail_after(10):
                while provider.server.records[-1].outcome != "cancelled":
                    await trio.sleep(0.02)
            stopped = provider.server.records[-1]
            assert (stopped.completion_tokens, stopped.charged > 0) == (3, True)
            assert [e for e in provider.ledger.entries() if e.kind == "charge"][-1].body.amount == (
                stopped.charged)  # recorded once its voucher checked out

            net2, broke, _ = await start_consumer(
                stack, tmp_path / "b", bootstrap, identity=broke_id,
                payer=lambda lg: PayerBook(broke_chain, account_of(broke_id), lg))
            await wait_for_providers(net2, FAKE_MODEL, 1)
            with pytest.raises(InsufficientCreditError,
                               match=f"no funded channel to {provider_acct}: run `p2pinfer "
                                     f"wallet deposit {provider_acct} CREDITS`"):
                await broke.run(FAKE_MODEL, "hello", PARAMS)
            nursery.cancel_scope.cancel()

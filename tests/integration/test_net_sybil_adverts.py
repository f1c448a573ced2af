"""Sybil adverts (issue 14, item 2) against real hosts: fake providers (fresh keys, price 0,
dead addresses) neither use up a job's attempts nor fill a catalog through one peer."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.client import JobClient
from p2pinfer.jobs.job_server import JobServerConfig
from p2pinfer.jobs.job_types import ClientConfig
from p2pinfer.net.advert_limits import NEW_SIGNER_BURST
from p2pinfer.net.adverts import ADVERTS_TOPIC, VerifiedAdvert, verify_advert
from p2pinfer.net.host import run_host
from p2pinfer.protocol import JobParams
from p2pinfer.verify.reputation import Outcome
from p2pinfer.verify.reputation_store import ReputationBook
from tests.integration.job_helpers import (
    FAKE_MODEL,
    FakeBackend,
    Provider,
    start_consumer,
    start_provider,
)
from tests.integration.net_helpers import advert_template, config
from tests.support.attack_adverts import fake_advert, inject

pytestmark = pytest.mark.network

#: More fakes than the client probes at once (8), so some rank first unprobed.
FAKES = 12


def fakes(count: int = FAKES) -> list[VerifiedAdvert]:
    return [verify_advert(fake_advert(NodeIdentity.generate(), model=FAKE_MODEL, price=0,
                                      ttl_ms=60_000)) for _ in range(count)]


async def honest_advert(provider: Provider) -> VerifiedAdvert:
    while provider.net.local_advert is None:
        await trio.sleep(0.01)
    return verify_advert(provider.net.local_advert)


async def test_sybil_providers_that_cannot_be_dialled_use_up_no_attempt(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            honest = await start_provider(stack, nursery, FakeBackend(), tmp_path,
                                          config=JobServerConfig(price_per_1k=900))
            # One attempt: before, the first fake used it up and the job failed.
            net, client, _ = await start_consumer(stack, tmp_path, (),
                                                  config=ClientConfig(max_attempts=1))
            sybils = fakes()
            for advert in [await honest_advert(honest), *sybils]:
                assert net.catalog.admit(advert) is None
            outcome = await client.run(FAKE_MODEL, "go", JobParams(max_tokens=2))
            assert outcome.provider == honest.net.peer_id
            tried = [f.provider for f in outcome.failovers]
            assert tried and set(tried) <= {s.signer for s in sybils}
            nursery.cancel_scope.cancel()


async def test_sybil_providers_behind_an_open_breaker_use_up_no_attempt(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            honest = await start_provider(stack, nursery, FakeBackend(), tmp_path,
                                          config=JobServerConfig(price_per_1k=900))
            net, _, ledger = await start_consumer(stack, tmp_path, ())
            book = stack.enter_context(ReputationBook.open(tmp_path / "reputation.sqlite3"))
            sybils = fakes()
            for advert in sybils:
                while book.allow(advert.signer):  # failed us before: its breaker is open
                    book.record(advert.signer, Outcome.JOB_FAILED)
            client = JobClient(net, net.config.identity, ledger=ledger, reputation=book,
                               config=ClientConfig(max_attempts=1))
            for advert in [await honest_advert(honest), *sybils]:
                assert net.catalog.admit(advert) is None
            outcome = await client.run(FAKE_MODEL, "go", JobParams(max_tokens=2))
            assert outcome.provider == honest.net.peer_id
            assert outcome.failovers == ()  # skipped, never tried
            nursery.cancel_scope.cancel()


async def test_one_peer_introduces_a_bounded_number_of_new_signers() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            node = await stack.enter_async_context(run_host(config(ip="127.0.0.1")))
            mallory = await stack.enter_async_context(run_host(config(ip="127.0.0.2")))
            await mallory.connect(node.addrs()[0])
            await mallory.wait_for_mesh(node.peer_id, ADVERTS_TOPIC)
            sent = await inject(mallory, NEW_SIGNER_BURST + 40, model=FAKE_MODEL)
            gate = node.advert_gate
            while gate.accepted + gate.drops["flood"] < len(sent):
                await trio.sleep(0.05)
            listed = set(sent) & set(node.catalog.peer_ids())
            assert NEW_SIGNER_BURST <= len(listed) <= NEW_SIGNER_BURST + 2  # +refill
            assert gate.drops["flood"] >= 38
            # An honest newcomer announcing itself is not held back by Mallory's flood.
            honest = await stack.enter_async_context(run_host(config(ip="127.0.0.3")))
            await honest.connect(node.addrs()[0])
            honest.start_advertising(lambda: advert_template(ttl_ms=60_000), interval_s=0.5)
            await node.catalog.wait_for(lambda cat: honest.peer_id in cat.peer_ids())

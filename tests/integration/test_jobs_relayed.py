"""A provider nobody can dial directly serves jobs through a relay (real hosts on
loopback, the real embedded engine, real ledgers).

NAT is simulated: the provider listens on loopback but announces only an address nothing
listens on, so no one knows a direct address of it, and it never dials the consumer's
127.0.0.2 (`deny_ips`; a provider behind NAT that dials out to its consumer gets a direct
connection, as it would on the internet). The relay listens on 127.0.0.4.

DCUtR (off by default) is shown only as far as loopback allows: its exchange gives away
the provider's real listen address, which is dialable here, so it proves the connection
and the job move off the relay, not that a hole can be punched through a NAT."""

from __future__ import annotations

import random
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from multiaddr import Multiaddr

from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import ModelSource
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.client import JobClient
from p2pinfer.jobs.job_server import JobServerConfig
from p2pinfer.market.ledger import Ledger
from p2pinfer.net.autonat_rules import AutoNatConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.relay_rules import RelayClientConfig, RelayServiceConfig, is_circuit_addr
from p2pinfer.protocol import ChatTurn, JobParams
from p2pinfer.testing.tiny_model import TINY_MODEL_NAME, write_tiny_model
from p2pinfer.validator.checker import Verifier
from p2pinfer.verify.config import VerifyConfig
from p2pinfer.verify.reputation_store import ReputationBook
from tests.integration.job_helpers import (
    FAKE_MODEL,
    FakeBackend,
    Provider,
    charges,
    start_consumer,
    start_provider,
    wait_for_providers,
)
from tests.integration.net_helpers import config

pytestmark = pytest.mark.network

GREEDY = JobParams(max_tokens=24, temperature=0.0, seed=7)
MANUAL = AutoNatConfig(confirmations=1, first_delay_s=3600.0)
UNREACHABLE = ("/ip4/127.0.0.1/tcp/1",)
CONSUMER_LISTEN = ("/ip4/127.0.0.2/tcp/0",)
CONSUMER = {"listen_addrs": CONSUMER_LISTEN, "autonat": MANUAL}
RELAY_IP = "127.0.0.4"


def behind_nat_options(relay_addr: str) -> dict[str, Any]:
    """NetConfig fields of a provider only reachable through the relay at `relay_addr`."""
    return {"announce_addrs": UNREACHABLE, "autonat": MANUAL, "deny_ips": ("127.0.0.2",),
            "relay_client": RelayClientConfig(reserve=(relay_addr,), check_interval_s=0.3)}


def relay_config() -> Any:
    return config(ip=RELAY_IP, autonat=MANUAL, relay=RelayServiceConfig(mode="on"))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


async def advertised_circuit(net: NetHost, provider: str) -> None:
    """Until `net`'s catalog holds an advert of `provider` naming a circuit address."""
    def ready(catalog: object) -> bool:
        entry = net.catalog.advert_of(provider)
        return entry is not None and any(
            is_circuit_addr(a) for a in entry.advert.listen_addrs)
    while not ready(net.catalog):
        await trio.sleep(0.2)


async def relayed_setup(
    stack: AsyncExitStack, nursery: trio.Nursery, engine: EmbeddedBackend, tmp_path: Path,
    consumer: dict[str, Any],
) -> tuple[NetHost, Provider, NetHost, JobClient, Ledger]:
    """A relay, a provider reachable only through it and a consumer (NetConfig fields
    `consumer`), once the consumer's catalog holds the provider's circuit advert:
    (relay, provider, consumer net, client, consumer ledger)."""
    relay = await stack.enter_async_context(run_host(relay_config()))
    relay_addr = relay.addrs()[0]
    provider = await start_provider(stack, nursery, engine, tmp_path, bootstrap=(relay_addr,),
                                    net_options=behind_nat_options(relay_addr))
    net, client, ledger = await start_consumer(stack, tmp_path, (relay_addr,),
                                               net_options=consumer)
    await advertised_circuit(net, provider.net.peer_id)
    return relay, provider, net, client, ledger


async def provider_charged(provider: Provider, job_ids: list[bytes]) -> None:
    """Until the provider's ledger holds exactly these charges (it records them after
    the consumer's receipt); at most 5 s."""
    with trio.fail_after(5):
        while charges(provider.ledger) != job_ids:
            await trio.sleep(0.05)


async def circuits_end(relay: NetHost) -> None:
    """Until the relay carries no circuit (the relayed connection closed); at most 10 s."""
    with trio.fail_after(10):
        while relay.relay_hop.circuits:
            await trio.sleep(0.1)


async def test_a_provider_behind_nat_serves_a_job_through_a_relay(
    tiny_model: Path, tmp_path: Path
) -> None:
    engine = EmbeddedBackend([ModelSource(TINY_MODEL_NAME, tiny_model)])
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay, provider, net, client, ledger = await relayed_setup(
                stack, nursery, engine, tmp_path, CONSUMER)
            advert = net.catalog.advert_of(provider.net.peer_id)
            assert advert is not None
            assert all(is_circuit_addr(a) or "/tcp/1/" in a for a in advert.advert.listen_addrs)

            async with client.job("tiny", [ChatTurn("user", "Say something.")], GREEDY) as job:
                streamed = "".join([delta.text async for delta in job])
            outcome = job.outcome
            assert outcome is not None
            assert outcome.path == "relayed"
            assert outcome.provider == provider.net.peer_id and outcome.failovers == ()
            assert outcome.text == streamed and outcome.completion_tokens == 24
            assert charges(ledger) == [bytes.fromhex(outcome.job_id)]
            with trio.fail_after(5):  # the provider records the job after its charge
                while (charges(provider.ledger) != [bytes.fromhex(outcome.job_id)]
                       or not provider.server.records):
                    await trio.sleep(0.05)
            assert provider.server.records[-1].outcome == "completed"
            # The provider's side of the job's connection is relayed too.
            assert relay.relay_hop.circuits == 1

            nursery.cancel_scope.cancel()


async def stoppable_relay(scope: trio.CancelScope, *,
                          task_status: trio.TaskStatus[NetHost] = trio.TASK_STATUS_IGNORED,
                          ) -> None:
    """A relay node in its own task; cancelling `scope` makes it vanish as a killed process
    would (listeners and connections closed)."""
    with scope:
        async with run_host(relay_config()) as relay:
            task_status.started(relay)
            await trio.sleep_forever()


async def test_the_relay_dying_mid_answer_fails_the_job_over_and_it_is_charged_once(
    tmp_path: Path,
) -> None:
    behind_nat = FakeBackend(pause_after=3)  # holds its 4th token until the relay is gone
    reachable = FakeBackend()
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay_scope = trio.CancelScope()
            relay = await nursery.start(stoppable_relay, relay_scope)
            relay_addr = relay.addrs()[0]
            cheap = await start_provider(
                stack, nursery, behind_nat, tmp_path, config=JobServerConfig(price_per_1k=100),
                bootstrap=(relay_addr,), net_options=behind_nat_options(relay_addr))
            dear = await start_provider(stack, nursery, reachable, tmp_path,
                                        config=JobServerConfig(price_per_1k=900),
                                        bootstrap=(relay_addr,))
            net, client, ledger = await start_consumer(stack, tmp_path, (relay_addr,),
                                                       net_options=CONSUMER)
            await wait_for_providers(net, FAKE_MODEL, 2)
            await advertised_circuit(net, cheap.net.peer_id)

            async def kill_relay_when_paused() -> None:
                await behind_nat.paused.wait()
                relay_scope.cancel()

            nursery.start_soon(kill_relay_when_paused)
            outcome = await client.run(FAKE_MODEL, "go", JobParams(max_tokens=8))
            assert relay_scope.cancelled_caught or relay_scope.cancel_called
            assert outcome.text == "".join(f"t{i} " for i in range(8))
            assert outcome.provider == dear.net.peer_id and outcome.path == "direct"
            assert [f.provider for f in outcome.failovers] == [cheap.net.peer_id]
            assert charges(ledger) == [bytes.fromhex(outcome.job_id)]
            assert charges(cheap.ledger) == []
            with trio.fail_after(10):  # its slot went with the relay
                while cheap.net.relay_client.slots:
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()


async def test_with_dcutr_on_the_job_runs_on_a_direct_connection_and_the_relay_leg_closes(
    tiny_model: Path, tmp_path: Path
) -> None:
    engine = EmbeddedBackend([ModelSource(TINY_MODEL_NAME, tiny_model)])
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay, provider, net, client, ledger = await relayed_setup(
                stack, nursery, engine, tmp_path,
                CONSUMER | {"relay_client": RelayClientConfig(dcutr=True)})
            # The consumer cannot dial the provider: only the relay gets it there.
            assert provider.net.peer_id not in net.peers()

            async with client.job("tiny", [ChatTurn("user", "Say something.")], GREEDY) as job:
                streamed = "".join([delta.text async for delta in job])
            outcome = job.outcome
            assert outcome is not None and outcome.text == streamed
            assert outcome.path == "direct"  # the job ran on the DCUtR connection
            assert net.dcutr.upgrades == 1
            await circuits_end(relay)  # the relayed connection was closed
            assert charges(ledger) == [bytes.fromhex(outcome.job_id)]
            await provider_charged(provider, [bytes.fromhex(outcome.job_id)])
            nursery.cancel_scope.cancel()


async def test_dcutr_behind_a_relayed_job_keeps_it_on_the_relay_and_moves_the_next_one(
    tiny_model: Path, tmp_path: Path
) -> None:
    # A node's gateway default (`dcutr_behind`): the first job starts over the relay at
    # once, the punch runs beside it and must not cut it; the next job runs direct.
    engine = EmbeddedBackend([ModelSource(TINY_MODEL_NAME, tiny_model)])
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay, provider, net, client, ledger = await relayed_setup(
                stack, nursery, engine, tmp_path,
                CONSUMER | {"relay_client": RelayClientConfig(dcutr_behind=True)})
            assert provider.net.peer_id not in net.peers()

            async with client.job("tiny", [ChatTurn("user", "Say something.")], GREEDY) as job:
                deltas = aiter(job)
                streamed = (await anext(deltas)).text
                with trio.fail_after(20):  # the punch finishes while the job is open ...
                    while net.dcutr.upgrades < 1:
                        await trio.sleep(0.05)
                await trio.sleep(1.5)  # ... and its relayed connection is not closed under it
                assert relay.relay_hop.circuits
                streamed += "".join([delta.text async for delta in deltas])
            first = job.outcome
            assert first is not None and first.text == streamed and first.path == "relayed"
            await circuits_end(relay)  # closed once the job left it
            async with client.job("tiny", [ChatTurn("user", "Say more.")], GREEDY) as job:
                "".join([delta.text async for delta in job])
            second = job.outcome
            assert second is not None and second.path == "direct"
            assert net.dcutr.upgrades == 1
            jobs = [bytes.fromhex(first.job_id), bytes.fromhex(second.job_id)]
            assert charges(ledger) == jobs  # both receipted, the relayed one too
            await provider_charged(provider, jobs)
            nursery.cancel_scope.cancel()


async def start_validator(stack: AsyncExitStack, nursery: trio.Nursery, tmp: Path,
                          bootstrap: tuple[str, ...], model: Path) -> Verifier:
    """A validator node (its own engine judges) whose catalog hears the providers."""
    net, client, ledger = await start_consumer(stack, tmp, bootstrap, net_options=CONSUMER)
    book = stack.enter_context(ReputationBook.open(tmp / "validator-rep.sqlite3"))
    verifier = Verifier(net, client.identity, client,
                        backend=EmbeddedBackend([ModelSource(TINY_MODEL_NAME, model)]),
                        models=frozenset({TINY_MODEL_NAME}), reputation=book, ledger=ledger,
                        config=VerifyConfig(check_max_tokens=8, check_listen=CONSUMER_LISTEN),
                        rng=random.Random(3))
    nursery.start_soon(verifier.run)
    return verifier


async def test_a_check_job_reaches_a_provider_behind_nat_through_its_relay_only(
    tiny_model: Path, tmp_path: Path
) -> None:
    engine = EmbeddedBackend([ModelSource(TINY_MODEL_NAME, tiny_model)])
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            # The provider's "router": the direct address it advertises, where every
            # connection attempt is counted (and dropped, as a NAT drops it).
            knocks: list[str] = []

            async def router(stream: trio.SocketStream) -> None:
                knocks.append(str(stream.socket.getpeername()))
                await stream.aclose()

            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            router_port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(trio.serve_listeners, router, listeners)
            relay = await stack.enter_async_context(run_host(relay_config()))
            relay_addr = relay.addrs()[0]
            provider = await start_provider(
                stack, nursery, engine, tmp_path, bootstrap=(relay_addr,),
                net_options=behind_nat_options(relay_addr) | {
                    "announce_addrs": (f"/ip4/127.0.0.1/tcp/{router_port}",)})
            verifier = await start_validator(stack, nursery, tmp_path, (relay_addr,),
                                             tiny_model)
            await advertised_circuit(verifier.net, provider.net.peer_id)
            records = provider.server.records

            # The attack's premise: a check host that dials as consumers do knocks on the
            # provider's router first, from the validator's own address, before its relay
            # carries the job (on loopback the provider's address counts as our own
            # network, where consumers try direct first; on the internet, a validator on
            # its LAN would).
            verifier.config = replace(verifier.config, check_via_relay=False)
            assert await verifier.check_provider(provider.net.peer_id, TINY_MODEL_NAME)
            assert knocks and records[-1].path == "relayed"
            knocked = len(knocks)

            verifier.config = replace(verifier.config, check_via_relay=True)
            for _ in range(2):
                assert await verifier.check_provider(provider.net.peer_id, TINY_MODEL_NAME)
                assert records[-1].path == "relayed" and records[-1].outcome == "completed"
            assert len(knocks) == knocked  # the router saw nothing of these checks
            # Each check came from a key of its own, never the validator's.
            signers = [r.consumer for r in records]
            assert len(set(signers)) == 3 and verifier.net.peer_id not in signers
            nursery.cancel_scope.cancel()


async def test_a_bogus_relay_address_does_not_spare_a_provider_its_checks(
    tiny_model: Path, tmp_path: Path
) -> None:
    engine = EmbeddedBackend([ModelSource(TINY_MODEL_NAME, tiny_model)])
    nobody = NodeIdentity.generate().peer_id
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay = await stack.enter_async_context(run_host(relay_config()))
            relay_addr = relay.addrs()[0]
            provider = await start_provider(stack, nursery, engine, tmp_path,
                                            bootstrap=(relay_addr,),
                                            net_options={"autonat": MANUAL})
            # The lie: its adverts name a "relay" nobody runs (and only loopback, no public
            # address), in the hope that checks go there and never arrive.
            bogus = Multiaddr(
                f"/ip4/127.0.0.1/tcp/1/p2p/{nobody}/p2p-circuit/p2p/{provider.net.peer_id}")
            own = provider.net._host.get_addrs
            provider.net._host.get_addrs = lambda: [*own(), bogus]  # type: ignore[method-assign]
            verifier = await start_validator(stack, nursery, tmp_path, (relay_addr,),
                                             tiny_model)
            await advertised_circuit(verifier.net, provider.net.peer_id)
            result = await verifier.check_provider(provider.net.peer_id, TINY_MODEL_NAME)
            assert result is not None  # checked all the same, over a direct connection
            assert provider.server.records[-1].path == "direct"
            assert provider.server.records[-1].outcome == "completed"
            nursery.cancel_scope.cancel()

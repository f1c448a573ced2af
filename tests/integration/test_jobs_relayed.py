"""A provider nobody can dial directly serves jobs through a relay (real hosts on
127.0.0.1, the real embedded engine, real ledgers). Unreachability is simulated: the
provider listens on loopback but announces only an address nothing listens on, so every
direct dial is refused and only its circuit address works. The consumer listens on
127.0.0.2, which the provider never dials (`deny_ips`): a provider behind NAT that dials
out to its consumer would get a direct connection, as it would on the internet."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import ModelSource
from p2pinfer.backends.tiny_model import TINY_MODEL_NAME, write_tiny_model
from p2pinfer.net import NetHost, run_host
from p2pinfer.net.autonat_rules import AutoNatConfig
from p2pinfer.net.relay_rules import RelayClientConfig, RelayServiceConfig, is_circuit_addr
from p2pinfer.protocol import ChatTurn, JobParams
from tests.integration.job_helpers import charges, start_consumer, start_provider
from tests.integration.net_helpers import config

pytestmark = pytest.mark.network

GREEDY = JobParams(max_tokens=24, temperature=0.0, seed=7)
MANUAL = AutoNatConfig(confirmations=1, first_delay_s=3600.0)
UNREACHABLE = ("/ip4/127.0.0.1/tcp/1",)


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


async def test_a_provider_behind_nat_serves_a_job_through_a_relay(
    tiny_model: Path, tmp_path: Path
) -> None:
    engine = EmbeddedBackend([ModelSource(TINY_MODEL_NAME, tiny_model)])
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay = await stack.enter_async_context(run_host(config(
                autonat=MANUAL, relay=RelayServiceConfig(mode="on"))))
            relay_addr = relay.addrs()[0]
            provider = await start_provider(stack, nursery, engine, tmp_path,
                                            bootstrap=(relay_addr,), net_options={
                "announce_addrs": UNREACHABLE, "autonat": MANUAL, "deny_ips": ("127.0.0.2",),
                "relay_client": RelayClientConfig(reserve=(relay_addr,), check_interval_s=0.3)})
            net, client, ledger = await start_consumer(stack, tmp_path, (relay_addr,), net_options={
                "listen_addrs": ("/ip4/127.0.0.2/tcp/0",), "autonat": MANUAL})
            await advertised_circuit(net, provider.net.peer_id)
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
            with trio.fail_after(5):
                while charges(provider.ledger) != [bytes.fromhex(outcome.job_id)]:
                    await trio.sleep(0.05)
            assert provider.server.records[-1].outcome == "completed"
            # The provider's side of the job's connection is relayed too.
            assert relay.relay_hop.circuits == 1

            nursery.cancel_scope.cancel()

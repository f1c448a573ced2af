"""A relay, providers only reachable through it and consumers, on loopback (real hosts):
the set-up the relayed-job tests share (test_jobs_relayed.py, test_jobs_dcutr.py).

NAT is simulated: the provider listens on loopback but announces only an address nothing
listens on, so no one knows a direct address of it, and it never dials the consumer's
127.0.0.2 (`deny_ips`; a provider behind NAT that dials out to its consumer gets a direct
connection, as it would on the internet). The relay listens on 127.0.0.4."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from p2pinfer.backends.base import Backend
from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import ModelSource
from p2pinfer.jobs.client import JobClient
from p2pinfer.jobs.job_server import JobServerConfig
from p2pinfer.market.ledger import Ledger
from p2pinfer.net.autonat_rules import AutoNatConfig
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.relay_rules import RelayClientConfig, RelayServiceConfig, is_circuit_addr
from p2pinfer.protocol import JobParams
from p2pinfer.testing.tiny_model import TINY_MODEL_NAME
from tests.integration.job_helpers import Provider, charges, start_consumer, start_provider
from tests.integration.net_helpers import config

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


def relay_config() -> NetConfig:
    return config(ip=RELAY_IP, autonat=MANUAL, relay=RelayServiceConfig(mode="on"))



async def advertised_circuit(net: NetHost, provider: str) -> None:
    """Until `net`'s catalog holds an advert of `provider` naming a circuit address."""
    def ready(catalog: object) -> bool:
        entry = net.catalog.advert_of(provider)
        return entry is not None and any(
            is_circuit_addr(a) for a in entry.advert.listen_addrs)
    while not ready(net.catalog):
        await trio.sleep(0.2)


async def relayed_setup(
    stack: AsyncExitStack, nursery: trio.Nursery, model: Path | Backend, tmp_path: Path,
    consumer: dict[str, Any], provider_config: JobServerConfig = JobServerConfig(),
    relay_net: NetConfig | None = None, picked: bool = False,
) -> tuple[NetHost, Provider, NetHost, JobClient, Ledger]:
    """A relay (`relay_net`, else `relay_config()`), a provider of the GGUF `model` (the
    embedded engine; or `model` is the engine) reachable only through it and a consumer
    (NetConfig fields `consumer`), once the consumer's catalog holds the provider's
    circuit advert: (relay, provider, consumer net, client, consumer ledger). The
    provider's slot there is one its operator named, or with `picked` one it took itself
    (a relay it may drop)."""
    relay = await stack.enter_async_context(run_host(relay_net or relay_config()))
    relay_addr = relay.addrs()[0]
    engine = EmbeddedBackend([ModelSource(TINY_MODEL_NAME, model)]) \
        if isinstance(model, Path) else model
    options = behind_nat_options(relay_addr)
    if picked:
        options["relay_client"] = replace(options["relay_client"], reserve=())
    provider = await start_provider(stack, nursery, engine, tmp_path, bootstrap=(relay_addr,),
                                    net_options=options, config=provider_config)
    if picked:
        assert await provider.net.relay_client.reserve(relay_addr)
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

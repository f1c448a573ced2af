"""One SmolLM2 provider (the embedded engine) and one consumer with its HTTP gateway,
on real libp2p hosts: what gateway-parity tests send real clients' requests through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import SMOLLM2
from p2pinfer.gateway import GatewayConfig, run_gateway
from p2pinfer.gateway.view import HardwareView
from p2pinfer.jobs.client import JobClient
from p2pinfer.market.ledger import Ledger
from p2pinfer.node.view import LiveNodeView
from tests.integration.job_helpers import (
    Provider,
    start_consumer,
    start_provider,
    wait_for_providers,
)
from tests.support.backends import smollm2_source


@dataclass
class GatewayNet:
    url: str  # the consumer's gateway
    provider: Provider
    engine: EmbeddedBackend  # the provider's engine, to compare answers with
    client: JobClient
    ledger: Ledger  # the consumer's


@asynccontextmanager
async def smollm2_gateway(
    tmp_path: Path, *, embedding: bool = False
) -> AsyncIterator[GatewayNet]:
    """The two nodes and the gateway (the engine also embedding text with `embedding`);
    everything stops when the block is left."""
    engine = EmbeddedBackend([smollm2_source()], cache_dir=tmp_path, embedding=embedding)
    try:
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, engine, tmp_path)
            net, client, ledger = await start_consumer(stack, tmp_path,
                                                       (provider.net.addrs()[0],))
            await wait_for_providers(net, SMOLLM2, 1)
            view = LiveNodeView(net=net, client=client, metrics=client.metrics, ledger=ledger,
                                hardware=HardwareView("test cpu", 1, 1024))
            binding = await nursery.start(partial(run_gateway, view, GatewayConfig(port=0)))
            # A failure in the caller's block leaves by the nursery (which cancels the
            # nodes and raises it); cancelling here in a `finally` would let the
            # cancellation replace, and so hide, the failure.
            yield GatewayNet(binding.url, provider, engine, client, ledger)
            nursery.cancel_scope.cancel()
    finally:
        await engine.aclose()

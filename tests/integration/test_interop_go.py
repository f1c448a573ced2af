"""Interop with a go-libp2p peer (the p2pd daemon from hivemind's wheel:
tests/support/go_daemon.py), on loopback.

What a node must keep working with peers that are not py-libp2p: the handshake and
muxer (Noise, yamux, multistream-select) both ways, libp2p ping both ways, a protocol
the other side lacks answered as "not supported" by the pipelined opener (the bug a
rust-libp2p peer found: a refusal must not read as an unreachable peer), our DHT apart
from IPFS's (`/p2pinfer/kad/1.0.0`, never `/ipfs/kad/1.0.0`), and a job through a
go-libp2p Circuit Relay v2 relay. What such a relay's default limits do to longer
relayed traffic is measured, not asserted (docs/network.md, "Interop with go-libp2p").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import ModelSource
from p2pinfer.errors import ProtocolNotSupportedError
from p2pinfer.jobs.job_server import JOB_PROTOCOL_ID
from p2pinfer.net.compat.kad_protocol import DHT_PROTOCOL_ID
from p2pinfer.net.host import run_host
from p2pinfer.net.ping import PING_BYTES, ping
from p2pinfer.net.relay_rules import is_circuit_addr
from p2pinfer.protocol import ChatTurn
from p2pinfer.testing.tiny_model import TINY_MODEL_NAME, write_tiny_model
from tests.integration.job_helpers import charges, start_consumer, start_provider
from tests.integration.net_helpers import config
from tests.integration.relay_helpers import (
    CONSUMER,
    GREEDY,
    MANUAL,
    advertised_circuit,
    behind_nat_options,
)
from tests.support.go_daemon import GoPeer, daemon_files, go_daemon

pytestmark = pytest.mark.skipif(daemon_files() is None,
                                reason="hivemind's p2pd is not installed (scripts/setup-venv)")


@pytest.fixture(scope="module")
def go() -> Iterator[GoPeer]:
    # A relay service needs a public host in go-libp2p: reachability is forced public.
    with go_daemon("-dht", "-relayService", "-forceReachabilityPublic") as peer:
        yield peer


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


async def test_a_go_peer_and_ours_connect_and_ping_each_other(go: GoPeer) -> None:
    with trio.fail_after(30):
        async with run_host(config()) as net:
            assert await net.connect(go.addr) == go.peer_id  # Noise, yamux both agreed
            assert len(await ping(net, go.peer_id, 3)) == 3  # our ping, go's echo
            assert net.peer_id in await go.peers()
            stream = await go.open_stream(net.peer_id, "/ipfs/ping/1.0.0")  # go's ping, ours
            payload = os.urandom(PING_BYTES)
            await stream.send_all(payload)
            echoed = b""
            while len(echoed) < PING_BYTES:
                echoed += await stream.receive_some(PING_BYTES)
            assert echoed == payload
            await stream.aclose()


async def test_a_protocol_the_go_peer_lacks_is_not_supported_and_the_peer_stays(
    go: GoPeer,
) -> None:
    # go answers `na` to the proposal; pipelined (request in the same write) or not, the
    # opener says "not supported", never "unreachable", and the connection stays usable.
    with trio.fail_after(30):
        async with run_host(config()) as net:
            await net.connect(go.addr)
            with pytest.raises(ProtocolNotSupportedError):
                await net.open_stream(go.peer_id, JOB_PROTOCOL_ID, first=b"\x05hello")
            with pytest.raises(ProtocolNotSupportedError):
                await net.open_stream(go.peer_id, JOB_PROTOCOL_ID)
            assert len(await ping(net, go.peer_id, 1)) == 1


async def test_our_dht_speaks_its_own_protocol_never_ipfs_kad(go: GoPeer) -> None:
    # The go peer runs the IPFS DHT (`-dht`): it cannot pull our node into it, and it
    # reaches our DHT only under our prefix (which it does not speak itself).
    with trio.fail_after(30):
        async with run_host(config()) as net:
            await net.connect(go.addr)
            with pytest.raises(RuntimeError, match="protocols not supported"):
                await go.open_stream(net.peer_id, "/ipfs/kad/1.0.0")
            ours = await go.open_stream(net.peer_id, DHT_PROTOCOL_ID)
            await ours.aclose()
            with pytest.raises(ProtocolNotSupportedError):
                await net.open_stream(go.peer_id, DHT_PROTOCOL_ID, first=b"\x00")


async def test_a_provider_behind_nat_serves_a_job_through_a_go_relay(
    go: GoPeer, tiny_model: Path, tmp_path: Path
) -> None:
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            bootstrap = await stack.enter_async_context(run_host(config(
                ip="127.0.0.5", autonat=MANUAL)))
            seed = (bootstrap.addrs()[0],)
            engine = EmbeddedBackend([ModelSource(TINY_MODEL_NAME, tiny_model)])
            provider = await start_provider(stack, nursery, engine, tmp_path, bootstrap=seed,
                                            net_options=behind_nat_options(go.addr))
            net, client, ledger = await start_consumer(stack, tmp_path, seed,
                                                       net_options=CONSUMER)
            await advertised_circuit(net, provider.net.peer_id)
            circuits = [a for a in net.catalog.advert_of(provider.net.peer_id).advert.listen_addrs
                        if is_circuit_addr(a)]
            assert circuits and all(f"/p2p/{go.peer_id}/p2p-circuit" in a for a in circuits)
            outcome = await client.run("tiny", [ChatTurn("user", "Say hello.")], GREEDY)
            assert outcome.path == "relayed" and outcome.completion_tokens > 0
            assert charges(ledger) == [bytes.fromhex(outcome.job_id)]
            nursery.cancel_scope.cancel()

"""Interop with a go-libp2p peer (the p2pd daemon from hivemind's wheel:
tests/support/go_daemon.py), on loopback.

What a node must keep working with peers that are not py-libp2p:
- the handshake and muxer (Noise, yamux, multistream-select) both ways, libp2p ping,
  and a mebibyte each way through yamux's flow control;
- a protocol the other side lacks answered as "not supported" by the pipelined opener
  (the bug a rust-libp2p peer found: a refusal must not read as an unreachable peer);
- our DHT apart from IPFS's (`/p2pinfer/kad/1.0.0`, never `/ipfs/kad/1.0.0`);
- GossipSub across a go peer, and what that peer forges on our topic dropped;
- a job through a go-libp2p Circuit Relay v2 relay; such a relay's default limits (128
  KiB and 2 min a circuit: for hole punching) read from its answer, so that a node does
  not pick it for jobs by itself; and its cut at the limit ending our stream at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AsyncExitStack, suppress
from pathlib import Path

import pytest
import trio
from libp2p.peer.id import ID

from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import ModelSource
from p2pinfer.errors import ProtocolNotSupportedError, StreamClosedError
from p2pinfer.jobs.job_server import JOB_PROTOCOL_ID
from p2pinfer.net.compat.kad_protocol import DHT_PROTOCOL_ID
from p2pinfer.net.host import run_host
from p2pinfer.net.ping import PING_BYTES, ping
from p2pinfer.net.relay_rules import is_circuit_addr
from p2pinfer.net.streams import NetStream
from p2pinfer.protocol import ADVERTS_TOPIC, ChatTurn
from p2pinfer.testing.tiny_model import TINY_MODEL_NAME, write_tiny_model
from tests.integration.job_helpers import charges, start_consumer, start_provider
from tests.integration.net_helpers import config
from tests.integration.relay_helpers import (
    CONSUMER,
    GREEDY,
    MANUAL,
    advertised_circuit,
    behind_nat_options,
    relay_config,
)
from tests.support.go_daemon import GoPeer, daemon_files, go_daemon

pytestmark = pytest.mark.skipif(daemon_files() is None,
                                reason="hivemind's p2pd is not installed (scripts/setup-venv)")


GO_CIRCUIT_BYTES, GO_CIRCUIT_S = 128 * 1024, 120  # go-libp2p's default relay limits


@pytest.fixture(scope="module")
def go() -> Iterator[GoPeer]:
    # A relay service needs a public host in go-libp2p: reachability is forced public.
    # The daemon answers reservations with its flags' limits or, after a while, with
    # go-libp2p's defaults (both seen): the flags are set to those defaults.
    with go_daemon("-dht", "-pubsub", "-relayService", "-forceReachabilityPublic",
                   f"-relayDataLimit={GO_CIRCUIT_BYTES}", f"-relayTimeLimit={GO_CIRCUIT_S}s"
                   ) as peer:
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


async def test_a_mebibyte_each_way_between_go_and_us_keeps_yamux_flow_control(
    go: GoPeer,
) -> None:
    # Four times yamux's initial window each way, echoed as it arrives: both sides'
    # window updates (ours: net/compat/yamux_window.py) must satisfy the other's.
    big = os.urandom(1024 * 1024)
    with trio.fail_after(60):
        async with run_host(config()) as net:
            net.set_stream_handler(ECHO, echo)
            await net.connect(go.addr)
            stream = await go.open_stream(net.peer_id, ECHO)
            back = bytearray()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.send_all, big)
                while len(back) < len(big) and (data := await stream.receive_some(65536)):
                    back += data
            assert bytes(back) == big
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


async def test_adverts_cross_a_go_gossipsub_peer_and_what_it_forges_is_dropped(
    go: GoPeer, tiny_model: Path, tmp_path: Path
) -> None:
    # A provider and a consumer of ours meet only through the go peer: GossipSub carries
    # the provider's signed advert across it (go checks our message signatures, we check
    # its). What the go peer publishes itself on the topic is judged like any peer's:
    # junk is invalid, and the provider's advert republished under the go key is forged.
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            heard = await go.subscribe(ADVERTS_TOPIC)  # the go peer joins the topic
            engine = EmbeddedBackend([ModelSource(TINY_MODEL_NAME, tiny_model)])
            provider = await start_provider(stack, nursery, engine, tmp_path)
            net, _, _ = await start_consumer(stack, tmp_path, (), net_options=CONSUMER)
            await provider.net.connect(go.addr)
            await net.connect(go.addr)
            with trio.fail_after(30):
                while net.catalog.advert_of(provider.net.peer_id) is None:
                    await trio.sleep(0.1)
            assert provider.net.peer_id not in net.peers()  # it came through the go peer
            message = await go.next_message(heard)  # go verified and delivered it too
            assert ID(getattr(message, "from")).to_base58() == provider.net.peer_id
            await go.publish(ADVERTS_TOPIC, b"not an advert")
            await go.publish(ADVERTS_TOPIC, message.data)
            with trio.fail_after(10):
                while (net.advert_gate.drops["invalid"], net.advert_gate.drops["forged"]) \
                        != (1, 1):
                    await trio.sleep(0.05)
            assert net.catalog.peer_ids() == [provider.net.peer_id]
            await heard.aclose()
            nursery.cancel_scope.cancel()


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
            # Named by the operator, the go relay is used although it grants only
            # go-libp2p's default circuits (128 KiB, 2 min), which the slot records.
            slot = provider.net.relay_client.slots[go.peer_id]
            assert (slot.circuit_bytes, slot.circuit_s) == (GO_CIRCUIT_BYTES, GO_CIRCUIT_S)
            outcome = await client.run("tiny", [ChatTurn("user", "Say hello.")], GREEDY)
            assert outcome.path == "relayed" and outcome.completion_tokens > 0
            assert charges(ledger) == [bytes.fromhex(outcome.job_id)]
            nursery.cancel_scope.cancel()


async def test_a_relay_picked_by_itself_is_skipped_when_its_circuits_are_too_small(
    go: GoPeer,
) -> None:
    # A node behind NAT picks relays among its connected peers. The go relay's circuits
    # end at 128 KiB or 2 min, too small for jobs: it takes a slot at ours instead and
    # never tries the go relay again.
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            ours = await stack.enter_async_context(run_host(relay_config()))
            net = await stack.enter_async_context(run_host(config(autonat=MANUAL)))
            await net.connect(go.addr)
            await net.connect(ours.addrs()[0])
            with trio.fail_after(10):  # until identify says both serve the relay protocol
                while len(net.relay_client._relay_candidates(set())) < 2:
                    await trio.sleep(0.05)
            await net.relay_client.upkeep("private")
            assert list(net.relay_client.slots) == [ours.peer_id]
            assert net.relay_client.limited == {go.peer_id: (GO_CIRCUIT_BYTES, GO_CIRCUIT_S)}
            assert all(ours.peer_id in a for a in net.relay_client.circuit_addrs())
            await net.relay_client.upkeep("private")  # not asked again
            assert list(net.relay_client.slots) == [ours.peer_id]


async def test_a_go_relay_cuts_a_circuit_at_its_limit_and_our_stream_ends(
    go: GoPeer,
) -> None:
    # Past 128 KiB the go relay half-closes the circuit (go-libp2p: CloseWrite towards
    # the provider, CloseRead from us): our stream must end at once, so a job on it
    # fails over, rather than wait on bytes that never come.
    big = os.urandom(2 * GO_CIRCUIT_BYTES)
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            provider = await stack.enter_async_context(run_host(config(
                **behind_nat_options(go.addr))))
            provider.set_stream_handler(ECHO, echo)
            while not provider.relay_client.circuit_addrs():
                await trio.sleep(0.1)
            net = await stack.enter_async_context(run_host(config(autonat=MANUAL)))
            await net.relay_client.dial(provider.peer_id, provider.relay_client.circuit_addrs())
            stream = await net.open_stream(provider.peer_id, ECHO, first=b"hello")
            assert stream.path == "relayed" and await stream.read_some() == b"hello"
            echoed = 0
            with trio.fail_after(5):  # the end comes within a fraction of a second
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(write_quietly, stream, big)
                    while data := await stream.read_some():
                        echoed += len(data)
                    nursery.cancel_scope.cancel()
            assert echoed < GO_CIRCUIT_BYTES  # cut: the rest never came back


ECHO = "/p2pinfer-test/echo/1.0.0"


async def echo(stream: NetStream) -> None:
    with suppress(StreamClosedError):
        while data := await stream.read_some(timeout_s=30):
            await stream.write(data)
        await stream.close()


async def write_quietly(stream: NetStream, data: bytes) -> None:
    with suppress(StreamClosedError):  # the circuit is cut under it: the test's point
        await stream.write(data, timeout_s=10)

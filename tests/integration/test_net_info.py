"""The info protocol: a peer's current signed advert, and the round trip to get it."""

from __future__ import annotations

import contextlib

import pytest
import trio

from p2pinfer.errors import P2PInferError, PeerUnreachableError, SignatureError
from p2pinfer.net.adverts import verify_advert
from p2pinfer.net.host import run_host
from p2pinfer.net.info import INFO_BURST, INFO_PROTOCOL, INFO_RATE_PER_S, ask_advert
from tests.integration.net_helpers import config, make_advert

pytestmark = pytest.mark.network


async def test_info_returns_the_current_advert_and_an_rtt() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as provider, run_host(config()) as consumer:
            await consumer.connect(provider.addrs()[0])
            assert await consumer.fetch_advert(provider.peer_id) is None  # nothing yet

            await provider.publish_advert(make_advert(provider.config.identity, 1))
            await provider.publish_advert(make_advert(provider.config.identity, 2))
            fetched = await consumer.fetch_advert(provider.peer_id)
            assert fetched is not None
            assert (fetched.advert.signer, fetched.advert.seq) == (provider.peer_id, 2)
            assert fetched.rtt_ms > 0
            assert consumer.catalog.advert_of(provider.peer_id) == fetched.advert


async def test_advert_signed_by_someone_else_is_refused() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as liar, run_host(config()) as consumer:
            other = make_advert(consumer.config.identity, 1)

            async def serve_other(stream):  # type: ignore[no-untyped-def]
                await stream.read_frame()
                await stream.write_frame(other)

            liar.set_stream_handler(INFO_PROTOCOL, serve_other)
            await consumer.connect(liar.addrs()[0])
            stream = await consumer.open_stream(liar.peer_id, INFO_PROTOCOL)
            with pytest.raises(SignatureError):
                await ask_advert(stream, verify_advert)
            assert consumer.catalog.peer_ids() == []


async def test_unreachable_peer_is_a_clear_error() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as gone:
            addr, peer_id = gone.addrs()[0], gone.peer_id
        async with run_host(config()) as consumer:
            with pytest.raises(PeerUnreachableError):
                await consumer.connect(addr)
            with pytest.raises(PeerUnreachableError):
                await consumer.fetch_advert(peer_id)  # no address known at all


async def test_stream_to_a_gossip_only_provider_dials_the_address_in_its_advert() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as provider, run_host(config()) as consumer:
            advert = make_advert(provider.config.identity, 1, addrs=tuple(provider.addrs()))
            await provider.publish_advert(advert)  # no peers yet: it reaches nobody
            # The consumer receives it as if relayed by gossip (same validator).
            assert consumer.advert_gate.check(provider.peer_id, advert) is not None
            assert provider.peer_id not in consumer.peers()
            fetched = await consumer.fetch_advert(provider.peer_id)
            assert fetched is not None and fetched.advert.seq == 1
            assert provider.peer_id in consumer.peers()


async def test_adverts_asked_for_in_a_loop_are_answered_at_a_rate() -> None:
    """Attack 65: an info request is one empty frame, its answer the node's whole signed
    advert (~0.5-2 KB, more with many models), written through Noise and Yamux, and
    nothing bounded how often a peer may ask: 300 asks in a row over one connection were
    all answered (a native asker pipelines 256 streams a second a connection, 16
    connections an address: megabytes a second of the node's upload). Now a peer gets
    INFO_BURST answers, then INFO_RATE_PER_S a second, and an address (not loopback)
    INFO_ADDRESS_BURST then INFO_ADDRESS_RATE_PER_S; past either the stream is reset
    unanswered. Another peer's asks are its own."""
    asks = 300
    with trio.fail_after(60):
        async with run_host(config()) as node, run_host(config()) as hog, \
                run_host(config()) as honest:
            await node.publish_advert(make_advert(node.config.identity, 1))
            await hog.connect(node.addrs()[0])
            await honest.connect(node.addrs()[0])
            answered = 0
            started = trio.current_time()
            for _ in range(asks):
                with contextlib.suppress(P2PInferError):
                    answered += await hog.fetch_advert(node.peer_id, timeout_s=5) is not None
            elapsed = trio.current_time() - started
            fetched = await honest.fetch_advert(node.peer_id, timeout_s=5)
    assert fetched is not None and fetched.advert.signer == node.peer_id
    # All 300 answered on the old code.
    assert answered <= INFO_BURST + INFO_RATE_PER_S * elapsed + 1, (answered, elapsed)
    assert answered >= INFO_BURST  # the burst itself is answered: honest probes fit in it

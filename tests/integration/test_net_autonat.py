"""AutoNAT between real hosts on loopback: a node peers can dial back learns it is public,
one whose advertised address nothing listens on learns it is private, and a node asked to
dial back reaches only the requester's observed IP, a bounded number of times."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.host.autonat.pb.autonat_pb2 import Message
from libp2p.peer.id import ID

from p2pinfer.errors import StreamClosedError
from p2pinfer.identity import NodeIdentity
from p2pinfer.net.autonat import AUTONAT_PROTOCOL_ID, MAX_AUTONAT_MESSAGE, _response
from p2pinfer.net.autonat_rules import AutoNatConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.streams import NetStream
from p2pinfer.node.session import summarize_peers
from p2pinfer.protocol import encode_frame
from tests.integration.job_helpers import (
    FAKE_MODEL,
    FakeBackend,
    start_consumer,
    start_provider,
    wait_for_providers,
)
from tests.integration.net_helpers import config

pytestmark = pytest.mark.network

# Rounds only when the test asks (check_once), one agreeing peer is enough.
MANUAL = AutoNatConfig(confirmations=1, first_delay_s=3600.0, dial_timeout_s=3.0)


def free_port(ip: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


async def dial_request(net: NetHost, server: str, addrs: list[str],
                       peer_id: str | None = None) -> Any:
    """Send one hand-made DIAL to `server`; its DIAL_RESPONSE."""
    request = Message()
    request.type = Message.DIAL
    request.dial.peer.id = ID.from_base58(peer_id or net.peer_id).to_bytes()
    for addr in addrs:
        request.dial.peer.addrs.append(multiaddr.Multiaddr(addr).to_bytes())
    stream = await net.open_stream(server, AUTONAT_PROTOCOL_ID,
                                   first=encode_frame(request.SerializeToString()))
    raw = await stream.read_frame(max_size=MAX_AUTONAT_MESSAGE, timeout_s=20)
    await stream.close()
    response = Message()
    response.ParseFromString(raw)
    return response.dialResponse


@asynccontextmanager
async def two_public_nodes() -> AsyncIterator[tuple[NetHost, NetHost]]:
    """Two dialable nodes that answer AutoNAT (and run no rounds of their own)."""
    async with run_host(config(autonat=MANUAL)) as first, \
            run_host(config(autonat=MANUAL)) as second:
        yield first, second


def behind_nat(autonat: AutoNatConfig) -> AbstractAsyncContextManager[NetHost]:
    """A node whose announced address nothing listens on: every dial-back fails."""
    return run_host(config(announce_addrs=(f"/ip4/127.0.0.1/tcp/{free_port()}",),
                           autonat=autonat))


def listen_port(net: NetHost) -> int:
    return int(multiaddr.Multiaddr(net.addrs()[0]).value_for_protocol("tcp"))


async def test_a_dialable_node_is_public_and_one_advertising_a_dead_address_is_private() -> None:
    with trio.fail_after(60):
        async with run_host(config(autonat=MANUAL)) as server:
            async with run_host(config(autonat=MANUAL)) as reachable:
                assert reachable.reachability == "unknown"
                await reachable.connect(server.addrs()[0])
                assert await reachable.autonat.check_once() == "public"
                assert reachable.reachability == "public"
                # Each side's view of the other: the server reached it by a dial-back,
                # and it dialled the server itself.
                assert server.peer_reachability(reachable.peer_id) == "public"
                assert reachable.peer_reachability(server.peer_id) == "public"
            dead = f"/ip4/127.0.0.1/tcp/{free_port()}"
            async with run_host(config(announce_addrs=(dead,), autonat=MANUAL)) as hidden:
                await hidden.connect(server.addrs()[0])
                assert server.peer_reachability(hidden.peer_id) == "unknown"  # it dialled in
                assert await hidden.autonat.check_once() == "private"
                assert hidden.reachability == "private"
                assert server.peer_reachability(hidden.peer_id) == "private"


async def test_the_status_waits_for_enough_agreeing_peers() -> None:
    with trio.fail_after(60):
        two = replace(MANUAL, confirmations=2)
        async with (
            run_host(config(autonat=MANUAL)) as first,
            run_host(config(autonat=MANUAL)) as second,
            run_host(config(autonat=two)) as node,
        ):
            await node.connect(first.addrs()[0])
            assert await node.autonat.check_once() == "unknown"  # one peer said public
            await node.connect(second.addrs()[0])
            assert await node.autonat.check_once() == "public"


async def test_behind_nat_in_a_network_of_two_public_nodes_a_node_learns_it_is_private(
) -> None:
    # The default asks 3 agreeing peers; a network of two public nodes (a bootstrap and a
    # relay) has only two to ask, so both agreeing must do, and one alone must not.
    default = replace(AutoNatConfig(), first_delay_s=3600.0, dial_timeout_s=3.0)
    with trio.fail_after(60):
        async with (
            two_public_nodes() as (first, second),
            behind_nat(default) as hidden,
            run_host(config(autonat=default)) as reachable,
        ):
            for node in (hidden, reachable):
                await node.connect(first.addrs()[0])
                assert await node.autonat.check_once() == "unknown"  # one peer's word
                await node.connect(second.addrs()[0])
            assert await hidden.autonat.check_once() == "private"
            assert await reachable.autonat.check_once() == "public"
            assert hidden.reachability == "private" and reachable.reachability == "public"


async def test_a_node_still_unknown_asks_a_peer_it_just_met_without_waiting_30_s(
) -> None:
    # Its first round finds one peer (no verdict: unknown); the next round waits for the
    # unknown interval (30 s) unless a peer the last round did not ask connects: then it
    # comes after NEW_PEER_ROUND_GAP_S (5 s).
    auto = replace(AutoNatConfig(), first_delay_s=0.2, dial_timeout_s=3.0)
    assert auto.unknown_interval_s == 30.0
    with trio.fail_after(25):
        async with two_public_nodes() as (first, second), behind_nat(auto) as hidden:
            await hidden.connect(first.addrs()[0])
            while hidden.autonat.rounds == 0:
                await trio.sleep(0.05)
            assert hidden.reachability == "unknown"  # one peer's word
            await hidden.connect(second.addrs()[0])
            while hidden.reachability == "unknown":
                await trio.sleep(0.1)
            assert hidden.reachability == "private" and hidden.autonat.rounds == 2


async def test_a_node_that_stays_unknown_asks_each_peer_early_once_then_every_30_s(
) -> None:
    # Peers that give no verdict (they do not serve AutoNAT) leave the node unknown: the
    # early round is for peers never asked, not every 5 s for good. One peer a round:
    # round 1 asks one, round 2 (5 s later) the other, then 30 s until round 3.
    one_a_round = replace(AutoNatConfig(), first_delay_s=0.2, servers_per_round=1)
    mute = replace(MANUAL, serve=False)
    with trio.fail_after(30):
        async with (
            run_host(config(autonat=mute)) as first,
            run_host(config(autonat=mute)) as second,
            behind_nat(one_a_round) as node,
        ):
            await node.connect(first.addrs()[0])
            await node.connect(second.addrs()[0])
            await trio.sleep(12.0)  # rounds at ~0.2 and ~5.2 s; a third would be at ~10.2
            assert node.reachability == "unknown" and node.autonat.rounds == 2


async def test_a_peer_that_does_not_serve_autonat_gives_no_verdict() -> None:
    with trio.fail_after(30):
        silent = replace(MANUAL, serve=False)
        async with run_host(config(autonat=silent)) as server, \
                run_host(config(autonat=MANUAL)) as node:
            await node.connect(server.addrs()[0])
            assert await node.autonat.ask(server.peer_id) is None
            assert await node.autonat.check_once() == "unknown"


async def test_a_dial_back_goes_only_to_the_requesters_observed_ip() -> None:
    accepted: list[Any] = []

    async def count(stream: trio.SocketStream) -> None:
        accepted.append(stream)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            # Another machine's listener (127.0.0.2) that the requester names as its own.
            [listener] = await nursery.start(partial(trio.serve_tcp, count, 0, host="127.0.0.2"))
            victim_port = listener.socket.getsockname()[1]
            async with run_host(config(autonat=MANUAL)) as server, \
                    run_host(config(autonat=MANUAL)) as requester:
                await requester.connect(server.addrs()[0])
                answer = await dial_request(
                    requester, server.peer_id, [f"/ip4/127.0.0.2/tcp/{victim_port}"])
                assert answer.status == Message.E_DIAL_ERROR  # 127.0.0.1:port: nobody
                assert accepted == []
                # The same request naming its real port, under another IP, reaches it
                # at the observed IP.
                port = listen_port(requester)
                answer = await dial_request(
                    requester, server.peer_id, [f"/ip4/203.0.113.9/tcp/{port}"])
                assert answer.status == Message.OK
                assert multiaddr.Multiaddr(answer.addr) == multiaddr.Multiaddr(
                    f"/ip4/127.0.0.1/tcp/{port}")
            nursery.cancel_scope.cancel()


async def test_a_request_for_another_peer_id_is_refused() -> None:
    with trio.fail_after(30):
        async with run_host(config(autonat=MANUAL)) as server, \
                run_host(config(autonat=MANUAL)) as requester:
            await requester.connect(server.addrs()[0])
            other = NodeIdentity.generate().peer_id
            answer = await dial_request(requester, server.peer_id,
                                        [f"/ip4/127.0.0.1/tcp/{listen_port(requester)}"],
                                        peer_id=other)
            assert answer.status == Message.E_BAD_REQUEST


async def test_dial_backs_are_rate_limited_per_requesting_peer() -> None:
    with trio.fail_after(60):
        limited = replace(MANUAL, per_peer_per_min=2)
        async with run_host(config(autonat=limited)) as server, \
                run_host(config(autonat=MANUAL)) as requester:
            await requester.connect(server.addrs()[0])
            addr = [f"/ip4/127.0.0.1/tcp/{listen_port(requester)}"]
            statuses = [(await dial_request(requester, server.peer_id, addr)).status
                        for _ in range(3)]
            assert statuses == [Message.OK, Message.OK, Message.E_DIAL_REFUSED]


async def test_peers_summary_shows_a_provider_this_session_dialled_as_public(
    tmp_path: Path,
) -> None:
    """What `p2pinfer peers` prints in its reachability column."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, FakeBackend(), tmp_path)
            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            [summary] = summarize_peers(client, await client.survey(timeout_s=5))
            assert summary.peer_id == provider.net.peer_id
            assert summary.reachability == "public"
            # The provider only saw the consumer dial in: it cannot tell.
            assert provider.net.peer_reachability(net.peer_id) == "unknown"
            nursery.cancel_scope.cancel()


async def test_junk_and_oversized_requests_are_refused_and_the_server_keeps_serving() -> None:
    with trio.fail_after(30):
        async with run_host(config(autonat=MANUAL)) as server, \
                run_host(config(autonat=MANUAL)) as requester:
            await requester.connect(server.addrs()[0])

            async def exchange(body: bytes) -> Any:
                stream = await requester.open_stream(server.peer_id, AUTONAT_PROTOCOL_ID,
                                                     first=encode_frame(body, 1 << 20))
                try:
                    raw = await stream.read_frame(max_size=MAX_AUTONAT_MESSAGE, timeout_s=10)
                finally:
                    await stream.reset()
                response = Message()
                response.ParseFromString(raw)
                return response.dialResponse

            assert (await exchange(b"\xff\xfe not protobuf")).status == Message.E_BAD_REQUEST
            wrong_type = Message()
            wrong_type.type = Message.DIAL_RESPONSE
            assert (await exchange(wrong_type.SerializeToString())).status == (
                Message.E_BAD_REQUEST)
            many = Message()
            many.type = Message.DIAL
            many.dial.peer.id = ID.from_base58(requester.peer_id).to_bytes()
            for port in range(1000, 1040):  # over MAX_REQUEST_ADDRS
                many.dial.peer.addrs.append(
                    multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}").to_bytes())
            assert (await exchange(many.SerializeToString())).status == Message.E_BAD_REQUEST
            with pytest.raises(StreamClosedError):  # over 4 KiB: dropped unread
                await exchange(b"\x00" * (MAX_AUTONAT_MESSAGE + 1))
            assert await requester.autonat.ask(server.peer_id) is True


async def lie_about_dial_backs(stream: NetStream) -> None:
    """An AutoNAT server that answers "could not dial you" without dialling."""
    await stream.read_frame(max_size=MAX_AUTONAT_MESSAGE, timeout_s=10)
    await stream.write_frame(_response(Message.E_DIAL_ERROR, "dial failed"))


async def vote_with_liars(monkeypatch: pytest.MonkeyPatch,
                          liar_ips: list[str]) -> tuple[str, tuple[int, int], int]:
    """A node asks honest servers on 127.0.0.2-4 and liars on `liar_ips` in one round:
    its status, the verdict counts and the voters verified. Loopback servers normally
    vote by key (a local testnet shares 127.0.0.1): here each one listens on its own
    127.0.0.x, so that rule (`addresses.asker_group`'s) is lifted."""
    from p2pinfer import addresses
    monkeypatch.setattr(addresses, "is_loopback", lambda host: False)
    node_config = replace(MANUAL, confirmations=3, servers_per_round=8)
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            node = await stack.enter_async_context(run_host(config(autonat=node_config)))
            honest = [await stack.enter_async_context(run_host(config(
                ip=f"127.0.0.{i}", autonat=MANUAL))) for i in (2, 3, 4)]
            liars = [await stack.enter_async_context(run_host(config(
                ip=ip, autonat=MANUAL))) for ip in liar_ips]
            for liar in liars:
                liar.set_stream_handler(AUTONAT_PROTOCOL_ID, lie_about_dial_backs)
            for server in (*honest, *liars):
                await node.connect(server.addrs()[0])
            status = await node.autonat.check_once()
            return status, node.autonat.verdicts.counts(), node.autonat.verdicts.verified()


async def test_fresh_keys_on_one_address_cannot_vote_a_public_node_private(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Attack 45: verdicts counted one per server key, and keys are free: five keys on one
    # address answering "could not dial you" outvoted three honest servers that did,
    # and the public node turned private (its relay service off, its DHT in client
    # mode, its adverts routed through relays). A server's verdict now counts once per
    # address group.
    status, counts, _ = await vote_with_liars(monkeypatch, ["127.0.0.5"] * 5)
    assert (status, counts) == ("public", (3, 1))


async def test_servers_lying_from_more_address_groups_cannot_outvote_dial_backs_that_arrived(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Attack 77: attack 45's defence counts a verdict once per address group, so liars on
    # more groups than the honest servers a node asks (4 against 3) still voted a public
    # node private. A failure is only a server's word; a dial-back is a TCP connection
    # that arrives here. An OK whose dial-back arrived from that server's address (any
    # loopback address here, where dialers connect from 127.0.0.1) is a fact, and two
    # such groups make the node public whatever the others say.
    status, counts, verified = await vote_with_liars(
        monkeypatch, [f"127.0.0.{i}" for i in (5, 6, 7, 8)])
    assert counts == (3, 4) and verified == 3
    assert status == "public"  # "private" on the old code

"""Attack: a flood of idle HTTP connections takes the node's file descriptors.

hypercorn keeps every connection it accepts until the client is done with it; each is
a file descriptor of the node's process, the table its libp2p sockets and SQLite files
come from. One client opening connections faster than they time out filled it. The
server here is the real one (`serve_asgi`, hypercorn on trio) on 127.0.0.1; the
attacker connects from 127.0.0.2, an honest client from 127.0.0.3.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config

from p2pinfer.gateway.app import create_gateway_app
from p2pinfer.gateway.config import GatewayConfig
from p2pinfer.http.asgi_server import serve_asgi
from p2pinfer.http.conn_gate import ConnectionLimits, KnownClients, client_key, default_total
from tests.support.gateway import FakeNodeView, running_gateway

ATTACKER, HONEST = "127.0.0.2", "127.0.0.3"


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


@asynccontextmanager
async def server(limits: ConnectionLimits) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    config = Config()
    config.accesslog = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial_serve, sock, config, limits)
            yield sock.getsockname()[1]
            nursery.cancel_scope.cancel()
    finally:
        sock.close()


async def partial_serve(sock: socket.socket, config: Config, limits: ConnectionLimits,
                        task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    await serve_asgi(hello, config, [sock], limits=limits, task_status=task_status)


async def connect_from(source: str, port: int) -> trio.socket.SocketType:
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return sock


async def fate(sock: trio.socket.SocketType, wait_s: float = 1.0) -> str:
    """`held` (the server keeps it open and says nothing) or what the server answered."""
    got = b""
    with trio.move_on_after(wait_s):
        while chunk := await sock.recv(4096):
            got += chunk
        return got.decode(errors="replace")
    return "held"


async def flood(source: str, port: int, count: int) -> tuple[list[trio.socket.SocketType],
                                                                list[str]]:
    socks = [await connect_from(source, port) for _ in range(count)]
    fates: list[str] = [""] * count

    async def one(i: int) -> None:
        fates[i] = await fate(socks[i])

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
    return socks, fates


async def get(source: str, port: int) -> str:
    sock = await connect_from(source, port)
    with sock:
        await sock.send(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        return await fate(sock, 5.0)


async def test_a_flood_from_one_address_is_held_to_that_address_s_share() -> None:
    limits = ConnectionLimits(total=32, per_ip=4, exempt_loopback=False)
    with trio.fail_after(30):
        async with server(limits) as port:
            socks, fates = await flood(ATTACKER, port, 40)
            assert fates.count("held") == 4  # stock hypercorn: all 40
            refused = [f for f in fates if f != "held"]
            assert len(refused) == 36
            assert all(f.startswith("HTTP/1.1 503 ") for f in refused)
            assert "retry-after: 1" in refused[0]
            body = json.loads(refused[0].split("\r\n\r\n", 1)[1])
            assert "too many connections from your address (4)" in body["error"]
            # The honest client is served while the attacker holds its share.
            assert (await get(HONEST, port)).startswith("HTTP/1.1 200 ")
            for sock in socks:
                sock.close()


async def test_a_connection_the_client_hangs_up_is_let_go_at_once() -> None:
    """Stock hypercorn held the socket of an idle connection whose client had left until
    its keep-alive timer fired (5 s): connecting and hanging up at once, which costs the
    client nothing, held a descriptor of the server's for 5 s each time."""
    limits = ConnectionLimits(total=32, per_ip=4, exempt_loopback=False)
    with trio.fail_after(30):
        async with server(limits) as port:
            socks, fates = await flood(ATTACKER, port, 4)
            assert fates == ["held"] * 4
            for sock in socks:
                sock.close()
            with trio.fail_after(1):  # stock: 4-5 s
                while (answer := await get_or_reset(ATTACKER, port)) == "refused":
                    await trio.sleep(0.02)
            assert answer.startswith("HTTP/1.1 200 ")


async def get_or_reset(source: str, port: int) -> str:
    try:
        answer = await get(source, port)
    except OSError:  # refused with our request unread: the close is a reset
        return "refused"
    return "refused" if answer.startswith("HTTP/1.1 503 ") else answer


async def test_a_flood_from_many_addresses_is_held_to_the_total() -> None:
    limits = ConnectionLimits(total=8, per_ip=64)  # loopback exempt from the per-address cap
    with trio.fail_after(30):
        async with server(limits) as port:
            socks, fates = await flood(ATTACKER, port, 12)
            assert fates.count("held") == 8
            refused = [f for f in fates if f != "held"]
            assert len(refused) == 4
            assert "too many connections to this server (8)" in refused[0]
            for sock in socks:
                sock.close()


async def test_the_gateway_holds_no_more_connections_than_its_config_says() -> None:
    with trio.fail_after(30):
        async with running_gateway(FakeNodeView(), GatewayConfig(port=0, max_connections=6)) \
                as gw:
            socks, fates = await flood(ATTACKER, gw.port, 8)
            assert fates.count("held") == 6
            assert sum(f.startswith("HTTP/1.1 503 ") for f in fates) == 2
            for sock in socks:
                sock.close()
            with trio.fail_after(2):
                while (answer := await get_or_reset(HONEST, gw.port)) == "refused":
                    await trio.sleep(0.02)
            assert answer.startswith("HTTP/1.1 ")  # served again: the route's own answer


async def test_a_flood_from_many_addresses_leaves_known_clients_their_reserve() -> None:
    # Per-address limits make a flood cost addresses: two addresses of 8 fill a server of
    # 16. With known clients (the gateway's: they presented an API key), the last eighth
    # is theirs: the flood gets 14, a known client is served, a new address is refused.
    known = KnownClients()
    known.add(HONEST)
    for limits, served in ((ConnectionLimits(16, 8, exempt_loopback=False), False),
                           (ConnectionLimits(16, 8, exempt_loopback=False, known=known), True)):
        with trio.fail_after(30):
            async with server(limits) as port:
                socks = []
                for source in (ATTACKER, "127.0.0.4"):
                    more, _ = await flood(source, port, 8)
                    socks += more
                answer = await get_or_reset(HONEST, port)
                if served:
                    assert answer.startswith("HTTP/1.1 200 ")
                    assert await get_or_reset("127.0.0.5", port) == "refused"
                else:
                    assert answer == "refused"  # the flood held every connection
                for sock in socks:
                    sock.close()


def test_known_clients_are_kept_by_address_the_newest_first() -> None:
    known = KnownClients(limit=2)
    for host in ("192.0.2.1", "2001:db8:1:2::1", "192.0.2.3"):
        known.add(host)
    assert "192.0.2.1" not in known and "192.0.2.3" in known
    assert "2001:db8:1:2:ffff::9" in known  # the same /64


async def test_the_gateway_knows_the_addresses_that_presented_its_api_key() -> None:
    known = KnownClients()
    app = create_gateway_app(FakeNodeView(), GatewayConfig(api_keys=("k" * 24,)), known=known)
    for client, headers, status in ((("192.0.2.7", 1), {}, 401),
                                    (("192.0.2.8", 1), {"authorization": "Bearer " + "k" * 24},
                                     200)):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            assert (await http.get("/api/tags", headers=headers)).status_code == status
    assert "192.0.2.8" in known and "192.0.2.7" not in known


def test_ipv6_clients_are_counted_by_their_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("192.0.2.7") != client_key("192.0.2.8")


def test_the_default_total_leaves_three_quarters_of_the_descriptors() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert default_total() == max(64, min(1024, soft // 4))
    with pytest.raises(ValueError):
        ConnectionLimits(per_ip=0)


def test_a_node_raises_its_open_files_limit_to_the_hard_limit() -> None:
    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))\n"
        "from p2pinfer.http.conn_gate import raise_fd_limit, default_total\n"
        "print(raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE), default_total())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out == ["(4096,", "4096)", "(4096,", "4096)", "1024"]

"""Shared pieces of the network tests (and benchmarks): signed adverts, host configs, a
TCP address that accepts and never answers (a NAT dropping packets, as a dialler whose
handshake hangs sees it) and a bare Kademlia server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import trio
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.tools.anyio_service import background_trio_service

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.compat.kad_protocol import DHT_PROTOCOL_ID, dht_host
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import build_libp2p_host
from p2pinfer.protocol import Advert, AdvertHardware, Gpu, ModelOffer, sign

HARDWARE = AdvertHardware("test cpu", 4, 8_192, (Gpu("test gpu", 24_576),))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def advert_template(
    *,
    models: tuple[tuple[str, int], ...] = (("smollm2:135m", 100),),
    ttl_ms: int = 60_000,
    addrs: tuple[str, ...] = (),
    seq: int = 0,
    issued_at: int = 0,
) -> Advert:
    """An Advert offering `models` as (name, price_per_1k); NetHost stamps seq and time."""
    offers = tuple(
        ModelOffer(name, "ab" * 32, "135M", "Q8_0", 2048, 400_000, 25_000, price)
        for name, price in models
    )
    return Advert(
        models=offers,
        hardware=HARDWARE,
        engine="llama.cpp",
        stake=1_000_000,
        capacity=2,
        listen_addrs=addrs,
        seq=seq,
        issued_at=issued_at,
        ttl_ms=ttl_ms,
    )


def make_advert(
    identity: NodeIdentity,
    seq: int,
    *,
    models: tuple[tuple[str, int], ...] = (("smollm2:135m", 100),),
    ttl_ms: int = 60_000,
    issued_at: int | None = None,
    addrs: tuple[str, ...] = (),
) -> bytes:
    """The encoded Advert signed by `identity`, stamped by hand (to forge, replay, go stale)."""
    issued = now_ms() if issued_at is None else issued_at
    advert = advert_template(models=models, ttl_ms=ttl_ms, addrs=addrs, seq=seq, issued_at=issued)
    return sign(advert, identity).raw


def config(identity: NodeIdentity | None = None, ip: str = "127.0.0.1", **kw: Any) -> NetConfig:
    """A test node on loopback address `ip` (127.0.0.0/8 is all loopback on Linux)."""
    return NetConfig(
        identity=identity or NodeIdentity.generate(),
        listen_addrs=(f"/ip4/{ip}/tcp/0",),
        **kw,
    )


class Mute:
    """A mute TCP address, and how many connections it has taken."""

    def __init__(self, addr: multiaddr.Multiaddr) -> None:
        self.addr = addr
        self.accepted = 0


async def hold_silently(listeners: list[trio.SocketListener], *, mute: Mute | None = None,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Accept TCP connections on `listeners[0]` and never answer (counted in `mute`)."""
    held: list[trio.SocketStream] = []
    task_status.started()
    try:
        while True:
            held.append(await listeners[0].accept())
            if mute is not None:
                mute.accepted += 1
    finally:  # cancelled: close what it held (no socket left to the garbage collector)
        for stream in held:
            stream.socket.close()
        for listener in listeners:
            listener.socket.close()


@asynccontextmanager
async def mute_addr() -> AsyncIterator[Mute]:
    """A TCP address on 127.0.0.1 that accepts connections and never answers."""
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        mute = Mute(multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}"))
        await nursery.start(lambda task_status: hold_silently(
            listeners, mute=mute, task_status=task_status))
        yield mute
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def kad_server(cls: type[KadDHT] = KadDHT, protocol: str = DHT_PROTOCOL_ID
                     ) -> AsyncIterator[KadDHT]:
    """A listening py-libp2p host (Noise, like ours) whose DHT is `cls` (py-libp2p's own
    class by default) in server mode, speaking Kademlia as `protocol` (ours by default;
    `/ipfs/kad/1.0.0`: a stock IPFS-style node)."""
    host = build_libp2p_host(config())
    dht = cls(dht_host(host, protocol), DHTMode.SERVER)
    async with (
        host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]),
        background_trio_service(dht),
    ):
        yield dht
        await host.close()

"""Shared pieces of the network integration tests: signed adverts and host configs."""

from __future__ import annotations

import time
from typing import Any

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.config import NetConfig
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

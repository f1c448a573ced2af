"""Shared pieces of the network integration tests: signed adverts and host configs."""

from __future__ import annotations

import time
from typing import Any

import msgpack

from p2pinfer.errors import DecodeError
from p2pinfer.identity import NodeIdentity, peer_id_from_public_key, verify_signature
from p2pinfer.net import NetConfig, Offer, VerifiedAdvert

_DOMAIN = b"p2pinfer-test/advert\x00"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_advert(
    identity: NodeIdentity,
    seq: int,
    *,
    models: tuple[tuple[str, int], ...] = (("smollm2:135m", 100),),
    ttl_ms: int = 60_000,
    issued_at: int | None = None,
    padding: int = 0,
    addrs: tuple[str, ...] = (),
) -> bytes:
    """A signed advert by `identity` (FakeAdvertCodec until the protocol package lands)."""
    body = {
        "seq": seq,
        "issued_at": now_ms() if issued_at is None else issued_at,
        "ttl_ms": ttl_ms,
        "models": [[name, price] for name, price in models],
        "pad": b"\0" * padding,
        "addrs": list(addrs),
    }
    packed = msgpack.packb(body)
    sig = identity.sign(_DOMAIN + packed)
    return msgpack.packb({"body": packed, "from": identity.public_key, "sig": sig})


def verify_advert(raw: bytes) -> VerifiedAdvert:
    try:
        env: Any = msgpack.unpackb(raw)
        packed, public_key, sig = env["body"], env["from"], env["sig"]
        body = msgpack.unpackb(packed)
    except Exception as exc:
        raise DecodeError("not an advert") from exc
    verify_signature(public_key, _DOMAIN + packed, sig)
    return VerifiedAdvert(
        signer=peer_id_from_public_key(public_key),
        seq=body["seq"],
        issued_at_ms=body["issued_at"],
        expires_at_ms=body["issued_at"] + body["ttl_ms"],
        offers=tuple(Offer(name, price, 25.0) for name, price in body["models"]),
        addrs=tuple(body["addrs"]),
        hardware="test",
        raw=raw,
        message=body,
    )


def config(identity: NodeIdentity | None = None, ip: str = "127.0.0.1", **kw: Any) -> NetConfig:
    """A test node on loopback address `ip` (127.0.0.0/8 is all loopback on Linux)."""
    return NetConfig(
        identity=identity or NodeIdentity.generate(),
        verify_advert=verify_advert,
        listen_addrs=(f"/ip4/{ip}/tcp/0",),
        **kw,
    )

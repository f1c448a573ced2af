"""Sybil adverts (issue 14, item 2): one connection, many fresh keys, price 0, dead addresses.

The attacker starts one libp2p host, dials node 0 once, and publishes on the
adverts topic one advert per fresh key, each a valid Advert signed by that key
and wrapped in a GossipSub message signed by that same key (so it passes
GossipSub's signature check and our `forged` check: every advert is "its own
publisher's"), all sent over the attacker's one connection. Each offers the
testnet's model at price 0 and listens at an address where nothing answers,
so a consumer that ranks by price tries them first and every try fails.

`run` is what the e2e test and bench/attacks.py call.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.adverts import ADVERTS_TOPIC
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.protocol import Advert, AdvertHardware, ModelOffer, sign
from tests.support.attack_net import MODEL, AttackNet

#: A TTL every node accepts before and after the defence (the honest nodes' TTL is 2 min).
ATTACK_TTL_MS = 10 * 60_000
#: Under GossipSub's 200 messages/s per peer and topic, so none is dropped for rate alone.
PUBLISH_RATE_PER_S = 120.0


@dataclass(frozen=True)
class SybilAdverts:
    """What the attacker sent: the fake providers' PeerIDs, over how many connections."""

    fake_peers: tuple[str, ...]
    connections: int
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return {"adverts": len(self.fake_peers), "connections": self.connections,
                "seconds": round(self.seconds, 2)}


def fake_advert(identity: NodeIdentity, *, model: str, price: int, ttl_ms: int,
                extra_models: int = 0) -> bytes:
    """`identity`'s signed advert for `model` at `price`, listening where nobody answers
    (port 1 on loopback refuses at once); with `extra_models` made-up models of its own
    (names no other advert uses), which every model listing then has to go through."""
    now = time.time_ns() // 1_000_000
    names = [model] + [f"sybil-{identity.peer_id[-12:].lower()}-{i}:1b"
                       for i in range(extra_models)]
    advert = Advert(
        models=tuple(ModelOffer(name, "ab" * 32, "135M", "Q8_0", 2048, 2_000_000, 500_000,
                                price) for name in names),
        hardware=AdvertHardware("attacker", 64, 262_144, ()),
        engine="llama.cpp", stake=0, capacity=64,
        listen_addrs=(f"/ip4/127.0.0.1/tcp/1/p2p/{identity.peer_id}",),
        seq=now, issued_at=now, ttl_ms=ttl_ms,
    )
    return sign(advert, identity).raw


def gossip_message(identity: NodeIdentity, topic: str, data: bytes) -> rpc_pb2.Message:
    """A GossipSub message whose publisher is `identity`, signed as py-libp2p signs its own."""
    key_pair = identity.libp2p_key_pair()
    msg = rpc_pb2.Message(
        data=data, topicIDs=[topic],
        from_id=ID.from_pubkey(key_pair.public_key).to_bytes(), seqno=os.urandom(8),
    )
    msg.signature = key_pair.private_key.sign(
        PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
    msg.key = key_pair.public_key.serialize()
    return msg


async def inject(host: NetHost, count: int, *, model: str = MODEL, price: int = 0,
                 ttl_ms: int = ATTACK_TTL_MS, extra_models: int = 0) -> list[str]:
    """Publish `count` fake adverts from `host`, one fresh key each; their PeerIDs."""
    pubsub = host._pubsub  # the attacker runs its own code: no validator, raw messages
    pubsub.remove_topic_validator(ADVERTS_TOPIC)
    fakes = []
    for _ in range(count):
        identity = NodeIdentity.generate()
        raw = fake_advert(identity, model=model, price=price, ttl_ms=ttl_ms,
                          extra_models=extra_models)
        await pubsub.push_msg(pubsub.my_id, gossip_message(identity, ADVERTS_TOPIC, raw))
        fakes.append(identity.peer_id)
        await trio.sleep(1 / PUBLISH_RATE_PER_S)
    return fakes


async def run(net: AttackNet, *, count: int = 8, price: int = 0, ttl_ms: int = ATTACK_TTL_MS,
              extra_models: int = 0, timeout_s: float = 120.0) -> SybilAdverts:
    """Dial node 0 once from a fresh key and inject `count` Sybil adverts through it."""
    started = time.monotonic()
    with trio.fail_after(timeout_s):
        config = NetConfig(identity=NodeIdentity.generate(),
                           listen_addrs=("/ip4/127.0.0.1/tcp/0",))
        async with run_host(config) as host:
            node0 = await host.connect(net.bootstrap)
            await host.wait_for_mesh(node0, ADVERTS_TOPIC, timeout_s=30)
            fakes = await inject(host, count, price=price, ttl_ms=ttl_ms,
                                 extra_models=extra_models)
            await trio.sleep(1.0)  # let the last messages leave before the host closes
    return SybilAdverts(tuple(fakes), 1, time.monotonic() - started)


def run_sync(net: AttackNet, **kw: object) -> dict[str, object]:
    """`run` from synchronous code (bench/attacks.py)."""
    result: SybilAdverts = trio.run(lambda: run(net, **kw))  # type: ignore[arg-type]
    return result.as_dict()

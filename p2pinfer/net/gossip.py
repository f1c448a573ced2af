"""GossipSub glue: typed messages, exception-proof validators, one reader task per topic."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from libp2p.abc import ISubscriptionAPI
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

log = logging.getLogger(__name__)

PATCHED = {  # catches only its own ValidationError from a sync validator
    "libp2p.pubsub.pubsub:Pubsub.validate_msg": "9bc61633d2338dc5",
}
"""py-libp2p functions this module overrides or relies on, with their 0.8.1 source digest
(`net.compat._canary`; checked by tests/unit/net/compat/test_in_place.py)."""


@dataclass(frozen=True)
class GossipMessage:
    """A GossipSub message as the rest of p2pinfer sees it.

    `publisher` is the PeerID that created and signed the message (GossipSub
    checks that signature before any validator runs); `forwarder` the peer
    that handed it to us (the local PeerID for our own publications); it is
    only known to validators and is empty in handlers, because py-libp2p does
    not keep it past validation.
    """

    topic: str
    data: bytes
    publisher: str
    forwarder: str


GossipValidator = Callable[[GossipMessage], bool]
"""Synchronous and quick: True delivers and relays the message, False drops it for good."""

GossipHandler = Callable[[GossipMessage], Awaitable[None]]
"""Called once per delivered message, in the topic's reader task (keep it short)."""


def to_gossip_message(topic: str, forwarder: ID, msg: rpc_pb2.Message) -> GossipMessage:
    """Convert py-libp2p's protobuf message (and forwarder ID) to a GossipMessage."""
    return GossipMessage(
        topic=topic,
        data=bytes(msg.data),
        publisher=ID(msg.from_id).to_base58(),
        forwarder=forwarder.to_base58(),
    )


def libp2p_validator(
    topic: str, validator: GossipValidator
) -> Callable[[ID, rpc_pb2.Message], bool]:
    """Wrap `validator` for `Pubsub.set_topic_validator(topic, fn, False)`.

    An exception out of a sync validator would escape py-libp2p's validation
    and end the reader of the peer's pubsub stream, so any exception counts as
    a rejection here.
    """

    def validate(forwarder: ID, msg: rpc_pb2.Message) -> bool:
        try:
            return bool(validator(to_gossip_message(topic, forwarder, msg)))
        except Exception:
            log.exception("gossip validator failed topic=%s; message dropped", topic)
            return False

    return validate


async def read_subscription(
    topic: str, subscription: ISubscriptionAPI, handler: GossipHandler | None
) -> None:
    """Drain `subscription` forever, passing each message to `handler`.

    py-libp2p buffers 32 messages a subscription and drops (with a WARNING)
    beyond that, so a topic must always have a reader even with no handler.
    """
    while True:
        msg = await subscription.get()
        if handler is None:
            continue
        message = GossipMessage(
            topic=topic,
            data=bytes(msg.data),
            publisher=ID(msg.from_id).to_base58(),
            forwarder="",
        )
        try:
            await handler(message)
        except Exception:
            log.exception("gossip handler failed topic=%s publisher=%s", topic, message.publisher)

"""Pubsub: every message an RPC carries gets a task of its own, however many.

**Defect (py-libp2p 0.8.1).** `libp2p/pubsub/pubsub.py`, `Pubsub.continuously_read_stream`
spawns `push_msg` as a task for each message of an inbound RPC whose topic we are
subscribed to, with no bound on how many messages a peer sends a second; one RPC may be
as large as the inbound limit (1 MiB here) and carry ~10,000 messages of a few bytes.
Each costs the task, the seen-cache, the score gate and the signature check (~45 us of
the event loop); unsigned ones fail that check without lowering the sender's score, so
they never stop. One RPC of 10,000 took ~0.45 s of the node's loop; a fresh key with
an ordinary uplink sending them back to back holds the loop (attack 57,
docs/security.md).

**What we do.** `RatedPubsub` (built by `run_host`) notes, in the task that reads a
peer's RPCs, whose they are (`continuously_read_stream`), and its `_is_subscribed_to_msg`,
which that loop asks for each message before it spawns a task, also takes the message
from its forwarder's rate: PUBLISH_BURST at once, then PUBLISH_RATE_PER_S a second, over
all topics; past it the message is skipped as if unsubscribed (no task, not marked seen,
so an honest peer's copy still comes through). Our topics' validators then apply their
own per-forwarder byte budgets and per-signer rates.

**To drop it.** When py-libp2p bounds the messages a peer may push (go-libp2p-pubsub's
validation queue and per-peer throttle do), build the plain class.

**Upstream.** Not reported.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from typing import Any

from libp2p.abc import INetStream
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from p2pinfer.bounded import RateLimiter
from p2pinfer.net.compat.pubsub_decode import RobustPubsub

log = logging.getLogger(__name__)

PATCHED = {
    "libp2p.pubsub.pubsub:Pubsub.continuously_read_stream": "ac0c4ad87ca39288",
    "libp2p.pubsub.pubsub:Pubsub._is_subscribed_to_msg": "fb0271117bb6936e",
}
UPSTREAM = None
DRAFT = None

#: Messages one forwarding peer may push at once, then a second, over all topics.
PUBLISH_BURST = 2_000
PUBLISH_RATE_PER_S = 500.0
MAX_FORWARDERS = 4096  # peers whose rate is remembered (least recent forgotten first)

#: The peer whose RPCs the current task reads (set in its `continuously_read_stream`).
_FORWARDER: contextvars.ContextVar[ID | None] = contextvars.ContextVar(
    "p2pinfer_pubsub_forwarder", default=None)


class RatedPubsub(RobustPubsub):
    """`RobustPubsub` that takes each pushed message from its forwarder's rate."""

    def __init__(self, *args: Any, clock: Callable[[], float] = time.monotonic,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._publish_rate = RateLimiter(PUBLISH_RATE_PER_S, PUBLISH_BURST, clock,
                                         max_keys=MAX_FORWARDERS)
        self.over_rate = 0  # messages skipped, their forwarder over its rate

    async def continuously_read_stream(self, stream: INetStream) -> None:
        _FORWARDER.set(stream.muxed_conn.peer_id)  # this task's own context
        await super().continuously_read_stream(stream)

    def _is_subscribed_to_msg(self, msg: rpc_pb2.Message) -> bool:
        if not super()._is_subscribed_to_msg(msg):
            return False
        forwarder = _FORWARDER.get()
        if forwarder is None or self._publish_rate.acquire(str(forwarder)) == 0.0:
            return True
        self.over_rate += 1
        if self.over_rate == 1 or self.over_rate % 10_000 == 0:
            log.warning("pubsub messages over the forwarder's rate peer=%s skipped=%d",
                        forwarder, self.over_rate)
        return False

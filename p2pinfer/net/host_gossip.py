"""Gossip topics and this node's advert, for `NetHost` (`net/nethost.py`).

`GossipAndAdverts` is mixed into `NetHost`, which owns the py-libp2p pubsub and
the nursery: joining and publishing on topics, signing and republishing our
advert (served over the info protocol and provided in the DHT), asking a peer
for its advert, and the catalog's admission and expiry of the adverts heard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import trio
from libp2p.pubsub.pubsub import Pubsub

from p2pinfer.errors import P2PInferError, PeerTimeoutError, UsageError, ValidationError
from p2pinfer.net.advert_gate import AdvertGate
from p2pinfer.net.adverts import ADVERTS_TOPIC, Catalog, VerifiedAdvert, verify_advert
from p2pinfer.net.config import NetConfig, parse_peer_id
from p2pinfer.net.dht import ProviderRecords
from p2pinfer.net.gossip import (
    GossipHandler,
    GossipMessage,
    GossipValidator,
    libp2p_validator,
    read_subscription,
)
from p2pinfer.net.info import (
    INFO_PROTOCOL,
    INFO_REQUEST,
    FetchedAdvert,
    InfoRate,
    ask_advert,
    serve_info,
)
from p2pinfer.net.relay_client import RelayClient
from p2pinfer.net.streams import NetStream
from p2pinfer.protocol import Advert, sign

log = logging.getLogger(__name__)


class GossipAndAdverts:
    """Topics and adverts; the state is set up by `NetHost.__init__`."""

    config: NetConfig
    peer_id: str
    catalog: Catalog
    advert_gate: AdvertGate
    info_rate: InfoRate
    relay_client: RelayClient
    _pubsub: Pubsub
    _nursery: trio.Nursery
    records: ProviderRecords
    _local_advert: bytes | None
    _advertising: bool
    _advert_seq: int
    _topics: set[str]

    if TYPE_CHECKING:  # NetHost's own (dialing and addresses)
        def addrs(self) -> list[str]: ...

        async def open_stream(
            self, peer_id: str, protocol: str, *, first: bytes | None = None,
            timeout_s: float | None = None,
        ) -> NetStream: ...

    # -- gossip --------------------------------------------------------------

    async def subscribe(
        self,
        topic: str,
        *,
        validator: GossipValidator | None = None,
        handler: GossipHandler | None = None,
    ) -> None:
        """Join `topic`: `validator` gates delivery and relaying, `handler` sees each message.

        One reader task per topic drains it (py-libp2p drops messages beyond
        32 unread). UsageError if this node already joined `topic`.
        """
        if topic in self._topics:
            raise UsageError(f"already subscribed to {topic}")
        self._topics.add(topic)
        if validator is not None:
            self._pubsub.set_topic_validator(topic, libp2p_validator(topic, validator), False)
        subscription = await self._pubsub.subscribe(topic)
        self._nursery.start_soon(read_subscription, topic, subscription, handler)

    def topic_peers(self, topic: str) -> list[str]:
        """Connected peers known to be subscribed to `topic`."""
        return sorted(p.to_base58() for p in self._pubsub.peer_topics.get(topic, ()))

    async def wait_for_mesh(self, peer_id: str, topic: str, *, timeout_s: float = 10.0) -> None:
        """Return once `peer_id` is in our GossipSub mesh for `topic`; PeerTimeoutError if not."""
        try:
            await self._pubsub.wait_for_mesh(parse_peer_id(peer_id), topic, timeout=timeout_s)
        except trio.TooSlowError as exc:
            raise PeerTimeoutError(
                f"{peer_id} joined no {topic} mesh within {timeout_s:g} s"
            ) from exc

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish `data` on `topic`, signed by this node (our own validator runs first)."""
        await self._pubsub.publish(topic, data)

    # -- adverts ---------------------------------------------------------------

    @property
    def local_advert(self) -> bytes | None:
        """The signed advert this node last published (served by the info protocol)."""
        return self._local_advert

    async def publish_advert(self, raw: bytes) -> VerifiedAdvert:
        """Publish our signed advert on gossip, serve it over info, and provide its models.

        ValidationError if it is not ours, not newer than the last one, or too
        large; ProtocolError if it does not verify.
        """
        advert = verify_advert(raw)
        if advert.signer != self.peer_id:
            raise ValidationError(f"advert is signed by {advert.signer}, not by this node")
        if len(raw) > self.config.max_advert_bytes:
            raise ValidationError(
                f"advert is {len(raw)} bytes; the limit is {self.config.max_advert_bytes}"
            )
        stale = self.catalog.staleness(advert)
        if stale is not None:
            raise ValidationError(
                f"advert is stale ({stale}): seq and issued_at must be current and increasing"
            )
        self._local_advert = raw
        await self._pubsub.publish(ADVERTS_TOPIC, raw)
        models = {offer.name for offer in advert.advert.models}
        for model in models - self.records.models:
            self._nursery.start_soon(self.records.provide, model)
        self.records.retain(models)
        return advert

    def sign_advert(self, advert: Advert) -> bytes:
        """`advert` stamped and signed by this node: seq and issued_at from the clock (seq
        always increasing, also across restarts), listen_addrs our own if it has none."""
        now = self.config.clock_ms()
        self._advert_seq = max(self._advert_seq + 1, now)
        addrs = advert.listen_addrs or tuple(a for a in self.addrs() if len(a) <= 256)[:16]
        stamped = replace(advert, seq=self._advert_seq, issued_at=now, listen_addrs=addrs)
        return sign(stamped, self.config.identity).raw

    def start_advertising(self, current: Callable[[], Advert], interval_s: float) -> None:
        """Publish our advert now and every `interval_s` until shutdown.

        `current()` gives what to offer at that moment (models, prices,
        hardware, stake, capacity, ttl_ms); `sign_advert` stamps and signs
        it. Pick `interval_s` at most a third of its `ttl_ms`, so one lost
        message does not make the node vanish from catalogs.
        """
        if self._advertising:
            raise ValidationError("this node is already advertising")
        self._advertising = True
        self._nursery.start_soon(self._advertise_loop, current, interval_s)

    async def fetch_advert(
        self, peer_id: str, *, timeout_s: float | None = None
    ) -> FetchedAdvert | None:
        """Ask `peer_id` for its current advert over the info protocol; None if it has none.

        A fresh answer also updates the catalog. Raises NetworkError subclasses
        on transport failure, ProtocolError subclasses on a bad answer.
        """
        limit = self.config.dial_timeout_s if timeout_s is None else timeout_s
        stream = await self.open_stream(peer_id, INFO_PROTOCOL, first=INFO_REQUEST,
                                        timeout_s=limit)
        try:
            fetched = await ask_advert(
                stream,
                self.advert_gate.verified,
                max_advert_bytes=self.config.max_advert_bytes,
                timeout_s=limit,
            )
        except BaseException:
            await stream.reset()
            raise
        if fetched is not None:
            self.catalog.admit(fetched.advert)  # an older or equal seq is simply not recorded
        return fetched

    # -- background tasks ----------------------------------------------------

    def _admit_advert(self, message: GossipMessage) -> bool:
        # The forwarder is the peer that handed us the message: new signers are
        # counted against it (AdvertGate), so one connection cannot fill the catalog.
        gate = self.advert_gate
        return gate.check(message.publisher, message.data, message.forwarder) is not None

    async def _serve_info(self, stream: NetStream) -> None:
        if not self.info_rate.admit(stream.remote_peer_id, stream.remote_host):
            await stream.reset()  # over its rate (attack 65): unanswered
            return
        await serve_info(stream, lambda: self._local_advert)

    async def _advertise_loop(self, current: Callable[[], Advert], interval_s: float) -> None:
        while True:
            try:
                await self.publish_advert(self.sign_advert(current()))
            except P2PInferError as exc:
                log.warning("advert not published error=%s", exc)
            # Early when a relay slot comes or goes: its circuit address is how NATed
            # providers are reached.
            with trio.move_on_after(interval_s):
                await self.relay_client.slots_changed()

    async def _expire_loop(self) -> None:
        while True:
            await trio.sleep(self.config.expire_interval_s)
            for peer_id in self.catalog.expire():
                log.info("provider expired peer=%s", peer_id)

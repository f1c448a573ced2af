"""The GossipSub validator of provider adverts (`AdvertGate`): what is dropped before
delivery and before relaying, and what reaches the `Catalog` (`net/adverts.py`).

An advert travels as the data of a GossipSub message on `ADVERTS_TOPIC`: one
signed `p2pinfer.protocol.Advert` envelope. The topic validator (`AdvertGate`)
drops, before delivery and before relaying:

- oversized payloads (more than `max_advert_bytes`),
- payloads that do not decode or whose signature does not verify,
- forged adverts: the advert's signer is not the GossipSub message's
  publisher (the `from` peer, itself authenticated by GossipSub's signature),
- stale adverts: a `seq` not newer than the last accepted one of that peer,
  past their own expiry (`issued_at + ttl`), issued too far in the future, or
  claiming a TTL over the network's maximum.

- floods: a forwarding peer introducing new signers (keys the catalog does
  not list and this node never completed a job with) faster than
  `NEW_SIGNERS_PER_MIN` a minute (after a burst of `NEW_SIGNER_BURST`); see
  `p2pinfer.net.advert_limits`;
- a forwarding peer past its byte budget on the topic (`ADVERT_BYTES_PER_S`, after
  `ADVERT_BURST_BYTES`), and a signer's adverts beyond `ADVERTS_PER_SIGNER_PER_S`
  (after `ADVERT_SIGNER_BURST`): a known signer may publish a new `seq` as often as
  it likes, and GossipSub lets a peer forward 200 messages a second (attack 51).
  Neither holds back this node's own adverts.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, OrderedDict

from p2pinfer.bounded import RateLimiter
from p2pinfer.errors import ProtocolError
from p2pinfer.net.advert_limits import VERIFIED_CACHE_BYTES, NewSignerLimit
from p2pinfer.net.adverts import AdvertVerifier, Catalog, VerifiedAdvert, verify_advert

log = logging.getLogger(__name__)

DEFAULT_MAX_ADVERT_BYTES = 64 * 1024
"""Largest advert accepted on gossip (64 models with long names fit in ~15 KiB)."""

VERIFIED_CACHE_SIZE = 1024
"""Adverts whose decoding and signature check `AdvertGate` remembers (by sha256)."""

ADVERTS_PER_SIGNER_PER_S = 4
ADVERT_SIGNER_BURST = 16
"""A signer's adverts admitted and relayed: a node advertises every 30 s by default (and
early when a relay slot comes or goes); tests advertise every 0.3 s at the fastest."""
ADVERT_BYTES_PER_S = 256 * 1024
ADVERT_BURST_BYTES = 4 * 1024 * 1024
"""What one forwarding peer may hand us on the topic: a thousand providers' adverts of a
few KB every 30 s are ~100 KB/s through one peer; the burst covers a new peer's
first catalog exchange."""


class AdvertGate:
    """The GossipSub validator of `ADVERTS_TOPIC`: verifies, then admits into the catalog.

    `drops` counts refused messages by reason ('oversized', 'invalid',
    'forged', 'flood', 'seq', 'expired', 'future', 'ttl') for metrics and
    tests. The same bytes met again (an advert fetched over info and relayed
    on gossip, a re-delivery after GossipSub's seen-cache forgot it) are
    decoded and verified once: the last `VERIFIED_CACHE_SIZE` verified adverts
    (at most `VERIFIED_CACHE_BYTES`) are kept by hash. Only the verification
    is cached; the publisher, rate and freshness checks run on every message.
    """

    def __init__(
        self,
        catalog: Catalog,
        verify: AdvertVerifier = verify_advert,
        *,
        max_advert_bytes: int = DEFAULT_MAX_ADVERT_BYTES,
        new_signers: NewSignerLimit | None = None,
    ) -> None:
        self.catalog = catalog
        self.verify = verify
        self.max_advert_bytes = max_advert_bytes
        self.new_signers = new_signers or NewSignerLimit()
        self.drops: Counter[str] = Counter()
        self.accepted = 0
        clock_s = lambda: catalog.now_ms() / 1000  # noqa: E731 (the catalog's clock)
        self.signer_rate = RateLimiter(ADVERTS_PER_SIGNER_PER_S, ADVERT_SIGNER_BURST, clock_s,
                                       max_keys=4096)
        self.forwarded = RateLimiter(ADVERT_BYTES_PER_S, ADVERT_BURST_BYTES, clock_s,
                                     max_keys=1024)
        self._verified: OrderedDict[bytes, VerifiedAdvert] = OrderedDict()
        self._verified_bytes = 0

    def check(self, publisher: str, data: bytes, forwarder: str = "") -> VerifiedAdvert | None:
        """Verify `data` published by `publisher` and handed to us by `forwarder` (empty:
        not known) and admit it; None (and a count) if refused."""
        reason, advert = self._judge(publisher, data, forwarder)
        if reason is not None:
            self.drops[reason] += 1
            log.debug("advert dropped reason=%s publisher=%s forwarder=%s", reason, publisher,
                      forwarder)
            return None
        self.accepted += 1
        return advert

    def _judge(
        self, publisher: str, data: bytes, forwarder: str
    ) -> tuple[str | None, VerifiedAdvert | None]:
        if len(data) > self.max_advert_bytes:
            return "oversized", None
        local = self.catalog.local_peer_id
        if forwarder and forwarder != local and self.forwarded.acquire(
                forwarder, len(data)) > 0:
            return "forwarder budget", None
        try:
            advert = self.verified(data)
        except ProtocolError as exc:
            log.debug("advert invalid publisher=%s error=%s", publisher, exc)
            return "invalid", None
        if advert.signer != publisher:
            return "forged", None
        if self._floods(forwarder, advert):
            return "flood", None
        if advert.signer != local and self.catalog.staleness(advert) is None and \
                self.signer_rate.acquire(advert.signer) > 0:
            return "signer rate", None
        return self.catalog.admit(advert), advert

    def _floods(self, forwarder: str, advert: VerifiedAdvert) -> bool:
        """Whether `advert` would be one new signer too many from `forwarder`. A peer's
        own advert (forwarder = signer: its connection proves the key) and adverts of
        signers already listed or proven cost nothing; neither does a stale advert,
        which admission refuses anyway."""
        if not forwarder or forwarder == advert.signer or forwarder == self.catalog.local_peer_id:
            return False
        if not self.catalog.is_new(advert.signer) or self.catalog.staleness(advert) is not None:
            return False
        return not self.new_signers.take(forwarder, self.catalog.now_ms())

    def verified(self, data: bytes) -> VerifiedAdvert:
        """`verify(data)`, done once per distinct bytes (see the class doc); ProtocolError if
        they are not a validly signed advert."""
        digest = hashlib.sha256(data).digest()
        advert = self._verified.get(digest)
        if advert is not None:
            self._verified.move_to_end(digest)
            return advert
        advert = self.verify(data)  # raises on invalid bytes, which are not remembered
        self._verified[digest] = advert
        self._verified_bytes += len(advert.raw)
        while len(self._verified) > 1 and (
            len(self._verified) > VERIFIED_CACHE_SIZE
            or self._verified_bytes > VERIFIED_CACHE_BYTES
        ):
            _, dropped = self._verified.popitem(last=False)
            self._verified_bytes -= len(dropped.raw)
        return advert

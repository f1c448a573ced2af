"""Provider adverts on GossipSub: verified adverts and the catalog of live providers.

Signed adverts arrive on `ADVERTS_TOPIC`; `AdvertGate` (`net/advert_gate.py`), the
topic validator, checks them before they reach the catalog.

The `Catalog` keeps the accepted adverts of other peers, indexed by model,
and forgets a provider when its latest advert expires (clock injected), so a
provider that stops re-advertising leaves the catalog after its TTL (at most
`MAX_ADVERT_TTL_MS`, 10 min). Signers this node has not yet completed a job
with ("unproven", anyone with a fresh key) hold at most
`MAX_UNPROVEN_PROVIDERS` entries and `MAX_UNPROVEN_BYTES` of adverts; past
that the least recently heard of them is evicted.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import trio

from p2pinfer.net.advert_limits import (
    MAX_UNPROVEN_BYTES,
    MAX_UNPROVEN_PROVIDERS,
    SUPPLY_UNPROVEN_CAP,
)
from p2pinfer.protocol import (
    ADVERTS_TOPIC,
    CLOCK_SKEW_MS,
    MAX_ADVERT_TTL_MS,
    Advert,
    AdvertHardware,
    ModelOffer,
    Signed,
    decode_as,
)

log = logging.getLogger(__name__)

__all__ = ["ADVERTS_TOPIC", "MAX_UNPROVEN_PROVIDERS", "Catalog", "ProviderEntry", "VerifiedAdvert"]

@dataclass(frozen=True)
class VerifiedAdvert:
    """An advert whose envelope decoded and whose signature verified.

    `signer` is the PeerID of the key that signed it; `signed.raw` the exact
    bytes, forwarded unchanged by the info protocol.
    """

    signer: str
    signed: Signed[Advert]

    @property
    def advert(self) -> Advert:
        return self.signed.msg

    @property
    def raw(self) -> bytes:
        return self.signed.raw

    @property
    def seq(self) -> int:
        return self.signed.msg.seq

    @property
    def issued_at_ms(self) -> int:
        return self.signed.msg.issued_at

    @property
    def expires_at_ms(self) -> int:
        return self.signed.msg.expires_at

    def offer(self, model: str) -> ModelOffer | None:
        """What this advert offers for `model`, if it serves it."""
        return next((m for m in self.signed.msg.models if m.name == model), None)


def verify_advert(raw: bytes) -> VerifiedAdvert:
    """Decode and verify a signed Advert; ProtocolError subclasses if it is not one."""
    signed = decode_as(raw, Advert)
    return VerifiedAdvert(signed.signer_peer_id, signed)


AdvertVerifier = Callable[[bytes], VerifiedAdvert]
"""Turns bytes into a VerifiedAdvert or raises a ProtocolError subclass."""


@dataclass(frozen=True)
class ProviderEntry:
    """A live provider of one model, from its latest accepted advert.

    `price_per_1k` is in micro-credits per 1000 tokens, `generation_tps` the
    provider's measured generation speed (tokens/s); `offer` and `advert`
    carry everything else it claimed (digest, context length, stake, ...).
    """

    peer_id: str
    model: str
    price_per_1k: int
    generation_tps: float
    addrs: tuple[str, ...]
    hardware: AdvertHardware
    seq: int
    last_seen_ms: int
    expires_at_ms: int
    offer: ModelOffer
    advert: VerifiedAdvert


@dataclass
class _PeerState:
    advert: VerifiedAdvert
    last_seen_ms: int
    expires_at_ms: int


class Catalog:
    """The latest advert of every peer heard from, until it expires.

    Pure bookkeeping on an injected millisecond clock; the only concurrency
    primitive is the change notification used by `wait_for`. Entries are
    indexed by model, so `providers(model)` costs the providers of that model,
    not the whole catalog. Signers `vouch`ed for (this node completed a job
    with them) are "proven"; the others share `max_unproven` entries and
    `max_unproven_bytes`, the least recently heard evicted first.
    """

    def __init__(
        self,
        *,
        local_peer_id: str,
        clock_ms: Callable[[], int],
        max_ttl_ms: int = MAX_ADVERT_TTL_MS,
        max_clock_skew_ms: int = CLOCK_SKEW_MS,
        max_unproven: int = MAX_UNPROVEN_PROVIDERS,
        max_unproven_bytes: int = MAX_UNPROVEN_BYTES,
    ) -> None:
        self.local_peer_id = local_peer_id
        self.max_ttl_ms = max_ttl_ms
        self.max_clock_skew_ms = max_clock_skew_ms
        self.max_unproven = max_unproven
        self.max_unproven_bytes = max_unproven_bytes
        self.evicted = 0  # unproven entries pushed out by newer ones
        self._clock_ms = clock_ms
        self._peers: dict[str, _PeerState] = {}
        self._by_model: dict[str, set[str]] = {}
        # Unproven signers listed, least recently heard first, with their advert's size.
        self._unproven: OrderedDict[str, int] = OrderedDict()
        self._unproven_bytes = 0
        self._proven: set[str] = set()
        # The last accepted seq of a peer is kept for the longest TTL an
        # advert may have, so no older advert of it can be replayed while it
        # would still be unexpired.
        self._last_seq: dict[str, tuple[int, int, bytes]] = {}  # seq, seen at, hash
        self._changed = trio.Event()

    def now_ms(self) -> int:
        return self._clock_ms()

    def staleness(self, advert: VerifiedAdvert) -> str | None:
        """Why `advert` is stale ('seq', 'expired', 'future', 'ttl'), or None if it is fresh."""
        now = self._clock_ms()
        last = self._last_seq.get(advert.signer)
        if last is not None and advert.seq <= last[0]:
            return "seq"
        if advert.expires_at_ms <= now:
            return "expired"
        if advert.issued_at_ms > now + self.max_clock_skew_ms:
            return "future"
        if advert.expires_at_ms - advert.issued_at_ms > self.max_ttl_ms:
            return "ttl"
        return None

    def admit(self, advert: VerifiedAdvert) -> str | None:
        """Record `advert` if fresh; return the reason it was refused, or None.

        The advert already held (same bytes) is accepted again without
        change. The local node's own adverts update the seq memory (so it
        cannot publish a stale one either) but are not listed as a provider:
        a node cannot open a stream to itself.
        """
        reason = self.staleness(advert)
        if reason == "seq" and self._is_current(advert):
            # The very advert we hold, met again on another path (fetched over
            # info, then relayed on gossip): valid, and worth relaying on.
            return None
        if reason is not None:
            return reason
        now = self._clock_ms()
        self._last_seq[advert.signer] = (advert.seq, now, advert.signed.hash)
        if advert.signer != self.local_peer_id:
            # An advert from a clock running ahead still lives at most its TTL
            # from receipt.
            ttl = advert.expires_at_ms - advert.issued_at_ms
            expires = min(advert.expires_at_ms, now + ttl)
            self._store(advert.signer, _PeerState(advert, now, expires))
            self._notify()
            # From signing at the provider to here (one wall clock on a local testnet):
            # bench/network.py reads these lines to measure advert propagation.
            log.debug("advert admitted peer=%s seq=%d delay_ms=%d", advert.signer, advert.seq,
                      now - advert.issued_at_ms)
        return None

    def _is_current(self, advert: VerifiedAdvert) -> bool:
        last = self._last_seq.get(advert.signer)
        listed = advert.signer in self._peers or advert.signer == self.local_peer_id
        return (  # (an evicted advert met again is stale: not listed, nor relayed, again)
            listed
            and last is not None
            and last[2] == advert.signed.hash
            and advert.expires_at_ms > self._clock_ms()
        )

    def _store(self, peer_id: str, state: _PeerState) -> None:
        self._forget(peer_id)
        self._peers[peer_id] = state
        for offer in state.advert.advert.models:
            self._by_model.setdefault(offer.name, set()).add(peer_id)
        if peer_id in self._proven:
            return
        size = len(state.advert.raw)
        self._unproven[peer_id] = size
        self._unproven_bytes += size
        while len(self._unproven) > 1 and (
            len(self._unproven) > self.max_unproven
            or self._unproven_bytes > self.max_unproven_bytes
        ):
            oldest = next(iter(self._unproven))
            log.info("unproven provider evicted peer=%s unproven=%d", oldest,
                     len(self._unproven))
            self._forget(oldest)
            self.evicted += 1

    def _forget(self, peer_id: str) -> None:
        state = self._peers.pop(peer_id, None)
        if state is None:
            return
        for offer in state.advert.advert.models:
            holders = self._by_model.get(offer.name)
            if holders is not None:
                holders.discard(peer_id)
                if not holders:
                    del self._by_model[offer.name]
        size = self._unproven.pop(peer_id, None)
        if size is not None:
            self._unproven_bytes -= size

    def vouch(self, peer_id: str) -> None:
        """Mark `peer_id` proven (this node completed a job with it): its entry no longer
        counts against, nor can be evicted by, the unproven bound."""
        self._proven.add(peer_id)
        size = self._unproven.pop(peer_id, None)
        if size is not None:
            self._unproven_bytes -= size

    def is_proven(self, peer_id: str) -> bool:
        """Whether this node has completed a job with `peer_id` (see `vouch`)."""
        return peer_id in self._proven

    def is_new(self, peer_id: str) -> bool:
        """Whether an advert of `peer_id` would add a signer: not listed, not proven, not us."""
        return (peer_id not in self._peers and peer_id not in self._proven
                and peer_id != self.local_peer_id)

    def unproven_count(self) -> int:
        """Entries held for unproven signers (live or not yet swept)."""
        return len(self._unproven)

    def expire(self) -> list[str]:
        """Forget providers whose latest advert has expired; return their PeerIDs."""
        now = self._clock_ms()
        gone = [pid for pid, st in self._peers.items() if st.expires_at_ms <= now]
        for pid in gone:
            self._forget(pid)
        for pid, (_, seen, _) in list(self._last_seq.items()):
            if seen + self.max_ttl_ms + self.max_clock_skew_ms <= now:
                del self._last_seq[pid]
        if gone:
            self._notify()
        return gone

    def providers(self, model: str) -> list[ProviderEntry]:
        """Live providers of `model`, cheapest first."""
        now = self._clock_ms()
        found = []
        for pid in self._by_model.get(model, ()):
            st = self._peers[pid]
            offer = st.advert.offer(model)
            if st.expires_at_ms > now and offer is not None:
                found.append(_entry(pid, st, offer))
        return sorted(found, key=lambda e: (e.price_per_1k, -e.generation_tps, e.peer_id))

    def supply(self, model: str) -> int:
        """Other providers of `model` that count for pricing: every proven one, and unproven
        ones up to SUPPLY_UNPROVEN_CAP (what fresh keys can claim is bounded)."""
        live = self.providers(model)
        proven = sum(1 for e in live if e.peer_id in self._proven)
        return proven + min(len(live) - proven, SUPPLY_UNPROVEN_CAP)

    def models(self) -> list[str]:
        """Every model some live provider serves, sorted."""
        now = self._clock_ms()
        return sorted(
            model for model, holders in self._by_model.items()
            if any(self._peers[pid].expires_at_ms > now for pid in holders)
        )

    def advert_of(self, peer_id: str) -> VerifiedAdvert | None:
        """The latest live advert of `peer_id`, if any."""
        st = self._peers.get(peer_id)
        if st is None or st.expires_at_ms <= self._clock_ms():
            return None
        return st.advert

    def peer_ids(self) -> list[str]:
        """PeerIDs with a live advert."""
        now = self._clock_ms()
        return sorted(pid for pid, st in self._peers.items() if st.expires_at_ms > now)

    async def wait_for(self, predicate: Callable[[Catalog], bool]) -> None:
        """Return once `predicate(self)` holds (checked on each change); bound it by a timeout."""
        while not predicate(self):
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


def _entry(peer_id: str, st: _PeerState, offer: ModelOffer) -> ProviderEntry:
    advert = st.advert.advert
    return ProviderEntry(
        peer_id=peer_id,
        model=offer.name,
        price_per_1k=offer.price_per_1k,
        generation_tps=offer.generation_tps_milli / 1000,
        addrs=advert.listen_addrs,
        hardware=advert.hardware,
        seq=advert.seq,
        last_seen_ms=st.last_seen_ms,
        expires_at_ms=st.expires_at_ms,
        offer=offer,
        advert=st.advert,
    )

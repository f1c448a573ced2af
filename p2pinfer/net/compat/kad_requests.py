"""KadDHT: a DHT stream's requests are answered however many a peer sends.

**Defect (py-libp2p 0.8.1).** `libp2p/kad_dht/kad_dht.py`, `KadDHT._do_handle_stream`
reads requests off an inbound stream in a loop (`read_varint_prefixed_bytes_limited`)
and answers each, for as long as the peer writes them; `handle_stream` bounds how many
streams are served at once, not how many requests one stream or one peer makes. A
FIND_NODE of 37 bytes is answered with up to 20 peers, their addresses and signed peer
records: ~4.9 KB and ~1.5 ms of the node's event loop. 2,000 of them written at once on
one stream (74 KB) were all answered, 9.8 MB in ~4 s (attack 56, docs/security.md).

**What we do.** `RationedKadDHT` hands `_do_handle_stream` the stream through a view
(`KadRequestRate.ration`) that follows the varint framing as it is read and takes one
of the peer's requests from its rate as each request begins: KAD_BURST (256) at once,
then KAD_RATE_PER_S (32) a second, per peer. Past it the read fails (`OverRate`), and the
handler resets the stream, as it does for any read error, before the request is parsed
or answered. An honest lookup asks a peer once or twice; a node's refresh a few times
every few minutes; a busy consumer may look up again and again.

**To drop it.** When py-libp2p rate-limits DHT requests per peer (its resource manager
has no such scope in 0.8.1), build the plain class.

**Upstream.** Not reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from libp2p.abc import INetStream
from libp2p.utils.varint import decode_uvarint

from p2pinfer.bounded import RateLimiter
from p2pinfer.net.compat.kad_server_peers import ServerPeersKadDHT

log = logging.getLogger(__name__)

PATCHED = {
    "libp2p.kad_dht.kad_dht:KadDHT.handle_stream": "e3870244e4519557",
    "libp2p.kad_dht.kad_dht:KadDHT._do_handle_stream": "5bbaed4d3cdf488c",
    "libp2p.kad_dht.kad_dht:read_varint_prefixed_bytes_limited": "75623a1c5c4e2c39",
}
UPSTREAM = None
DRAFT = None

#: Requests one peer may make at once, then a second: ~5 % of the loop at ~1.5 ms a
#: request, and room for a consumer looking providers up again and again (bench/net.py
#: does 20 lookups in a row through the same few peers: at 32 then 4 a second its lookups
#: failed).
KAD_BURST = 256
KAD_RATE_PER_S = 32.0
MAX_PEERS = 4096  # peers whose request rate is remembered (least recent forgotten first)


class OverRate(Exception):
    """A peer's request over its rate: the handler resets the stream."""


class KadRequestRate:
    """Each peer's DHT requests: KAD_BURST at once, then KAD_RATE_PER_S a second."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._rates = RateLimiter(KAD_RATE_PER_S, KAD_BURST, clock, max_keys=MAX_PEERS)
        self.refused = 0

    def ration(self, stream: Any, peer: str) -> _RationedStream:
        """`stream` as the request loop should read it (see the module doc)."""
        return _RationedStream(stream, self, peer)

    def take(self, peer: str) -> None:
        if self._rates.acquire(peer) > 0.0:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("DHT requests over the rate peer=%s refused=%d", peer,
                            self.refused)
            raise OverRate(f"over {KAD_BURST} DHT requests then {KAD_RATE_PER_S:g} a second")


class _RationedStream:
    """A DHT stream whose reads follow the varint framing: a read that begins a request
    takes one of the peer's requests first (`KadRequestRate.take`)."""

    def __init__(self, stream: Any, rate: KadRequestRate, peer: str) -> None:
        self._stream: Any = stream
        self._rate, self._peer = rate, peer
        self._prefix = b""  # the length's varint bytes read so far
        self._body = 0  # the request's bytes still to read

    async def read(self, n: int | None = None) -> bytes:
        if not self._prefix and not self._body:
            self._rate.take(self._peer)  # a new request begins
        data: bytes = await self._stream.read(n)
        self._follow(data)
        return data

    def _follow(self, data: bytes) -> None:
        at = 0
        while at < len(data):
            if self._body:
                used = min(self._body, len(data) - at)
                self._body, at = self._body - used, at + used
                continue
            self._prefix += data[at:at + 1]
            at += 1
            if data[at - 1] & 0x80 == 0:
                self._body, self._prefix = decode_uvarint(self._prefix), b""

    def __getattr__(self, name: str) -> Any:  # the rest is the stream's own
        return getattr(self._stream, name)


class RationedKadDHT(ServerPeersKadDHT):
    """`ServerPeersKadDHT` whose inbound requests are held to each peer's rate."""

    def __init__(self, host: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(host, *args, **kwargs)
        self.request_rate = KadRequestRate()

    async def _do_handle_stream(self, stream: INetStream) -> None:
        peer = str(stream.muxed_conn.peer_id)
        rationed = self.request_rate.ration(stream, peer)
        await super()._do_handle_stream(rationed)  # type: ignore[arg-type]

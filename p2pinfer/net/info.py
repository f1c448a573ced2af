"""`/p2pinfer/info/1.0.0`: ask a peer for its current signed advert, and time the answer.

One request a stream. The asker sends one frame (empty in version 1; room
for future fields, at most `INFO_REQUEST_MAX` bytes), the peer answers with
one frame holding its current signed advert exactly as it publishes it on
gossip, or an empty frame if it advertises nothing (a consumer-only node),
then closes. The round-trip time is measured from writing the request to
reading the whole answer, excluding dialling: the asker sends the request in
the same flight as the protocol proposal (pipelined negotiation), so the
answer takes one round trip, the latency a job's frames will see.

An answer costs the node a stream, its advert written through Noise and Yamux and
its upload, for one empty frame, so askers are rationed (attack 65, `InfoRate`): a
peer gets INFO_BURST answers then INFO_RATE_PER_S a second, an address (an IPv4
address, an IPv6 /56; not loopback) INFO_ADDRESS_BURST then INFO_ADDRESS_RATE_PER_S,
since keys are free; past either the stream is reset unanswered. A consumer asks a
provider when its RTT number is stale, a survey once per peer: far inside both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from p2pinfer.addresses import IPV6_GROUP_PREFIX, address_group, is_loopback
from p2pinfer.bounded import RateLimiter
from p2pinfer.errors import DecodeError, ProtocolError, SignatureError
from p2pinfer.net.adverts import AdvertVerifier, VerifiedAdvert
from p2pinfer.net.streams import NetStream
from p2pinfer.protocol import DEFAULT_MAX_FRAME, INFO_PROTOCOL_ID, encode_frame

log = logging.getLogger(__name__)

INFO_PROTOCOL = INFO_PROTOCOL_ID
INFO_REQUEST_MAX = 1024
INFO_TIMEOUT_S = 10.0
INFO_REQUEST = encode_frame(b"")
"""The version-1 request: one empty frame."""

#: Answers one peer may have at once, then a second (attack 65) ...
INFO_BURST, INFO_RATE_PER_S = 32, 8.0
#: ... and one address, whatever keys it comes under.
INFO_ADDRESS_BURST, INFO_ADDRESS_RATE_PER_S = 64, 16.0
MAX_ASKERS = 4096  # peers and addresses whose rates are remembered (least recent first out)


class InfoRate:
    """Who may have an advert answered now: each peer and each address at its rate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.peers = RateLimiter(INFO_RATE_PER_S, INFO_BURST, clock, max_keys=MAX_ASKERS)
        self.addresses = RateLimiter(INFO_ADDRESS_RATE_PER_S, INFO_ADDRESS_BURST, clock,
                                     max_keys=MAX_ASKERS)

    def admit(self, peer: str, host: str | None) -> bool:
        """Whether to answer `peer` asking from `host` (its connection's IP, if any)."""
        if self.peers.acquire(peer) > 0.0:
            return False  # before the address: one key's asks past its own rate take
            # nothing from its address's other keys (a NAT's users)
        group = address_group(host, IPV6_GROUP_PREFIX) if host else None
        if group is None or is_loopback(host or ""):
            return True
        return self.addresses.acquire(group) == 0.0


@dataclass(frozen=True)
class FetchedAdvert:
    """A peer's advert as it answered over the info protocol, and the round trip it took."""

    advert: VerifiedAdvert
    rtt_ms: float


async def serve_info(stream: NetStream, current_advert: Callable[[], bytes | None]) -> None:
    """Answer one info request on `stream` with `current_advert()` (empty frame if None)."""
    await stream.read_frame(max_size=INFO_REQUEST_MAX, timeout_s=INFO_TIMEOUT_S)
    await stream.write_frame(current_advert() or b"", timeout_s=INFO_TIMEOUT_S)
    await stream.close()


async def ask_advert(
    stream: NetStream,
    verify: AdvertVerifier,
    *,
    max_advert_bytes: int = DEFAULT_MAX_FRAME,
    timeout_s: float = INFO_TIMEOUT_S,
) -> FetchedAdvert | None:
    """Ask the peer on `stream` for its advert; None if it has none.

    If the stream was opened with `INFO_REQUEST` as its first bytes (pipelined
    negotiation), the request is not sent again and the RTT counts from then.
    Raises a ProtocolError if the answer is malformed, badly signed, or signed
    by anyone but the peer at the other end of the (Noise-authenticated)
    stream; StreamClosedError/PeerTimeoutError on transport failure.
    """
    if stream.first_sent_at is not None:
        started = stream.first_sent_at
    else:
        started = trio.current_time()
        await stream.write(INFO_REQUEST, timeout_s=timeout_s)
    raw = await stream.read_frame(max_size=max_advert_bytes, timeout_s=timeout_s)
    rtt_ms = (trio.current_time() - started) * 1000.0
    await stream.close()
    if not raw:
        return None
    try:
        advert = verify(raw)
    except ProtocolError:
        raise
    except Exception as exc:  # a verifier bug must not look like a network failure
        raise DecodeError(f"cannot decode advert from {stream.remote_peer_id}: {exc}") from exc
    if advert.signer != stream.remote_peer_id:
        raise SignatureError(
            f"peer {stream.remote_peer_id} answered with an advert signed by {advert.signer}"
        )
    return FetchedAdvert(advert, rtt_ms)

"""Multistream-select in lock step: 2 round trips before a request leaves.

**Defect (py-libp2p 0.8.1).** `libp2p/host/basic_host.py`, `BasicHost.new_stream`, via
`libp2p/protocol_muxer/multiselect_client.py`, `MultiselectClient.select_one_of`:
it sends `/multistream/1.0.0`, waits for the echo, sends the protocol id, waits for
that echo, and only then may the caller write. Not a protocol error, but every job
and info request paid 2 extra round trips (docs/scaling.md); go-libp2p and
rust-libp2p pipeline ("lazy"/optimistic negotiation).

**What we do.** `open_pipelined` sends the header, the protocol id and the caller's
first bytes in one write, then reads the two echoes: the answer to the request follows
them in the same flight, so a request-answer exchange on an open connection costs one
round trip. Used by `NetHost.open_stream(..., first=...)`.

The other side stays stock multistream-select: it writes its header, reads
ours, reads one protocol id and echoes it (or answers `na` and reads the next
one). It reads one message at a time (a length prefix, then exactly that many
bytes), so the request behind the protocol id stays buffered in the stream for
the handler. If the peer answers `na`, it reads the request as its next
protocol proposal and fails (or answers `na` again); either way we reset the
stream and report the protocol as unsupported.

A standard responder may also just reset the stream instead of answering:
py-libp2p itself resets once the request, read as a second proposal, is not a
valid one, and other implementations may drop a stream whose negotiation failed
without (or before) sending `na`. A stream reset (or closed)
before the echo of our protocol, on a connection that is still up, is therefore
reported as ProtocolNotSupportedError too: the peer refused the protocol, it is
not unreachable. If the connection itself went down, the error stays a
StreamClosedError.

**To drop it.** When `new_stream` can send the proposal with the first write (an
optimistic/lazy mode), call it instead of `open_pipelined`.

**Upstream.** libp2p/py-libp2p#285 (https://github.com/libp2p/py-libp2p/pull/285,
pipelined multistream-select, closed unmerged); the optimistic mode is being specified
in libp2p/specs#721 (issue libp2p/specs#643). No drafted patch: a feature, not a fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio
from libp2p.abc import INetStream, INetworkService
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.protocol_muxer.exceptions import MultiselectClientError
from libp2p.utils.varint import encode_delim

from p2pinfer.errors import (
    DecodeError,
    FrameTooLarge,
    PeerUnreachableError,
    ProtocolNotSupportedError,
    StreamClosedError,
)
from p2pinfer.net.compat.multistream_listener import ORIGINAL as listener_negotiate
from p2pinfer.net.compat.yamux_open import new_stream_lazily
from p2pinfer.net.streams import NetStream

PATCHED = {
    "libp2p.protocol_muxer.multiselect_client:MultiselectClient.select_one_of":
        "a0dda8ab1ebd1006",
    "libp2p.protocol_muxer.multiselect:Multiselect.negotiate": "e870e3fe41c87e3c",
}
ORIGINALS = {"libp2p.protocol_muxer.multiselect:Multiselect.negotiate": listener_negotiate}
"""libp2p's own `negotiate` (the responder this module relies on is stock until
`multistream_listener` replaces it in place; the canary reads the original)."""
UPSTREAM = "https://github.com/libp2p/py-libp2p/pull/285"
DRAFT = None

MULTISTREAM_ID = "/multistream/1.0.0"
NOT_SUPPORTED = "na"
MAX_NEGOTIATION_LINE = 1024
"""The longest echo we accept (a protocol id plus its newline and length prefix fits)."""


@dataclass(frozen=True)
class Proposal:
    """A stream's protocol, the bytes pipelined with its proposal (None: lock-step
    negotiation) and who is given the stream once they are out (`NetHost.open_stream`)."""

    protocol: str
    first: bytes | None = None
    on_sent: Callable[[NetStream], None] | None = None

    def hand_over(self, handed: list[NetStream]) -> Callable[[NetStream], None] | None:
        """The `on_sent` for `open_pipelined`: this one's, noting the stream in `handed`
        (it is no longer the opener's to reset); None without one."""
        on_sent = self.on_sent
        if on_sent is None:
            return None

        def sent(stream: NetStream) -> None:
            handed.append(stream)
            on_sent(stream)
        return sent


def proposal(protocol: str) -> bytes:
    """The multistream header and `protocol`, as the two messages a dialer sends."""
    return encode_delim(MULTISTREAM_ID.encode()) + encode_delim(protocol.encode())


async def open_pipelined(
    raw: INetStream, protocol: str, first: bytes, *, timeout_s: float,
    on_sent: Callable[[NetStream], None] | None = None,
) -> NetStream:
    """Negotiate `protocol` on the fresh muxed stream `raw`, sending `first` with the proposal.

    Returns the stream, its protocol set, positioned after the two echoes (the
    peer's answer to `first` is next). `on_sent` is given the stream once `first`
    is out, before the echoes are read (`read_echoes`). Raises as `read_echoes`, and
    StreamClosedError/PeerTimeoutError on the write. The caller resets `raw` if this
    raises.
    """
    stream = NetStream(raw)
    stream.first_sent_at = trio.current_time()
    await stream.write(proposal(protocol) + first, timeout_s=timeout_s)
    if on_sent is not None:
        on_sent(stream)
    await read_echoes(stream, protocol, timeout_s=timeout_s)
    return stream


async def open_proposed(network: INetworkService, pid: ID, want: Proposal,
                        limit: float) -> NetStream:
    """A stream to `pid` negotiated for `want`, its bytes pipelined (`open_pipelined`).
    Dials when there is no connection, as host.new_stream does; over one already up, the
    stream's SYN leaves with the proposal (`compat.yamux_open`). Reset if this fails, but
    left open for `want.on_sent`'s caller when that caller is cancelled once given it."""
    raw = await new_stream_lazily(network, pid)
    handed: list[NetStream] = []
    try:
        if raw.muxed_conn.peer_id != pid:
            raise PeerUnreachableError(f"the stream reached {raw.muxed_conn.peer_id}, not {pid}")
        return await open_pipelined(raw, want.protocol, want.first or b"",
                                    timeout_s=limit, on_sent=want.hand_over(handed))
    except BaseException as exc:
        if not (handed and isinstance(exc, trio.Cancelled)):
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await NetStream(raw).reset()
        raise


async def read_echoes(stream: NetStream, protocol: str, *, timeout_s: float) -> None:
    """Read the listener's answer to our proposal of `protocol` on `stream` (its header
    and echo) and set the stream's protocol. Raises ProtocolNotSupportedError on `na`
    or on a stream reset before the echo (connection still up), DecodeError on any
    other reply, StreamClosedError/PeerTimeoutError on transport failure."""
    raw = stream.muxed
    try:
        # Our header's and the echo's bytes, at most, in one read: a listener that sends
        # both at once and resets right after accepting (a request it refuses unread)
        # must not have its echo discarded by the reset (multistream_listener does).
        await stream.prefetch(len(proposal(protocol)), timeout_s=timeout_s)
        header = await _read_line(stream, timeout_s)
        if header != MULTISTREAM_ID:
            raise DecodeError(
                f"{_who(stream)} answered {header!r} instead of {MULTISTREAM_ID}")
        echo = await _read_line(stream, timeout_s)
    except StreamClosedError as exc:
        if not _connection_open(raw):
            raise
        raise ProtocolNotSupportedError(
            f"{_who(stream)} does not support {protocol}: it reset the stream"
            " instead of accepting the proposal") from exc
    if echo == NOT_SUPPORTED:
        raise ProtocolNotSupportedError(f"{_who(stream)} does not support {protocol}")
    if echo != protocol:
        raise DecodeError(f"{_who(stream)} answered {echo!r} to the proposal of {protocol}")
    raw.set_protocol(TProtocol(protocol))


async def _read_line(stream: NetStream, timeout_s: float) -> str:
    try:
        body = await stream.read_frame(max_size=MAX_NEGOTIATION_LINE, timeout_s=timeout_s)
    except FrameTooLarge as exc:
        raise DecodeError(f"{_who(stream)} sent an oversized negotiation message") from exc
    if not body.endswith(b"\n"):
        raise DecodeError(f"{_who(stream)} sent a negotiation message without its newline")
    try:
        return body[:-1].decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{_who(stream)} sent a negotiation message that is not UTF-8") from exc


def _connection_open(raw: INetStream) -> bool:
    """Whether the muxed connection under `raw` is still up (not closed or closing)."""
    conn = getattr(raw, "muxed_conn", None)
    if conn is None:
        return False
    shutting_down = getattr(conn, "event_shutting_down", None)
    if shutting_down is not None and shutting_down.is_set():
        return False
    return not bool(getattr(conn, "is_closed", True))


def _who(stream: NetStream) -> str:
    try:
        return f"peer {stream.remote_peer_id}"
    except Exception:
        return "the peer"


def refused_by_peer(exc: BaseException) -> bool:
    """Whether py-libp2p's lock-step `new_stream` failed because the peer answered `na`
    to every protocol proposed (its MultiselectClientError says "protocols not supported")."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, MultiselectClientError) and "not supported" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False

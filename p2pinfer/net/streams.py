"""Length-prefixed frames on a libp2p stream, with the size limit and timeouts enforced.

A frame is an unsigned LEB128 varint length followed by that many bytes
(`p2pinfer.protocol.framing`, which also encodes them here). The length is checked against the
limit *before* a byte of the body is read, so a peer cannot make us buffer
more than `max_size` bytes. Every read and write runs under `trio.fail_after`;
libp2p's own exceptions never leave this module: callers see
`FrameTooLarge`, `StreamClosedError`, `PeerTimeoutError` or `DecodeError`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import trio
from libp2p.abc import INetStream
from libp2p.io.exceptions import IOException
from libp2p.network.stream.exceptions import StreamEOF, StreamError

from p2pinfer.addresses import asker_group
from p2pinfer.errors import (
    DecodeError,
    FrameTooLarge,
    PeerTimeoutError,
    StateError,
    StreamClosedError,
)
from p2pinfer.net.relay_carrier import RelayedEnd, relay_of, relayed_end
from p2pinfer.net.relay_rules import path_of
from p2pinfer.protocol.framing import DEFAULT_MAX_FRAME, encode_frame

log = logging.getLogger(__name__)

DEFAULT_IO_TIMEOUT_S = 30.0
"""Default bound on one frame read or write."""

CLOSE_FLUSH_S = 5.0
"""How long `close` waits to send negotiation bytes still unsent before it closes."""

_MAX_VARINT_BYTES = 10  # a 64-bit uvarint never needs more

UNSENT_ATTR = "p2pinfer_unsent"
"""Where the multistream listener (`compat.multistream_listener`) leaves its header and
echo on an inbound libp2p stream when they are to go out with the handler's first write."""


class NetStream:
    """One libp2p stream, seen as a sequence of frames.

    Owned by whoever opened it (or by the handler it was given to); that owner
    must `close()` (graceful: the peer reads end-of-stream after the last
    frame) or `reset()` (abort) it.

    `splice` carries it on over another stream (a job moved off a relay,
    `jobs/job_move.py`): writes go to the new one at once, reads drain the old one
    to its end first, so neither side loses or reorders a byte.

    An inbound stream may start with negotiation bytes not sent yet (`unsent`: the
    listener's header and echo, for a handler registered to answer with them): the
    first write, `flush` or `close` sends them in front of its own bytes.
    """

    def __init__(self, raw: INetStream) -> None:
        self._raw = raw  # what reads come from (until its end, then `_next`)
        self._out = raw  # what writes go to
        self._next: INetStream | None = None  # spliced in: read once `_raw` has ended
        self._write_lock = trio.Lock()
        self.spliced = False  # `splice` moved it onto another stream
        #: trio time at which the bytes given to `NetHost.open_stream(first=...)` were
        #: written, with the protocol proposal; None for a stream opened without them.
        self.first_sent_at: float | None = None
        self._pending = b""  # read ahead by `prefetch`, served before the stream's bytes
        self._unsent: bytes = getattr(raw, UNSENT_ATTR, None) or b""
        if self._unsent:
            delattr(raw, UNSENT_ATTR)

    @property
    def unsent(self) -> bool:
        """Whether negotiation bytes wait for this stream's first write (see the class doc)."""
        return bool(self._unsent)

    @property
    def muxed(self) -> INetStream:
        """The libp2p stream under it that writes go to (the one it opened on, until
        `splice`)."""
        return self._out

    async def relayed_end(self, wait_s: float) -> RelayedEnd | None:
        """How the relay under this stream carried its end (`net.relay_carrier`): whether
        the relay ended it (the circuit's granted duration or byte budget, or this node's
        own connection to the relay closing, within `wait_s`) and whether the relayed
        connection went with it; None at once for a direct one."""
        return await relayed_end(getattr(self._out, "muxed_conn", None), wait_s)

    @property
    def relay(self) -> str | None:
        """The PeerID of the relay carrying the connection it writes to; None when direct."""
        return relay_of(getattr(self._out, "muxed_conn", None))

    @property
    def remote_peer_id(self) -> str:
        """The base58 PeerID authenticated by the Noise handshake for this stream."""
        return str(self._out.muxed_conn.peer_id.to_base58())

    @property
    def remote_host(self) -> str | None:
        """The remote end's transport host (an IP for TCP) as this connection sees it."""
        try:
            address = self._out.get_remote_address()
        except Exception:  # a stream without a transport address (a test double)
            return None
        return str(address[0]) if address else None

    @property
    def asker(self) -> str:
        """Whom per-address budgets count this stream's peer under (`asker_group`)."""
        return asker_group(self.remote_peer_id, self.remote_host,
                           relayed=self.relay is not None)

    def transport_addrs(self) -> list[str] | None:
        """The connection's remote transport addresses (a relayed one has `/p2p-circuit`);
        None when the connection cannot tell."""
        try:
            addrs = self._out.muxed_conn.get_transport_addresses()
        except Exception:  # a muxer or test double without them
            return None
        return [str(a) for a in addrs] if addrs is not None else None

    @property
    def path(self) -> str:
        """`direct`, `relayed` when its connection runs through a relay, or `moved` once
        `splice` took it off the one it started on."""
        return "moved" if self.spliced else path_of(self.transport_addrs())

    @property
    def protocol(self) -> str:
        """The protocol id negotiated for this stream."""
        return str(self._out.get_protocol())

    async def splice(self, new: NetStream, *, first: bytes = b"",
                     timeout_s: float = DEFAULT_IO_TIMEOUT_S) -> None:
        """Carry on over `new` (same peer, another connection): `first` is written on it
        before anything else, then every later write; our side of the old stream is
        closed, and reads go on from it until the peer closes its side, then from `new`.
        Waits for a write in flight (within `timeout_s`: PeerTimeoutError); a failed write
        of `first` (StreamClosedError) leaves the stream as it was. Once only."""
        if self.spliced or new._pending:
            raise StateError("a stream is spliced once, onto a stream with nothing read ahead")
        try:
            with trio.fail_after(timeout_s):
                await self._write_lock.acquire()
        except trio.TooSlowError as exc:
            raise PeerTimeoutError(f"a write to {self._who()} still in flight") from exc
        try:
            if self._unsent:  # the negotiation's answer belongs on the old stream
                await self._write_raw(self._out, self._unsent, timeout_s)
                self._unsent = b""
            if first:
                await self._write_raw(new._out, first, timeout_s)
            old, self._out, self._next, self.spliced = self._out, new._out, new._out, True
        finally:
            self._write_lock.release()
        # Half-close: py-libp2p's `close()` also unregisters the stream from its connection,
        # and a relayed connection with no stream left is closed (`close_when_idle`) with
        # the old stream's last bytes still on their way (seen: 8 chunks lost). Half-closed,
        # it stays registered until its end is read.
        close_write = getattr(old, "close_write", None)
        await _closed(old, close_write if callable(close_write) else None)

    async def write_frame(
        self,
        payload: bytes,
        *,
        max_size: int = DEFAULT_MAX_FRAME,
        timeout_s: float = DEFAULT_IO_TIMEOUT_S,
    ) -> None:
        """Send one frame. FrameTooLarge over `max_size` (nothing sent), StreamClosedError if
        the stream is gone, PeerTimeoutError if the peer stops reading."""
        await self.write(encode_frame(payload, max_size), timeout_s=timeout_s)

    async def read_frame(
        self, *, max_size: int = DEFAULT_MAX_FRAME, timeout_s: float = DEFAULT_IO_TIMEOUT_S
    ) -> bytes:
        """Read one frame body of at most `max_size` bytes.

        Raises FrameTooLarge (length announced over the limit, body not read),
        StreamClosedError (end of stream or reset, before or inside a frame),
        PeerTimeoutError (no complete frame within `timeout_s`), DecodeError
        (a malformed length prefix).
        """
        with self._reading("no frame", timeout_s):
            length = await self._read_length()
            if length > max_size:
                raise FrameTooLarge(
                    f"{self._who()} announced a {length}-byte frame; the limit is {max_size}"
                )
            return await self._read_exactly(length)

    async def write(self, data: bytes, *, timeout_s: float = DEFAULT_IO_TIMEOUT_S) -> None:
        """Send bytes that are already framed (the protocol state machines frame their output).
        StreamClosedError if the stream is gone, PeerTimeoutError if the peer stops reading."""
        try:  # uncontended (all but a splice): no scheduling point, 0.9 us against 5.7
            self._write_lock.acquire_nowait()
        except trio.WouldBlock:
            await self._write_lock.acquire()
        try:
            if self._unsent:
                data, self._unsent = self._unsent + data, b""
            await self._write_raw(self._out, data, timeout_s)
        finally:
            self._write_lock.release()

    async def flush(self, *, timeout_s: float = DEFAULT_IO_TIMEOUT_S) -> None:
        """Send the negotiation bytes that wait for the first write, if any (before the
        handler waits for something that may take long): as `write`."""
        if self._unsent:
            await self.write(b"", timeout_s=timeout_s)

    async def _write_raw(self, raw: INetStream, data: bytes, timeout_s: float) -> None:
        try:
            with trio.fail_after(timeout_s):
                await raw.write(data)
        except trio.TooSlowError as exc:
            raise PeerTimeoutError(f"writing to {self._who()} timed out") from exc
        except (StreamError, IOException) as exc:
            raise StreamClosedError(f"stream to {self._who()} closed while writing") from exc

    async def prefetch(self, at_most: int, *, timeout_s: float = DEFAULT_IO_TIMEOUT_S) -> None:
        """Read now what the peer has sent, up to `at_most` bytes (at least one), and keep
        it for the next reads: bytes that arrived together are taken together, so a reset
        right behind them cannot discard them (py-libp2p drops a reset stream's unread
        bytes). StreamClosedError / PeerTimeoutError as `read_frame`."""
        with self._reading("nothing", timeout_s):
            data = await self._raw.read(at_most)
        if not data:
            raise StreamClosedError(f"{self._who()} closed the stream")
        self._pending += bytes(data)

    async def read_some(
        self, max_bytes: int = 65_536, *, timeout_s: float | None = DEFAULT_IO_TIMEOUT_S
    ) -> bytes:
        """Whatever the peer has sent, up to `max_bytes`, waiting for at least one byte;
        b"" once the peer closed its side (end of stream, or the stream was reset).

        For the sans-IO state machines, which do their own framing and size limits.
        PeerTimeoutError if nothing arrives within `timeout_s` (None: wait forever).
        """
        if self._pending:
            data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
            return data
        while True:
            raw = self._raw
            try:
                if timeout_s is None:
                    data = await raw.read(max_bytes)
                else:
                    with trio.fail_after(timeout_s):
                        data = await raw.read(max_bytes)
            except trio.TooSlowError as exc:
                raise PeerTimeoutError(
                    f"nothing from {self._who()} within {timeout_s:g} s") from exc
            except (StreamError, IOException):
                data = b""
            if data or self._next is None or raw is not self._raw:
                return bytes(data)
            self._raw, self._next = self._next, None  # the old stream ended: on to the new
            await _closed(raw)  # read to its end: now it may leave its connection

    async def close(self) -> None:
        """Half-close our side (the peer reads end-of-stream), after any negotiation bytes
        still unsent (`unsent`); never raises."""
        try:
            if self._unsent:
                await self.flush(timeout_s=CLOSE_FLUSH_S)
            await self._out.close()
        except Exception as exc:  # a stream already torn down is not our caller's problem
            log.debug("stream close failed peer=%s error=%r", self._who(), exc)

    async def reset(self) -> None:
        """Abort the stream (and one it was spliced from) in both directions; never raises."""
        self._unsent = b""
        for raw in (self._out,) if self._out is self._raw else (self._out, self._raw):
            try:
                await raw.reset()
            except Exception as exc:
                log.debug("stream reset failed peer=%s error=%r", self._who(), exc)

    @contextmanager
    def _reading(self, nothing: str, timeout_s: float) -> Iterator[None]:
        """A read within `timeout_s`: PeerTimeoutError ("`nothing` from ... within") after
        it, StreamClosedError on end of stream or a failed stream."""
        try:
            with trio.fail_after(timeout_s):
                yield
        except trio.TooSlowError as exc:
            raise PeerTimeoutError(f"{nothing} from {self._who()} within {timeout_s:g} s") from exc
        except StreamEOF as exc:
            raise StreamClosedError(f"{self._who()} closed the stream") from exc
        except (StreamError, IOException) as exc:
            raise StreamClosedError(f"stream to {self._who()} failed: {exc}") from exc

    async def _read_length(self) -> int:
        value = 0
        for index in range(_MAX_VARINT_BYTES):
            byte = (await self._read_exactly(1))[0]
            value |= (byte & 0x7F) << (7 * index)
            if not byte & 0x80:
                if index > 0 and byte == 0:
                    raise DecodeError(f"{self._who()} sent a non-minimal frame length")
                return value
        raise DecodeError(f"{self._who()} sent a frame length longer than 64 bits")

    async def _read_exactly(self, count: int) -> bytes:
        buf = bytearray(self._pending[:count])
        self._pending = self._pending[count:]
        while len(buf) < count:
            chunk = await self._raw.read(count - len(buf))
            if not chunk:
                raise StreamEOF("end of stream inside a frame")
            buf += chunk
        return bytes(buf)

    def _who(self) -> str:
        try:
            return f"peer {self.remote_peer_id[-8:]}"
        except Exception:
            return "peer ?"


async def _closed(raw: INetStream, how: Callable[[], Awaitable[None]] | None = None) -> None:
    """`raw.close()` (or `how`), within 2 s; a stream already gone is no error (its peer
    reads its end all the same)."""
    with trio.move_on_after(2):
        try:
            await (how or raw.close)()
        except Exception as exc:
            log.debug("closing a spliced-off stream failed error=%r", exc)


StreamHandler = Callable[[NetStream], Awaitable[None]]
"""Serves one inbound stream; the stream is closed (or reset on error) when it returns."""


class StreamRegistry(Protocol):
    """`NetHost.set_stream_handler`, as the parts that serve a protocol are given it."""

    def __call__(self, protocol: str, handler: StreamHandler, *,
                 echo_with_answer: bool = False) -> None: ...

"""Multistream-select, listener side: its header and its answer in two writes.

**Defect (py-libp2p 0.8.1).** `libp2p/protocol_muxer/multiselect.py`,
`Multiselect.negotiate` (every inbound stream, via `BasicHost._swarm_stream_handler`)
writes `/multistream/1.0.0` before reading anything, then reads the dialer's header and
proposal and writes its echo: two writes, so two Yamux frames, two Noise messages and
two wake-ups of the dialer, when a pipelining dialer (ours, go-libp2p's and
rust-libp2p's lazy mode) has already sent its header and proposal together and only
waits for the echo. Not a protocol error; one message each way per stream (a job's
first answer included) wasted on the provider and the consumer.

**What we do.** `install()` replaces `Multiselect.negotiate` with one that first looks
at what the stream already holds (Yamux buffers received bytes per stream). If the
dialer sent more than its header, it did not wait for ours, so ours can wait: the
header, then the proposal are read, and our header goes out in front of our first
answer (the echo, `na` or an `ls` listing) in one write. A dialer that sent only its
header (py-libp2p's own lock-step client waits for ours before proposing) or nothing
yet, or a stream that is not Yamux, gets libp2p's `negotiate` unchanged, so no dialer
ever waits on us. What is read and written, and the errors raised, are otherwise the
stock ones.

A protocol registered with `echo_with_answer` (the job protocol: its handler reads the
request and answers within milliseconds) goes one step further when the dialer also
sent bytes after its proposal (its request: it waits for nothing of ours before
sending it): our header and echo are not written at all here but left on the stream
(`p2pinfer.net.streams.UNSENT_ATTR`), and `NetStream` sends them in front of the
handler's first write, or on `flush` (before the handler waits for a queue slot or
the chain) or `close`. One encrypted message fewer per job, on the provider's path
from request to first token; the bytes on the wire, and their order, are the same.

Both ways, a stream may send at most MAX_COMMANDS commands (proposals and `ls`); the
next is refused (MultiselectError, the stream reset). libp2p answered every command for
as long as the negotiation's 10 s lasted: 20,000 `ls` in one 80 KB write got 4.2 MB of
protocol listings back, ~5 CPU-s (attack 61, docs/security.md). An honest dialer
proposes one protocol, or a few in turn.

**To drop it.** When upstream writes its header together with its first answer,
delete this module and its `install` call; the guard test
(tests/unit/net/compat/test_multistream_listener.py) fails on its defect check then.

**Upstream.** Not reported; no drafted patch.
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.abc import IMultiselectCommunicator
from libp2p.custom_types import StreamHandlerFn, TProtocol
from libp2p.io.exceptions import IOException
from libp2p.protocol_muxer.exceptions import MultiselectCommunicatorError, MultiselectError
from libp2p.protocol_muxer.multiselect import (
    DEFAULT_NEGOTIATE_TIMEOUT,
    MULTISELECT_PROTOCOL_ID,
    PROTOCOL_NOT_FOUND_MSG,
    Multiselect,
    is_valid_handshake,
)
from libp2p.utils.varint import encode_delim

from p2pinfer.net.streams import UNSENT_ATTR

PATCHED = {
    "libp2p.protocol_muxer.multiselect:Multiselect.negotiate": "e870e3fe41c87e3c",
    "libp2p.protocol_muxer.multiselect:Multiselect.handshake": "2084891d34645a5f",
    "libp2p.protocol_muxer.multiselect_communicator:MultiselectCommunicator.write":
        "dc577473d631f13c",
    "libp2p.stream_muxer.yamux.yamux:YamuxStream.read": "ca585f2199fd4e83",
}
"""libp2p source this module replaces or relies on, with its digest at 0.8.1 (`_canary`)."""

ORIGINAL = Multiselect.negotiate
ORIGINALS = {"libp2p.protocol_muxer.multiselect:Multiselect.negotiate": ORIGINAL}
UPSTREAM = None
DRAFT = None

HEADER = encode_delim(MULTISELECT_PROTOCOL_ID.encode())
MAX_COMMANDS = 16
"""Commands (proposals, `ls`) one stream may send before its negotiation is refused."""

ECHO_WITH_ANSWER = "p2pinfer_echo_with_answer"
"""The attribute of a host's `Multiselect` listing its `echo_with_answer` protocols."""


def echo_with_answer(multiselect: Multiselect, protocol: str) -> None:
    """Let `protocol`'s handler send our header and echo with its first write (module
    doc). Only for a handler that takes a `NetStream` and always writes, flushes or
    closes it promptly: until then the dialer has no answer to its proposal."""
    protocols: set[str] = getattr(multiselect, ECHO_WITH_ANSWER, set())
    protocols.add(protocol)
    setattr(multiselect, ECHO_WITH_ANSWER, protocols)
"""Our header as the dialer's arrives: a length prefix, the id and a newline."""


def buffered(communicator: IMultiselectCommunicator) -> int:
    """How many bytes the stream under `communicator` holds unread (0 when it is not a
    Yamux stream, or not known)."""
    stream = getattr(communicator, "read_writer", None)
    muxed = getattr(stream, "muxed_stream", None)
    buffers = getattr(getattr(muxed, "conn", None), "stream_buffers", None)
    if not isinstance(buffers, dict):
        return 0
    return len(buffers.get(getattr(muxed, "stream_id", None), b""))


def dialer_went_ahead(communicator: IMultiselectCommunicator) -> bool:
    """Whether the dialer sent more than its header before hearing ours."""
    return buffered(communicator) > len(HEADER)


async def negotiate_in_one_write(
    self: Multiselect,
    communicator: IMultiselectCommunicator,
    negotiate_timeout: int = DEFAULT_NEGOTIATE_TIMEOUT,
) -> tuple[TProtocol | None, StreamHandlerFn | None]:
    """libp2p's `negotiate`; our header goes with our first answer when the dialer
    pipelined its proposal."""
    communicator = _Counted(communicator)
    if not dialer_went_ahead(communicator):
        return await ORIGINAL(self, communicator, negotiate_timeout)
    pending = [MULTISELECT_PROTOCOL_ID]  # ours, not written yet
    try:
        with trio.fail_after(negotiate_timeout):
            if not is_valid_handshake(await _read(communicator)):
                await _write(communicator, pending)
                raise MultiselectError("multiselect protocol ID mismatch")
            while True:
                command = await _read(communicator)
                if command == "ls":
                    pending.append("\n".join(p for p in self.handlers if p is not None) + "\n")
                else:
                    protocol = TProtocol(command) if command else None
                    if protocol in self.handlers:
                        if protocol in getattr(self, ECHO_WITH_ANSWER, ()) and buffered(
                                communicator):  # the request came with the proposal
                            setattr(communicator.read_writer,
                                    UNSENT_ATTR, _framed([*pending, command]))
                        else:
                            await _write(communicator, [*pending, command])
                        return protocol, self.handlers[protocol]
                    pending.append(PROTOCOL_NOT_FOUND_MSG)
                await _write(communicator, pending)
                pending = []
    except trio.TooSlowError as exc:
        raise MultiselectError("handshake read timeout") from exc


class _Counted(IMultiselectCommunicator):
    """`communicator`, refusing to read a command past MAX_COMMANDS (and the header)."""

    def __init__(self, communicator: IMultiselectCommunicator) -> None:
        self._communicator = communicator
        self._reads = 0

    async def read(self) -> str:
        self._reads += 1
        if self._reads > MAX_COMMANDS + 1:
            raise MultiselectError(f"over {MAX_COMMANDS} multistream commands")
        return await self._communicator.read()

    async def write(self, msg_str: str) -> None:
        await self._communicator.write(msg_str)

    def __getattr__(self, name: str) -> Any:  # read_writer: the communicator's
        return getattr(self._communicator, name)


async def _read(communicator: IMultiselectCommunicator) -> str:
    try:
        return await communicator.read()
    except MultiselectCommunicatorError as error:
        raise MultiselectError() from error


async def _write(communicator: IMultiselectCommunicator, messages: list[str]) -> None:
    """`messages`, each framed as `MultiselectCommunicator.write` frames one, in one write
    (its errors, as it catches them, become MultiselectError)."""
    stream = communicator.read_writer  # type: ignore[attr-defined]  # libp2p's communicator
    try:
        await stream.write(_framed(messages))
    except (IOException, AssertionError, ValueError) as error:
        raise MultiselectError() from error


def _framed(messages: list[str]) -> bytes:
    return b"".join(encode_delim(m.encode()) for m in messages)


def install() -> None:
    """Replace `Multiselect.negotiate` (idempotent)."""
    Multiselect.negotiate = negotiate_in_one_write  # type: ignore[method-assign]

"""A responder that refuses a stream protocol by resetting the stream, as other libp2p
implementations may (rust-libp2p drops a stream whose negotiation failed), instead of
py-libp2p's `na`-and-wait."""

from __future__ import annotations

from typing import Any

from libp2p.protocol_muxer.exceptions import MultiselectCommunicatorError


class RefusingCommunicator:
    """py-libp2p's responder-side multistream communicator, except that on reading the
    proposal of `protocol` it refuses it the way other libp2p implementations may: it
    answers `na` or not (`answer_na`) and then fails, so py-libp2p resets the stream
    (`hang_up`: closes the whole connection instead)."""

    def __init__(self, inner: Any, protocol: str, *, answer_na: bool, hang_up: bool) -> None:
        self._inner = inner
        self._protocol = protocol
        self._answer_na = answer_na
        self._hang_up = hang_up

    async def write(self, msg: str) -> None:
        await self._inner.write(msg)

    async def read(self) -> str:
        msg: str = await self._inner.read()
        if msg != self._protocol:
            return msg
        if self._answer_na:
            await self._inner.write("na")
        if self._hang_up:
            await self._inner.read_writer.muxed_conn.close()
        raise MultiselectCommunicatorError(f"refusing {self._protocol}")


def refuse_protocol(net: Any, protocol: str, *, answer_na: bool = False,
                    hang_up: bool = False) -> None:
    """Make the running node `net` refuse inbound proposals of `protocol` with a stream
    reset (a standard responder's behaviour, e.g. rust-libp2p dropping the stream), while
    every other protocol it serves is negotiated as before."""
    multiselect = net._host.get_mux()
    stock = multiselect.negotiate

    async def negotiate(communicator: Any, *args: Any, **kwargs: Any) -> Any:
        refusing = RefusingCommunicator(communicator, protocol, answer_na=answer_na,
                                        hang_up=hang_up)
        return await stock(refusing, *args, **kwargs)

    multiselect.negotiate = negotiate

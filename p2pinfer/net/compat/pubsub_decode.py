"""Pubsub: a malformed RPC from one peer takes the whole host down.

**Defect (py-libp2p 0.8.1).** `libp2p/pubsub/pubsub.py`, `Pubsub.stream_handler`: it
catches `StreamError`, `ParseError` and `IncompleteReadError` from
`continuously_read_stream` (then resets the stream and drops the peer), but not
protobuf's `DecodeError`, raised by `RPC.ParseFromString` on a garbled RPC. That escapes
into the connection's task group and ends the host, and with it the node: seen with 30
nodes on 2 cores, where RPCs arrived garbled. Any peer can send one.

**What we do.** `RobustPubsub` is py-libp2p's Pubsub whose `stream_handler` also catches
`DecodeError`, and then does what the stock handler does for the errors it catches:
reset that peer's pubsub stream and drop the peer. `run_host` builds its Pubsub from it.

**To drop it.** When upstream's `stream_handler` catches `DecodeError` (or
`continuously_read_stream` turns it into `ParseError`), build a plain `Pubsub`.

**Upstream.** No issue found for DecodeError; the sibling defect for writes was
https://github.com/libp2p/py-libp2p/issues/1120 (StreamReset in `write_msg`). Drafted
patch: docs/upstream/pubsub-decode-error.diff.
"""

from __future__ import annotations

import logging

from google.protobuf.message import DecodeError as ProtobufDecodeError
from libp2p.abc import INetStream
from libp2p.pubsub.pubsub import Pubsub

log = logging.getLogger(__name__)

PATCHED = {"libp2p.pubsub.pubsub:Pubsub.stream_handler": "4be06aba2f448b7b"}
UPSTREAM = "https://github.com/libp2p/py-libp2p/issues/1120"
DRAFT = "docs/upstream/pubsub-decode-error.diff"


class RobustPubsub(Pubsub):
    """py-libp2p's Pubsub, minus one way for a peer to crash the whole host."""

    async def stream_handler(self, stream: INetStream) -> None:
        try:
            await super().stream_handler(stream)
        except ProtobufDecodeError as exc:
            peer_id = stream.muxed_conn.peer_id
            log.warning("malformed pubsub RPC, stream reset peer=%s error=%s", peer_id, exc)
            try:
                await stream.reset()
            finally:
                self._handle_dead_peer(peer_id)

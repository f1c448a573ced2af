"""Noise: a write cancelled after its message was encrypted kills the whole connection.

**Defect (py-libp2p 0.8.1).** `libp2p/security/noise/io.py`,
`BaseNoiseMsgReadWriter.write_msg`, encrypts the message (the session's send nonce is
spent) and then awaits the packet write: `TrioTCPStream.write` (`libp2p/io/trio.py`)
takes its write lock, a checkpoint, and trio's `send_all` checkpoints again before and
while it sends. A cancellation delivered at any of those (trio's `Lock.acquire` yields
even when the lock is free, so the cancel can have arrived a moment earlier, while
Yamux's own write lock was taken) leaves the message encrypted and never sent, or half
sent. Every later message on the connection then carries a nonce the peer does not
expect, or starts mid-frame: the peer fails to decrypt, and closes the connection with
every stream on it. A provider's token writer is cancelled when its engine fails; the
`Reject` that then tells the consumer why went out on a dead connection, and the consumer
saw "the provider closed the stream before the result" instead (one run in ten with
`quick_locks` installed, which moves where the cancel lands).

**What we do.** `install()` wraps `write_msg`: a pending cancellation is honoured before
the message is encrypted (`checkpoint_if_cancelled`), and from the encryption to the last
byte handed to the socket the write is shielded, so a cancel arriving then waits until
the message is whole on the wire (and is raised at the caller's next checkpoint). The
shield is bounded: a message not sent within `SEND_GRACE_S` (a peer that stopped
reading) closes the connection under it and raises `IOException`, since the session can
no longer be used; a connection killed for that is one the peer had stalled anyway.

**To drop it.** When upstream encrypts and sends a Noise message without a checkpoint
between them, or shields that span (go-libp2p's `rw.go` does both under one mutex,
with no cancellation in between), delete this module and its `install` call.

**Upstream.** Not reported; no draft yet.
"""

from __future__ import annotations

import logging

import trio
from libp2p.io.exceptions import IOException
from libp2p.security.noise.io import BaseNoiseMsgReadWriter

log = logging.getLogger(__name__)

PATCHED = {
    "libp2p.security.noise.io:BaseNoiseMsgReadWriter.write_msg": "00818920318f86aa",
    "libp2p.io.msgio:BaseMsgReadWriter.write_msg": "5e7a1010c7b7d880",
    "libp2p.io.trio:TrioTCPStream.write": "4b00ddfa20520320",
}
"""libp2p source this module replaces or calls, with its digest at 0.8.1 (`_canary`)."""

ORIGINAL = BaseNoiseMsgReadWriter.write_msg
ORIGINALS = {next(iter(PATCHED)): ORIGINAL}
"""The patched-in-place targets' original objects, for the canary."""
UPSTREAM = None

SEND_GRACE_S = 5.0
"""How long a cancelled write may still take to put its message on the wire. A Noise
message is at most 64 KiB: 0.5 s at 1 Mbit/s, so only a peer that stopped reading makes
the write outlast it."""


async def write_whole(self: BaseNoiseMsgReadWriter, msg: bytes,
                      prefix_encoded: bool = False) -> None:
    """libp2p's `write_msg`, with no cancellation between encrypting and sending."""
    await trio.lowlevel.checkpoint_if_cancelled()
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + SEND_GRACE_S
        await ORIGINAL(self, msg, prefix_encoded)
    if scope.cancelled_caught:
        log.debug("a Noise message not sent in %.0f s: closing the connection", SEND_GRACE_S)
        with trio.CancelScope(shield=True) as closing:
            closing.deadline = trio.current_time() + 1.0
            await self.close()
        raise IOException(f"message not sent within {SEND_GRACE_S:.0f} s; connection closed")


def install() -> None:
    """Wrap `BaseNoiseMsgReadWriter.write_msg` (idempotent)."""
    BaseNoiseMsgReadWriter.write_msg = write_whole  # type: ignore[method-assign]

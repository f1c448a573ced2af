"""Yamux: a WINDOW_UPDATE frame after every read.

**Defect (py-libp2p 0.8.1).** `libp2p/stream_muxer/yamux/yamux.py`,
`YamuxStream._auto_tune_and_send_window_update` (called from `YamuxStream.read` for every
read) grants credit back on every read: its `PY_YAMUX_RELEASE_ON_READ` branch (on by
default) and its "partial slack" branch (taken even with it off) both fire for any
`bytes_read > 0`. Pubsub and our framing read a varint length one byte at a time, so
each small gossip RPC made the receiver send 2-3 encrypted update frames back, and the
sender decrypt and parse them (docs/scaling.md, idle-node profile).

**What we do.** `install()` replaces that method with go-yamux's `sendWindowUpdate`
rule: no update until at least half the receive window has been consumed, then one
update for all of it (with py-libp2p's own `_grow_to_delta` and auto-tune epoch). Flow
control is unchanged (the sender never has more than the window in flight); only the
number of update frames falls.

**To drop it.** When upstream sends updates only past its hysteresis threshold for
every read path (remove the release-on-read and partial-slack branches, or make them
opt-in), delete this module and its `install` call; the guard test
(tests/unit/net/compat/test_yamux_window.py) then still passes on stock libp2p.

**Upstream.** The auto-tuning came with libp2p/py-libp2p#1269 (issue #1270,
https://github.com/libp2p/py-libp2p/issues/1270); no upstream issue about the update per
read was found. Drafted patch: docs/upstream/yamux-window-update-per-read.diff.
"""

from __future__ import annotations

from libp2p.stream_muxer.yamux.yamux import YamuxStream

PATCHED = {
    "libp2p.stream_muxer.yamux.yamux:YamuxStream._auto_tune_and_send_window_update":
        "6ebcbd822fe7f996",
    "libp2p.stream_muxer.yamux.yamux:YamuxStream._grow_to_delta": "ae0fd6c724e5d1aa",
    "libp2p.stream_muxer.yamux.yamux:YamuxStream._apply_autotune_epoch": "30126bc3d0c140c4",
}
"""libp2p source this module replaces or calls, with its digest at 0.8.1 (`_canary`)."""

ORIGINAL = YamuxStream._auto_tune_and_send_window_update
ORIGINALS = {next(iter(PATCHED)): ORIGINAL}
"""The patched-in-place targets' original objects, for the canary."""
UPSTREAM = "https://github.com/libp2p/py-libp2p/issues/1270"
DRAFT = "docs/upstream/yamux-window-update-per-read.diff"


async def grant_credit_when_half_consumed(self: YamuxStream, *, bytes_read: int = 0) -> None:
    """go-yamux's `sendWindowUpdate`: no update until half the window is consumed."""
    del bytes_read  # the window arithmetic below already counts what was read
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        consumed = self.target_recv_window - (self.recv_window + buffered)
        if consumed <= 0 or consumed < self.target_recv_window // 2:
            return
        increment = self._grow_to_delta(buffered) + self._apply_autotune_epoch(buffered)
        self._pending_recv_release = 0
    # Never hold window_lock across the write (py-libp2p's own rule).
    await self.send_window_update(increment, skip_lock=True)


def install() -> None:
    """Replace `YamuxStream._auto_tune_and_send_window_update` (idempotent)."""
    YamuxStream._auto_tune_and_send_window_update = (  # type: ignore[method-assign]
        grant_credit_when_half_consumed
    )

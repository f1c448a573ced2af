"""Streams: every layer's lock a trip through the scheduler, even when nobody holds it.

**Defect (py-libp2p 0.8.1).** Each layer a stream's bytes cross takes a `trio.Lock` (or
`trio.Semaphore`) of its own: `NetStream._state_lock`
(`libp2p/network/stream/net_stream.py`), `YamuxStream.window_lock` and the two inside
its `rw_lock` (`libp2p/stream_muxer/rw_lock.py`), `Yamux._write_lock` and
`Yamux.streams_lock` (`libp2p/stream_muxer/yamux/yamux.py`, the latter taken by every
read), `TrioTCPStream.read_lock` and `write_lock` (`libp2p/io/trio.py`). trio makes
every `acquire` a schedule point, free lock or not: the task goes back to the run queue
and the scheduler makes a pass (an epoll poll, every other ready task) before it goes
on. One 300-byte frame written on a stream and read on the other end took ~10 passes
(22 reschedules of a task); a job's request, the provider's echo, its Accept and every
token chunk pay them on both ends, and a relay pays them twice per message.

**What we do.** `install()` wraps those classes' `__init__` so that the locks they make
are `QuickLock`s: trio's own lock inside, taken at once when it is free (after trio's
`checkpoint_if_cancelled`, so a cancelled task still stops there), parked in trio's
FIFO queue when it is not, so mutual exclusion, fairness and the hand-over on release
are trio's. What goes is only the pass through the scheduler when nobody waits. Every
write still reaches one (the socket's `send_all`, or the checkpoint `Yamux._write_frame`
ends with), as does a read that waits for data (`Event.wait`, the socket); no loop in
these classes had a free lock as its only one (each loop body in the PATCHED functions
was read for this). A read served from the buffer reaches none, so a free lock still
makes a pass every MAX_SKIPPED+1 times: a reader draining a buffer that a peer filled
with tiny frames cannot keep the loop to itself. Measured: ~3 scheduler passes
per 300-byte frame written and read instead of ~10 (the defect test); a job-like
exchange (pipelined open, request, answer, close) 1,632 us of CPU against 1,994 with
stock locks, alternating (`bench/net.py`, bench/results/net.json).

**Installed since 12-06** (`compat.install()`), after `cancelled_write`. For a few hours
it was not: with it, a provider's Reject after an engine failure mid-answer was lost in
~1 run of 10 of tests/integration/test_jobs_engine_failure.py. The cause was libp2p's,
not the locks': a write cancelled after Noise encrypted its message (nonce spent) and
before the socket took it desynchronises the session, and fewer schedule points moved
where the cancel landed. With `cancelled_write` installed: 0 failures in 30 runs of
that test (2 of 30 with quick locks and without it), 0 in 15 runs of
tests/integration/test_net_relay_limits.py.

**To drop it.** When upstream's stream path takes its locks only where tasks can
contend (or with `acquire_nowait` first), delete this module; the defect test
(tests/unit/net/compat/test_quick_locks.py) counts the scheduler passes of frames over
stock locks and fails when they fall near the quick ones.

**Upstream.** Not reported; no drafted patch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Protocol

import trio
from libp2p.io.trio import TrioTCPStream
from libp2p.network.stream.net_stream import NetStream
from libp2p.stream_muxer.rw_lock import ReadWriteLock
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

from p2pinfer.net.compat import yamux_open

LOCKS: dict[type, tuple[str, ...]] = {
    NetStream: ("_state_lock",),
    YamuxStream: ("window_lock",),
    Yamux: ("_write_lock", "streams_lock"),
    TrioTCPStream: ("read_lock", "write_lock"),
    ReadWriteLock: ("_readers_lock", "_writer_lock"),
}
"""The attributes, by class, whose lock becomes a QuickLock."""

PATCHED = {
    "libp2p.network.stream.net_stream:NetStream.__init__": "c1bafd9d5782acb4",
    "libp2p.network.stream.net_stream:NetStream.read": "cc3b280850abe4b3",
    "libp2p.network.stream.net_stream:NetStream.write": "b0662734215dfe68",
    "libp2p.stream_muxer.yamux.yamux:YamuxStream.__init__": "ab24c0709285d573",
    "libp2p.stream_muxer.yamux.yamux:YamuxStream.write": "d87f74dfb53ab194",
    "libp2p.stream_muxer.yamux.yamux:YamuxStream.read": "ca585f2199fd4e83",
    "libp2p.stream_muxer.yamux.yamux:Yamux.__init__": "3b11a2a71ca444ca",
    "libp2p.stream_muxer.yamux.yamux:Yamux._write_frame": "16ff969cdd0d2b1b",
    "libp2p.stream_muxer.yamux.yamux:Yamux.read_stream": "d07c99299384666d",
    "libp2p.stream_muxer.yamux.yamux:Yamux.handle_incoming": "ad15ff6943feac20",
    "libp2p.io.trio:TrioTCPStream.__init__": "4222fa993846189e",
    "libp2p.io.trio:TrioTCPStream.read": "c606ac89ec9d0eae",
    "libp2p.io.trio:TrioTCPStream.write": "4b00ddfa20520320",
    "libp2p.stream_muxer.rw_lock:ReadWriteLock": "4c503b1027c3ef85",
}
"""libp2p source this module patches (the `__init__`s) or relies on (every function
that takes one of those locks in a loop or on the data path), with its digest at 0.8.1."""

def _init_key(cls: type) -> str:
    """The canary's name of `cls.__init__` (`module:Class.__init__`)."""
    return f"{cls.__module__}:{cls.__qualname__}.__init__"


ORIGINALS: dict[str, Any] = {
    _init_key(cls): vars(cls)["__init__"] for cls in LOCKS
} | {"libp2p.stream_muxer.yamux.yamux:Yamux._write_frame": yamux_open.ORIGINAL}
"""The `__init__`s as libp2p wrote them (before `install`), for the canary."""
UPSTREAM = None
DRAFT = None


class _Lockish(Protocol):
    def acquire_nowait(self) -> None: ...
    async def acquire(self) -> None: ...
    def release(self) -> None: ...


MAX_SKIPPED = 8
"""Free locks taken in a row, across tasks, without a schedule point; the next one is one
(trio's pass), so a task draining a full stream buffer, whose reads then wait for
nothing, still lets the others run and the loop poll its sockets every few reads."""

_skipped = 0


class QuickLock:
    """A trio Lock or Semaphore whose acquiring is mostly no schedule point when free.

    Free: trio's `acquire_nowait`, and a pass through the scheduler only every
    MAX_SKIPPED+1-th time. Not free: trio's own `acquire` (parks FIFO; a release hands
    it over). A cancelled task raises Cancelled here, free lock or not, as with trio's.
    """

    __slots__ = ("inner",)

    def __init__(self, inner: _Lockish) -> None:
        self.inner = inner

    async def acquire(self) -> None:
        global _skipped
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.inner.acquire_nowait()
        except trio.WouldBlock:
            await self.inner.acquire()
            return
        if _skipped < MAX_SKIPPED:
            _skipped += 1
            return
        _skipped = 0
        await trio.lowlevel.cancel_shielded_checkpoint()  # held: as trio's own acquire

    def acquire_nowait(self) -> None:
        self.inner.acquire_nowait()

    def release(self) -> None:
        self.inner.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release()

    def __getattr__(self, name: str) -> Any:  # locked(), statistics(), value, ...
        return getattr(self.inner, name)


def _quick_init(original: Callable[..., None], names: tuple[str, ...]) -> Callable[..., None]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        for name in names:
            setattr(self, name, QuickLock(getattr(self, name)))

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    return __init__


def install() -> None:
    """Make the locks of streams and connections built from now on QuickLocks
    (idempotent; those already built keep trio's). `compat.install()` calls it."""
    for cls, names in LOCKS.items():
        original = ORIGINALS[_init_key(cls)]
        if vars(cls)["__init__"] is original:
            cls.__init__ = _quick_init(original, names)  # type: ignore[misc]


@contextmanager
def installed(on: bool = True) -> Iterator[None]:
    """Streams and connections made in this block get QuickLocks (`on`) or libp2p's own
    locks; the state before is restored after."""
    before = all(vars(cls)["__init__"] is not ORIGINALS[_init_key(cls)] for cls in LOCKS)
    (install if on else uninstall)()
    try:
        yield
    finally:
        (install if before else uninstall)()


def uninstall() -> None:
    """libp2p's own `__init__`s back (for tests that measure stock libp2p)."""
    for cls in LOCKS:
        cls.__init__ = ORIGINALS[_init_key(cls)]  # type: ignore[misc]

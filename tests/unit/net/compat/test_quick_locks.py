"""Stream locks: in stock py-libp2p 0.8.1 every lock a stream's bytes pass (NetStream,
Yamux stream and connection, the TCP stream) is a pass through trio's scheduler even when
free; with `quick_locks` a free one is taken at once, and a pass is still made every
MAX_SKIPPED+1 locks, so a task draining a full buffer cannot hold the loop. Real
py-libp2p hosts on 127.0.0.1 for the stream tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

from p2pinfer.net import compat
from p2pinfer.net.compat import quick_locks
from p2pinfer.net.compat.quick_locks import QuickLock
from p2pinfer.net.host import run_host
from p2pinfer.net.streams import NetStream
from tests.integration.net_helpers import config
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

SINK = "/p2pinfer-test/sink/1.0.0"
FRAMES = 60


class Passes(trio.abc.Instrument):
    """Counts the scheduler's passes (one epoll poll each)."""

    def __init__(self) -> None:
        self.count = 0

    def before_io_wait(self, timeout: float) -> None:
        self.count += 1


@pytest.fixture(autouse=True)
def _quick_locks_after() -> Iterator[None]:
    """Every test leaves the quick locks installed, as `compat.install()` does."""
    compat.install()
    yield
    quick_locks.install()


async def passes_per_frame() -> float:
    """Scheduler passes per 300-byte frame written on one host and read on the other."""
    received = trio.Event()

    async def sink(stream: NetStream) -> None:
        for _ in range(FRAMES + 1):
            await stream.read_frame(max_size=4096)
        received.set()

    with trio.fail_after(20):
        async with run_host(config()) as server, run_host(config()) as client:
            server.set_stream_handler(SINK, sink)
            await client.connect(server.addrs()[0])
            stream = await client.open_stream(server.peer_id, SINK)
            await stream.write_frame(b"w" * 300)  # the stream is up at both ends
            passes = Passes()
            trio.lowlevel.add_instrument(passes)
            try:
                for _ in range(FRAMES):
                    await stream.write_frame(b"x" * 300)
                await received.wait()
            finally:
                trio.lowlevel.remove_instrument(passes)
    return passes.count / FRAMES


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(quick_locks)


async def passes_taking(lock: Any, times: int = 1) -> int:
    """Scheduler passes made while `lock` (free) is taken and released `times` times."""
    passes = Passes()
    trio.lowlevel.add_instrument(passes)
    try:
        for _ in range(times):
            async with lock:
                pass
    finally:
        trio.lowlevel.remove_instrument(passes)
    return passes.count


async def test_defect_stock_a_free_trio_lock_is_a_pass_through_the_scheduler() -> None:
    # If this fails, trio stopped rescheduling on a free lock: quick_locks gains nothing.
    assert await passes_taking(trio.Lock()) == 1
    assert await passes_taking(trio.Semaphore(1)) == 1


@pytest.mark.network
async def test_defect_stock_a_frame_costs_many_scheduler_passes_quick_locks_far_fewer(
) -> None:
    # If the stock count falls near the quick one, upstream dropped its per-layer
    # schedule points: drop the workaround.
    with quick_locks.installed(False):
        stock = await passes_per_frame()
    with quick_locks.installed():
        quick = await passes_per_frame()
    assert stock >= 6  # ~10 measured
    assert quick <= stock * 0.6, (stock, quick)  # ~3


async def test_a_free_quick_lock_is_taken_without_a_pass_but_every_few_make_one() -> None:
    lock = QuickLock(trio.Lock())
    quick_locks._skipped = 0
    assert await passes_taking(lock, quick_locks.MAX_SKIPPED) == 0
    assert await passes_taking(lock) == 1  # the MAX_SKIPPED+1-th
    assert await passes_taking(lock, quick_locks.MAX_SKIPPED) == 0


async def test_a_held_lock_queues_its_waiters_in_order_and_the_releaser_cannot_cut_in(
) -> None:
    lock = QuickLock(trio.Lock())
    order: list[str] = []

    async def waiter(name: str) -> None:
        async with lock:
            order.append(name)

    async with trio.open_nursery() as nursery:
        await lock.acquire()
        nursery.start_soon(waiter, "b")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiter, "c")
        await trio.testing.wait_all_tasks_blocked()
        lock.release()
        await lock.acquire()  # behind b and c: a release hands the lock over
        order.append("a again")
        lock.release()
    assert order == ["b", "c", "a again"]


async def test_a_cancelled_task_stops_at_a_free_lock_and_leaves_it_free() -> None:
    lock = QuickLock(trio.Lock())
    with trio.CancelScope() as scope:
        scope.cancel()
        await lock.acquire()
        pytest.fail("acquired inside a cancelled scope")
    assert scope.cancelled_caught and not lock.locked()


async def test_a_semaphore_is_wrapped_as_well() -> None:
    sack = QuickLock(trio.Semaphore(1))  # type: ignore[arg-type]
    await sack.acquire()
    with pytest.raises(trio.WouldBlock):
        sack.acquire_nowait()
    sack.release()
    assert sack.value == 1


@pytest.mark.network
async def test_a_reader_draining_a_full_buffer_of_tiny_frames_lets_the_loop_run() -> None:
    # The attack: a peer fills our receive buffer with thousands of 1-byte frames. The
    # reads that drain it wait for nothing; if no lock on that path made a pass, the
    # drain would hold the event loop (every other stream, timer and job) until done.
    frames = 3000
    total = frames * 2  # a 1-byte length and a 1-byte body each
    with trio.fail_after(30), quick_locks.installed():
        async with run_host(config()) as server, run_host(config()) as client:
            async def flood(stream: NetStream) -> None:
                await stream.write(b"\x01x" * frames)
                await trio.sleep_forever()

            server.set_stream_handler(SINK, flood)
            await client.connect(server.addrs()[0])
            stream = await client.open_stream(server.peer_id, SINK)
            await stream.write_frame(b"go")
            while _buffered(stream) < total:  # all of it arrived, none read yet
                await trio.sleep(0.01)
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await trio.sleep(0)
                    ticks += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ticker)
                await trio.sleep(0)
                ticks = 0
                for _ in range(frames):
                    assert await stream.read_frame(max_size=16) == b"x"
                nursery.cancel_scope.cancel()
    # Two reads a frame, two free locks or more a read: a pass every few frames.
    assert ticks >= frames // 10, ticks


def _buffered(stream: NetStream) -> int:
    raw: Any = stream._raw
    muxed: YamuxStream = raw.muxed_stream
    conn: Yamux = muxed.conn
    return len(conn.stream_buffers.get(muxed.stream_id, b""))


def test_install_is_idempotent_and_new_streams_get_quick_locks() -> None:
    quick_locks.install()
    quick_locks.install()
    conn: Any = type("Conn", (), {})()
    stream = YamuxStream(1, conn, is_initiator=True)
    assert isinstance(stream.window_lock, QuickLock)
    assert isinstance(stream.window_lock.inner, trio.Lock)  # wrapped once, not twice
    assert isinstance(stream.rw_lock._writer_lock, QuickLock)
    with quick_locks.installed(False):
        assert isinstance(YamuxStream(3, conn, is_initiator=True).window_lock, trio.Lock)
    assert isinstance(YamuxStream(5, conn, is_initiator=True).window_lock, QuickLock)

"""Yamux credit: stock py-libp2p 0.8.1 sends a WINDOW_UPDATE after every read; with the
workaround, only once half the receive window has been consumed (go-yamux's rule).
The same on real hosts: tests/integration/test_net_upkeep.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace

from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE, YamuxStream

from p2pinfer.net import compat
from p2pinfer.net.compat import yamux_window
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

Credit = Callable[..., Awaitable[None]]


def stream_after_reading(n: int) -> tuple[YamuxStream, list[int]]:
    """A Yamux stream that received and read `n` bytes (none left buffered); the
    increments of the window updates it sends are recorded."""
    conn = SimpleNamespace(stream_buffers={}, rtt=lambda: 0.001)
    stream = YamuxStream(1, conn, is_initiator=True)  # type: ignore[arg-type]
    stream.recv_window = DEFAULT_WINDOW_SIZE - n
    sent: list[int] = []

    async def record(increment: int, skip_lock: bool = False) -> None:
        sent.append(increment)

    stream.send_window_update = record  # type: ignore[method-assign]
    return stream, sent


async def credit(method: Credit, n: int) -> list[int]:
    stream, sent = stream_after_reading(n)
    await method(stream, bytes_read=n)
    return sent


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(yamux_window)


async def test_defect_stock_libp2p_sends_an_update_for_a_one_byte_read() -> None:
    # If this fails, upstream stopped crediting every read: drop the workaround.
    assert await credit(yamux_window.ORIGINAL, 1) != []


async def test_small_reads_send_no_update() -> None:
    for n in (1, 10, DEFAULT_WINDOW_SIZE // 2 - 1):
        assert await credit(yamux_window.grant_credit_when_half_consumed, n) == []


async def test_half_the_window_read_is_credited_in_one_update() -> None:
    sent = await credit(yamux_window.grant_credit_when_half_consumed, DEFAULT_WINDOW_SIZE // 2)
    assert len(sent) == 1 and sent[0] >= DEFAULT_WINDOW_SIZE // 2


def test_install_is_idempotent_and_replaces_the_method() -> None:
    compat.install()
    compat.install()
    yamux_window.install()
    assert (YamuxStream._auto_tune_and_send_window_update
            is yamux_window.grant_credit_when_half_consumed)

"""The governance sync server's door (attack 53): a peer's syncs are rationed, a few are
served at once, and unstaked authors' messages go out within one byte budget for all
askers, while staked authors' messages always do."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import trio

from p2pinfer.gov.sync_door import (
    SERVE_S,
    SYNC_BURST,
    SYNC_EVERY_S,
    SYNCS_AT_ONCE,
    UNSTAKED_BURST_BYTES,
    UNSTAKED_BYTES_PER_S,
    SyncDoor,
    serve_sync,
)
from tests.support.clocks import SecondsClock


def test_a_peer_syncs_its_burst_then_once_per_interval() -> None:
    clock = SecondsClock()
    door = SyncDoor(clock)
    assert [door.admit("mallory") for _ in range(SYNC_BURST)] == [""] * SYNC_BURST
    assert door.admit("mallory").startswith("over")
    assert door.admit("carol") == ""  # another peer has its own
    clock.now += SYNC_EVERY_S
    assert door.admit("mallory") == "" and door.admit("mallory") != ""
    assert sum(door.refused.values()) == 2


def test_only_so_many_syncs_are_served_at_once() -> None:
    door = SyncDoor(SecondsClock())
    with ExitStack() as serving:
        for _ in range(SYNCS_AT_ONCE):
            serving.enter_context(door.serving_one())
        assert "being served" in door.admit("peer")
    assert door.serving == 0 and door.admit("peer") == ""


def test_unstaked_messages_share_one_byte_budget_staked_ones_always_go() -> None:
    clock = SecondsClock()
    door = SyncDoor(clock)
    vote = b"v" * 1000
    tries = 2 * UNSTAKED_BURST_BYTES // 1000
    sent = sum(door.may_send(vote, staked=False) for _ in range(tries))
    assert sent == UNSTAKED_BURST_BYTES // 1000 and door.withheld == tries - sent
    assert all(door.may_send(vote, staked=True) for _ in range(100))
    clock.now += 1.0
    refilled = sum(door.may_send(vote, staked=False) for _ in range(1000))
    assert refilled in (UNSTAKED_BYTES_PER_S // 1000, UNSTAKED_BYTES_PER_S // 1000 + 1)


def test_one_address_is_served_two_syncs_at_once() -> None:
    door = SyncDoor(SecondsClock())
    with door.serving_one("192.0.2.7"), door.serving_one("192.0.2.7"):
        assert "to 192.0.2.7" in door.admit("another key", "192.0.2.7")
        assert door.admit("a third key", "198.51.100.1") == ""
    assert door.admit("another key", "192.0.2.7") == ""


class FakeSlowReaderStream:
    """A sync asker that takes a second to read each frame (a fake: no network)."""

    remote_peer_id = "slow reader"
    remote_host = "192.0.2.9"

    def __init__(self) -> None:
        self.frames = 0

    async def write_frame(self, payload: bytes) -> None:
        await trio.sleep(1.0)
        self.frames += 1


async def test_a_slow_reader_is_served_for_at_most_serve_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    door, stream = SyncDoor(SecondsClock()), FakeSlowReaderStream()

    async def rows() -> list[tuple[bytes, bool]]:
        return [(b"m" * 100, True)] * 100

    started = trio.current_time()
    await serve_sync(stream, door, rows)  # type: ignore[arg-type]
    assert trio.current_time() - started == pytest.approx(SERVE_S)
    assert stream.frames == int(SERVE_S) - 1 or stream.frames == int(SERVE_S)
    assert door.serving == 0

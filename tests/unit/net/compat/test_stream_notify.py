"""Stream notifications: stock py-libp2p 0.8.1 starts a task per notifee for every stream
opened or closed, though every notifee it registers ignores streams; with the workaround
nothing is started for them, and any other notifee is still called."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import trio
import trio.lowlevel
from libp2p.host.basic_host import _IdentifyNotifee
from libp2p.network.tag_store import TagStoreNotifee
from libp2p.pubsub.pubsub_notifee import PubsubNotifee

from p2pinfer.net import compat
from p2pinfer.net.compat import stream_notify
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p


class TaskCounter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.spawned = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1


class StreamWatcher:
    """A notifee that does care about streams (as one of ours might one day)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    async def opened_stream(self, network: Any, stream: Any) -> None:
        self.seen.append(("opened", stream))

    async def closed_stream(self, network: Any, stream: Any) -> None:
        self.seen.append(("closed", stream))

    async def connected(self, network: Any, conn: Any) -> None:
        self.seen.append(("connected", conn))


def libp2ps_notifees() -> list[Any]:
    """The notifees a py-libp2p host with pubsub registers (only their type matters)."""
    return [object.__new__(cls) for cls in (TagStoreNotifee, _IdentifyNotifee, PubsubNotifee)]


async def tasks_started(notify: Any, swarm: Any, method: str, arg: object) -> int:
    counter = TaskCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        await notify(swarm, method, arg)
    finally:
        trio.lowlevel.remove_instrument(counter)
    return counter.spawned


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(stream_notify)


async def test_defect_stock_libp2p_starts_a_task_per_notifee_for_each_stream() -> None:
    # If this fails, upstream no longer fans out stream events nobody handles: drop it.
    swarm = SimpleNamespace(notifees=libp2ps_notifees())
    assert await tasks_started(stream_notify.ORIGINAL, swarm, "opened_stream", "s") == 3


async def test_stream_events_libp2ps_notifees_ignore_start_nothing() -> None:
    swarm = SimpleNamespace(notifees=libp2ps_notifees())
    for event in ("opened_stream", "closed_stream"):
        assert await tasks_started(stream_notify.notify_unless_ignored, swarm, event, "s") == 0


async def test_a_notifee_that_watches_streams_still_hears_of_every_one() -> None:
    watcher = StreamWatcher()
    swarm = SimpleNamespace(notifees=[*libp2ps_notifees(), watcher])
    await stream_notify.notify_unless_ignored(swarm, "opened_stream", "s1")  # type: ignore[arg-type]
    await stream_notify.notify_unless_ignored(swarm, "closed_stream", "s1")  # type: ignore[arg-type]
    assert watcher.seen == [("opened", "s1"), ("closed", "s1")]


async def test_other_events_fan_out_as_before() -> None:
    watchers = [StreamWatcher(), StreamWatcher()]
    swarm = SimpleNamespace(notifees=watchers)
    started = await tasks_started(stream_notify.notify_unless_ignored, swarm, "connected", "c")
    assert started == 2 and all(w.seen == [("connected", "c")] for w in watchers)


def test_install_is_idempotent_and_replaces_the_method() -> None:
    from libp2p.network.swarm import Swarm

    compat.install()
    compat.install()
    assert Swarm._notify is stream_notify.notify_unless_ignored

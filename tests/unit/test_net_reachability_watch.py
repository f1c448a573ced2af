"""`ReachabilityWatch`: what the relay service, the relay client and the DHT's mode wait
on for AutoNAT's verdict to change (instead of each reading it on a timer)."""

from __future__ import annotations

import trio
import trio.testing

from p2pinfer.net.reachability import ReachabilityWatch


async def test_a_waiter_wakes_when_the_verdict_changes_and_not_before() -> None:
    watch = ReachabilityWatch()
    woke: list[str] = []

    async def wait(name: str) -> None:
        woke.append(f"{name}:{await watch.changed_from('unknown')}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "relay")
        nursery.start_soon(wait, "dht")
        await trio.testing.wait_all_tasks_blocked()
        watch.set("unknown")  # the same verdict again: nobody wakes
        await trio.testing.wait_all_tasks_blocked()
        assert woke == []
        watch.set("private")
    assert sorted(woke) == ["dht:private", "relay:private"]
    assert watch.status == "private"


async def test_a_waiter_that_saw_an_old_verdict_returns_at_once() -> None:
    watch = ReachabilityWatch("public")
    with trio.fail_after(1):
        assert await watch.changed_from("unknown") == "public"


async def test_a_change_and_back_before_the_waiter_runs_is_not_lost_twice() -> None:
    """private -> public -> private while a waiter sleeps: it wakes (the event fired) and,
    finding the verdict it saw, waits on; the next change wakes it for good."""
    watch = ReachabilityWatch("private")
    got: list[str] = []

    async def wait() -> None:
        got.append(await watch.changed_from("private"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        watch.set("public")
        watch.set("private")
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        watch.set("public")
    assert got == ["public"]

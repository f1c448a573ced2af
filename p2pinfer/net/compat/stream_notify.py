"""Stream notifications: a nursery of no-op tasks for every stream opened or closed.

**Defect (py-libp2p 0.8.1).** `libp2p/network/swarm.py`, `Swarm._notify` (called by
`notify_opened_stream` and `notify_closed_stream` for every stream, inbound and
outbound) opens a nursery and starts one task per registered notifee, then waits for
them all. For streams every notifee libp2p registers does nothing: `PubsubNotifee`
(a checkpoint), `_IdentifyNotifee` and `TagStoreNotifee` (`return None` / a docstring).
So each stream paid two nurseries of three tasks and two extra trips through trio's
scheduler on each side, and a job's first bytes waited for them on the provider: its
request sits behind `SwarmConn._add_stream` (0.2-0.4 ms per stream in a probe on this
2-core VM, docs/gateway.md "Speed").

**What we do.** `install()` wraps `Swarm._notify`: for `opened_stream` and
`closed_stream`, when every registered notifee's method is one of those known no-ops,
it returns at once; any other notifee (one registered later, by us or by libp2p)
gets libp2p's own fan-out, as does every other notification (connected, disconnected,
listen).

**To drop it.** When upstream calls notifees inline, or skips the nursery when no
notifee cares about streams, delete this module and its `install` call; the guard
test (tests/unit/net/compat/test_stream_notify.py) then fails on its defect check.

**Upstream.** Not reported. Drafted patch (stream events called inline, no nursery):
docs/upstream/swarm-stream-notify-inline.diff.
"""

from __future__ import annotations

from typing import Any

from libp2p.host.basic_host import _IdentifyNotifee
from libp2p.network.swarm import Swarm
from libp2p.network.tag_store import TagStoreNotifee
from libp2p.pubsub.pubsub_notifee import PubsubNotifee

PATCHED = {
    "libp2p.network.swarm:Swarm._notify": "36afe611751a4cb8",
    "libp2p.pubsub.pubsub_notifee:PubsubNotifee.opened_stream": "b0e08b02576cb4d4",
    "libp2p.pubsub.pubsub_notifee:PubsubNotifee.closed_stream": "21a58180cbef9594",
    "libp2p.host.basic_host:_IdentifyNotifee.opened_stream": "7202a6f0b3faf393",
    "libp2p.host.basic_host:_IdentifyNotifee.closed_stream": "2ca1ed587438b50a",
    "libp2p.network.tag_store:TagStoreNotifee.opened_stream": "a2478e3d7b583991",
    "libp2p.network.tag_store:TagStoreNotifee.closed_stream": "8645d788a5abcd8b",
}
"""libp2p source this module replaces or relies on, with its digest at 0.8.1 (`_canary`)."""

ORIGINAL = Swarm._notify
ORIGINALS = {"libp2p.network.swarm:Swarm._notify": ORIGINAL}
UPSTREAM = None
DRAFT = "docs/upstream/swarm-stream-notify-inline.diff"

STREAM_EVENTS = ("opened_stream", "closed_stream")
NO_OPS: frozenset[Any] = frozenset(
    getattr(cls, event)
    for cls in (PubsubNotifee, _IdentifyNotifee, TagStoreNotifee)
    for event in STREAM_EVENTS
)
"""The stream callbacks of the notifees libp2p registers, none of which does anything."""


def nobody_cares(swarm: Swarm, method: str) -> bool:
    """Whether `method` is a stream notification every notifee of `swarm` ignores."""
    return method in STREAM_EVENTS and all(
        getattr(type(notifee), method, None) in NO_OPS for notifee in swarm.notifees)


async def notify_unless_ignored(self: Swarm, method: str, *args: Any) -> None:
    """libp2p's fan-out, skipped for a stream event no notifee acts on."""
    if nobody_cares(self, method):
        return
    await ORIGINAL(self, method, *args)


def install() -> None:
    """Wrap `Swarm._notify` (idempotent)."""
    Swarm._notify = notify_unless_ignored  # type: ignore[method-assign]

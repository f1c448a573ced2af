"""A target node's GossipSub router, joined to a topic, with a peer (the attacker) connected
and what the router sends recorded: the guard tests of the GossipSub control workarounds
(ihave_bounds, graft_prune_bounds) drive its handlers directly with made-up messages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host

T = TypeVar("T")


@asynccontextmanager
async def target_router(
    topic: str, record: Callable[[rpc_pb2.ControlMessage], Iterable[T]],
) -> AsyncIterator[tuple[Any, ID, list[T]]]:
    """(the target's GossipSub, joined to `topic`; the attacker's peer id; `record` of
    each control message the target sends from here on, in order)."""
    async with run_host(NetConfig(NodeIdentity.generate())) as target, \
            run_host(NetConfig(NodeIdentity.generate())) as attacker:
        await attacker.connect(next(a for a in target.addrs() if "/tcp/" in a))
        await target._pubsub.subscribe(topic)
        router = target._pubsub.router
        sent: list[T] = []
        emit = router.emit_control_message

        async def recording(control: rpc_pb2.ControlMessage, peer: ID) -> None:
            sent.extend(record(control))
            await emit(control, peer)

        router.emit_control_message = recording
        yield router, ID.from_base58(attacker.peer_id), sent

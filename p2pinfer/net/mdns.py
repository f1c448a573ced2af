"""Bridge py-libp2p's mDNS discoveries into our nursery, where they are dialled.

py-libp2p reports an mDNS peer by calling plain functions registered on a
process-wide singleton, from zeroconf's own thread. The handler here only
hands the PeerInfo to the trio loop (thread-safe `run_sync_soon`); dialling
happens in a task of the host's nursery. Several hosts in one process each
see every discovery and skip their own PeerID.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import trio
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.peer.peerinfo import PeerInfo

log = logging.getLogger(__name__)

_QUEUE = 64  # discoveries beyond this while dialling are dropped; mDNS announces again


class MdnsBridge:
    """Receives mDNS discoveries for one host (the one whose PeerID is `local_peer_id`)."""

    def __init__(self, local_peer_id: str) -> None:
        self._local_peer_id = local_peer_id

    async def run(self, connect: Callable[[PeerInfo], Awaitable[None]]) -> None:
        """Dial each discovered peer with `connect` until cancelled."""
        send, receive = trio.open_memory_channel[PeerInfo](_QUEUE)
        token = trio.lowlevel.current_trio_token()

        def push(info: PeerInfo) -> None:
            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                send.send_nowait(info)

        def on_discovered(info: PeerInfo) -> None:  # zeroconf's thread
            if info.peer_id.to_base58() == self._local_peer_id:
                return
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(push, info)

        peerDiscovery.register_peer_discovered_handler(on_discovered)
        try:
            async with receive:
                async for info in receive:
                    log.info("mdns discovered peer=%s", info.peer_id)
                    await connect(info)
        finally:
            peerDiscovery.unregister_peer_discovered_handler(on_discovered)
            send.close()

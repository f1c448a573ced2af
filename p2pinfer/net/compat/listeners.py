"""Host: a failed bind is only logged, and listeners outlive `host.run`.

**Defect (py-libp2p 0.8.1).** `libp2p/host/basic_host.py`, `BasicHost.run`: it awaits
`Swarm.listen` (`libp2p/network/swarm.py`), which catches the bind error
(`OSError`/`OpenConnectionError`), logs it at DEBUG and returns False, and ignores that
result: a node whose port is taken starts, and listens nowhere. And leaving `host.run`
does not close the listeners: the TCP listener serves from a trio *system* task
(`TCPListener.listen`, `trio.lowlevel.spawn_system_task`) that only `listener.close()`
stops (reached through `host.close()` -> `Swarm.close`), so the port keeps accepting and
completing handshakes for a host that is gone.

**What we do.** `listening(host, addrs)` wraps `host.run`: it checks that every address
was bound (`host.get_transport_addrs()`) and raises NetworkError if not, and on the way
out always calls `host.close()` (shielded, bounded by `CLOSE_TIMEOUT_S`).

**To drop it.** When `BasicHost.run` raises on a failed listen and closes its
listeners on exit, replace `listening` by `host.run` (the guard tests keep checking both).

**Upstream.** libp2p/py-libp2p#1308 (https://github.com/libp2p/py-libp2p/pull/1308)
gave listeners their own lifetime and made `Swarm.close` stop them, in 0.8.1 already;
`run` neither raises nor closes. Drafted patch: docs/upstream/host-run-listeners.diff.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio
from libp2p.abc import IHost
from multiaddr import Multiaddr

from p2pinfer.errors import NetworkError
from p2pinfer.net.compat.cancelled_close import close_sockets, open_connections

PATCHED = {
    "libp2p.host.basic_host:BasicHost.run": "49d086030a367765",
    "libp2p.network.swarm:Swarm.listen": "c23f133cd5acc0a9",
}
UPSTREAM = "https://github.com/libp2p/py-libp2p/pull/1308"
DRAFT = "docs/upstream/host-run-listeners.diff"

CLOSE_TIMEOUT_S = 5.0


async def close_host(host: IHost) -> None:
    """Close listeners and connections (idempotent), even while being cancelled; and the
    TCP sockets of connections whose own close was cut short (`cancelled_close`)."""
    conns = open_connections(host)
    with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
        scope.shield = True
        await host.close()
    close_sockets(conns)


@asynccontextmanager
async def listening(
    host: IHost, listen: Sequence[Multiaddr], texts: Sequence[str]
) -> AsyncIterator[None]:
    """`host.run(listen)`, then `host.close()`; a bind failure becomes one NetworkError
    naming `texts` (the addresses as the user wrote them)."""
    failure = f"cannot listen on {', '.join(texts)}: address in use or unavailable"
    entered = bound = False
    try:
        async with host.run(listen_addrs=listen):
            entered = True
            bound = len(host.get_transport_addrs()) == len(listen)
            if bound:
                yield
    except Exception as exc:
        if entered:
            raise
        # A libp2p that reports the failed bind itself (the drafted patch) raises it here.
        raise NetworkError(failure) from exc
    finally:
        await close_host(host)
    if not bound:  # raised out here, not inside host.run's nurseries (no exception group)
        raise NetworkError(failure)

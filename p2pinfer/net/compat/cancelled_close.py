"""Connections: a close cut short by cancellation leaves the TCP socket open for good.

**Defect (py-libp2p 0.8.1).** `libp2p/network/connection/swarm_connection.py`,
`SwarmConn.close`: it sets `event_closed` first, then awaits `muxed_conn.close()`;
`Yamux.close` (`libp2p/stream_muxer/yamux/yamux.py`) awaits its stream lock and a
GO_AWAY write before it closes the secured connection, and only `SwarmConn._cleanup`,
after that, removes the connection from the swarm. A close that is cancelled at any of
these awaits stops there, and every later close, `Swarm.close`'s included, returns at
once because `event_closed` is set. The TCP socket stays open, and the swarm keeps
listing the connection, until the garbage collector happens to collect its suspended
coroutines (the "unclosed socket" ResourceWarnings the test suite showed now and then).
A node bounds its own closes (`NetHost._drop_connection` gives a dead connection 2 s),
so a peer that lets a close hang (it stops reading, so the GO_AWAY write waits on a full
send buffer, or on the write lock a write stuck there holds) had every such close leak a
file descriptor: enough of them, and the node can open neither sockets nor its SQLite
files.

**What we do.** `install()` wraps `SwarmConn.close`: when libp2p's close does not
finish (cancelled, or raising), the connection's TCP socket is closed at once and the
connection leaves the swarm's table (`Swarm.remove_conn`); both are synchronous, so no
cancellation can cut them short. A connection that shares its Yamux session with
another (`_shared_muxed_conn`, libp2p's dial-race duplicates) leaves the table but keeps
the socket, which is the other's. Its streams give back their places in the resource
manager and the swarm's stream semaphore at once (what `notify_closed_stream` does for
each stream the cleanup resets): otherwise each such close kept them for good (seen:
pubsub's outbound stream, which nothing else closes), and with the manager's 10,000
used up the node refused every new stream, a job's too, and a `new_stream` waited on
the semaphore forever. The notifees are then told of the disconnect in a task of
its own (bounded by NOTIFY_S), as the cleanup would have: libp2p's tag store, identify
records and pubsub kept each such peer otherwise (one entry more per fresh key).
Its streams are still not reset one by one (their reads fail with the socket).
`close_host` (`compat/listeners.py`) also closes, after `host.close()`, any socket of
the host's connections still open (`open_connections`/`close_sockets`), for a close
cut short before this wrapper ran.

**To drop it.** When `SwarmConn.close` closes its connection even when cancelled (or
sets `event_closed` only once it has), remove `install()` and the two calls from
`close_host`.

**Upstream.** Not reported; no draft yet.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.network.connection.swarm_connection import SwarmConn
from libp2p.rcmgr import Direction

log = logging.getLogger(__name__)

PATCHED = {
    "libp2p.network.connection.swarm_connection:SwarmConn.close": "442c6259a8e9e45e",
    "libp2p.stream_muxer.yamux.yamux:Yamux.close": "d80b27e69ccd1b89",
    "libp2p.network.connection.swarm_connection:SwarmConn._cleanup": "84470a285af6c287",
    "libp2p.network.swarm:Swarm.remove_conn": "0a3e93157b1a04c3",
    "libp2p.network.connection.swarm_connection:SwarmConn._notify_disconnected":
        "ede42126267786c5",
    # What `release_streams` does in its place, without the await:
    "libp2p.network.swarm:Swarm.notify_closed_stream": "a34ffe3b8041e823",
    # The path from a connection down to its socket (`tcp_socket`):
    "libp2p.security.noise.io:BaseNoiseMsgReadWriter.__init__": "e6b51bace4fa3dda",
    "libp2p.io.msgio:BaseMsgReadWriter.__init__": "56dc1b1a4a218944",
    "libp2p.io.trio:TrioTCPStream.__init__": "4222fa993846189e",
    "libp2p.network.connection.raw_connection:RawConnection.__init__": "89beb8adac60eaa6",
}
ORIGINAL = SwarmConn.close
ORIGINALS = {"libp2p.network.connection.swarm_connection:SwarmConn.close": ORIGINAL}
UPSTREAM = None

#: From a SwarmConn to its trio socket: Yamux, SecureSession, the Noise reader/writer,
#: its packet reader/writer, RawConnection, TrioTCPStream, trio's SocketStream.
_SOCKET_PATH = ("muxed_conn", "secured_conn", "conn", "read_writer", "read_write_closer",
                "stream", "stream", "socket")


def open_connections(host: IHost) -> list[Any]:
    """The host's connections, each peer's (what `close_sockets` checks afterwards)."""
    connections = getattr(host.get_network(), "connections", {})
    return [conn for conns in connections.values() for conn in conns]


def close_sockets(conns: list[Any]) -> int:
    """Close the TCP socket of each of `conns` still open; how many were."""
    return sum(_close_socket(conn) for conn in conns)


def _close_socket(conn: Any) -> bool:
    """Close the TCP socket under `conn` if it is still open; whether it was."""
    sock = tcp_socket(conn)
    if sock is None or sock.fileno() == -1:
        return False
    sock.close()
    return True


def tcp_socket(conn: Any) -> Any | None:
    """The trio socket under `conn`, or None (a relayed or other non-TCP connection)."""
    obj = conn
    for name in _SOCKET_PATH:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj if hasattr(obj, "fileno") and hasattr(obj, "close") else None


def abandon(conn: Any) -> None:
    """What a cut-short close of `conn` leaves: its TCP socket closed (unless another
    connection shares it), `conn` out of its swarm's table and its streams' resource
    reservations given back."""
    if not getattr(conn, "_shared_muxed_conn", False):
        _close_socket(conn)
    try:
        conn.swarm.remove_conn(conn)
        release_streams(conn)
        trio.lowlevel.spawn_system_task(tell_notifees, conn, name="cut-short close notify")
    except Exception as exc:  # the table is libp2p's; a failure here must not mask the close's
        log.debug("removing a cut-short connection failed error=%r", exc)


NOTIFY_S = 5.0
"""How long the notifees of a cut-short close get to hear of the disconnect."""


async def tell_notifees(conn: Any) -> None:
    """The disconnect the cut-short close of `conn` did not announce (a task of its own:
    the close's caller was cancelled). Notifees handle a second announcement (the
    close may have been cut short inside the first): each forgets a peer only once."""
    try:
        with trio.move_on_after(NOTIFY_S):
            await conn._notify_disconnected()
    except Exception as exc:  # libp2p's notifees; a system task must not raise
        log.debug("telling the notifees of a cut-short close failed error=%r", exc)


def release_streams(conn: Any) -> int:
    """Give back the resource manager's and the stream semaphore's place of each stream of
    `conn` not released yet, as `Swarm.notify_closed_stream` does (synchronously: no
    cancellation can cut it short; the notifees' `closed_stream` is not called). Each
    stream is released once (libp2p's own `_resource_released` mark). How many were."""
    swarm = conn.swarm
    manager = getattr(swarm, "_resource_manager", None)
    semaphore = getattr(swarm, "_stream_semaphore", None)
    released = 0
    for stream in list(getattr(conn, "streams", ())):
        direction = getattr(stream, "_direction", Direction.UNKNOWN)
        if getattr(stream, "_resource_released", False) or direction == Direction.UNKNOWN:
            continue
        stream._resource_released = True
        released += 1
        if manager is not None:
            manager.release_stream(str(stream.muxed_conn.peer_id), direction)
        if semaphore is not None:
            semaphore.release()
    return released


async def close_even_if_cut_short(self: SwarmConn) -> None:
    """libp2p's `SwarmConn.close`; if it does not finish, `abandon` the connection."""
    try:
        await ORIGINAL(self)
    except BaseException:
        abandon(self)
        raise


def install() -> None:
    """Wrap `SwarmConn.close` (idempotent)."""
    SwarmConn.close = close_even_if_cut_short  # type: ignore[method-assign]

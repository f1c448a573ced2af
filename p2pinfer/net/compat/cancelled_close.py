"""Connections: a close cut short by cancellation leaves the TCP socket open for good.

**Defect (py-libp2p 0.8.1).** `libp2p/network/connection/swarm_connection.py`,
`SwarmConn.close`: it sets `event_closed` first, then awaits `muxed_conn.close()`;
`Yamux.close` (`libp2p/stream_muxer/yamux/yamux.py`) awaits its stream lock and a
GO_AWAY write before it closes the secured connection. A close that is cancelled at
either await (a host torn down inside a cancelled scope: its connection's reader task
closes the connection while being cancelled) stops there, and every later close,
`Swarm.close`'s included, returns at once because `event_closed` is set. The TCP socket
stays open until the garbage collector happens to collect the connection's suspended
coroutines (the "unclosed socket" ResourceWarnings the test suite showed now and then).

**What we do.** `open_connections(host)` lists the host's connections before it is
closed; `close_sockets(conns)`, after `host.close()`, closes the TCP socket of each one
still open. Closing a socket is synchronous, so no cancellation can cut it short.
`close_host` (`compat/listeners.py`) does both.

**To drop it.** When `SwarmConn.close` closes its connection even when cancelled (or
sets `event_closed` only once it has), remove the two calls from `close_host`.

**Upstream.** Not reported; no draft yet.
"""

from __future__ import annotations

from typing import Any

from libp2p.abc import IHost

PATCHED = {
    "libp2p.network.connection.swarm_connection:SwarmConn.close": "442c6259a8e9e45e",
    "libp2p.stream_muxer.yamux.yamux:Yamux.close": "d80b27e69ccd1b89",
    # The path from a connection down to its socket (`_tcp_socket`):
    "libp2p.security.noise.io:BaseNoiseMsgReadWriter.__init__": "e6b51bace4fa3dda",
    "libp2p.io.msgio:BaseMsgReadWriter.__init__": "56dc1b1a4a218944",
    "libp2p.io.trio:TrioTCPStream.__init__": "4222fa993846189e",
    "libp2p.network.connection.raw_connection:RawConnection.__init__": "89beb8adac60eaa6",
}
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
    closed = 0
    for conn in conns:
        sock = _tcp_socket(conn)
        if sock is not None and sock.fileno() != -1:
            sock.close()
            closed += 1
    return closed


def _tcp_socket(conn: Any) -> Any | None:
    """The trio socket under `conn`, or None (a relayed or other non-TCP connection)."""
    obj = conn
    for name in _SOCKET_PATH:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj if hasattr(obj, "fileno") and hasattr(obj, "close") else None

"""Workarounds for py-libp2p 0.8.1 defects: one module per defect.

Each module's docstring says what libp2p does wrong (file and function), what we do,
how to drop the workaround, and the upstream issue or PR, or a drafted patch under
docs/upstream/. Each has `PATCHED` (the libp2p functions it replaces or relies on, with
a digest of their 0.8.1 source) and guard tests in tests/unit/net/compat/ that fail when
an upgrade changes any of them. The table is in docs/network.md ("py-libp2p
workarounds").

| module | defect |
|---|---|
| `yamux_window` | a Yamux WINDOW_UPDATE after every read |
| `sender_records` | the sender's signed peer record verified on every pubsub RPC |
| `prune_backoff` | GossipSub prunes without recording a backoff |
| `task_tree` | the service manager walks its task tree for every task started |
| `pubsub_decode` | a malformed pubsub RPC crashes the host |
| `listeners` | `host.run` swallows bind errors and leaves listeners running |
| `multistream` | lock-step multistream-select (2 RTT before a request leaves) |
| `kad_protocol` | KadDHT ignores `protocol_prefix`: always `/ipfs/kad/1.0.0` |
| `kad_server_peers` | any peer that queries the DHT joins the routing table, client or not |
| `relay_v2` | relay slots for named peers, kept after disconnect; idle circuits live on |
| `stream_notify` | a nursery of no-op notifee tasks for every stream opened or closed |
| `yamux_open` | a new stream's SYN, and its ACK, each in a Noise message of its own |
| `multistream_listener` | the listener's header and answer in two writes |
| `dial_addrs` | a dial tries only the first TCP address anyone planted |
| `cancelled_close` | a connection close cut short leaves its socket open and it listed |
| `cancelled_write` | a write cancelled after Noise encrypted it kills the connection |
| `quick_locks` | every stream layer's free lock a pass through the scheduler |
| `inbound_shares` | one address can take every inbound connection slot |
| `inbound_streams` | one peer's streams can take the node's whole stream budget |
| `provider_records` | a DHT record keeps every address sent (4 MiB messages); no bound |
| `iwant_bounds` | an IWANT is answered once per id listed, duplicates included |
| `ihave_bounds` | an IHAVE for any topic, with any number of ids, is asked for in full |
| `peerstore_bounds` | a peer's addresses (quadratic) and protocols kept however many |
| `yamux_recv_window` | data past a stream's receive window is buffered anyway |
| `kad_requests` | a DHT stream's requests answered however many a peer sends |
| `publish_rate` | a task for every message a peer pushes, however many |
| `graft_prune_bounds` | GRAFTs and PRUNEs for any topic name, each answered or kept |
| `yamux_ping` | every Yamux PING answered, however many |

`install()` applies the process-wide ones (class and module attributes); `run_host`
calls it before building a host. The others are used where they apply: `RatedPubsub`
(a `RobustPubsub`), `listening` and `memoize_task_parents` by `run_host`,
`open_pipelined` and `lazy_syn` by `NetHost.open_stream`, `build_dht` (a
`RationedKadDHT`) by `run_host`, `BoundedCircuitV2` as `RelayHop`'s base, `connect` by
`NetHost` and `RelayClient` for their dials.
"""

from __future__ import annotations

from p2pinfer.net.compat import (
    cancelled_close,
    cancelled_write,
    graft_prune_bounds,
    ihave_bounds,
    inbound_shares,
    inbound_streams,
    iwant_bounds,
    multistream_listener,
    peerstore_bounds,
    provider_records,
    prune_backoff,
    quick_locks,
    sender_records,
    stream_notify,
    yamux_open,
    yamux_ping,
    yamux_recv_window,
    yamux_window,
)

_installed = False


def install() -> None:
    """Apply the process-wide workarounds (idempotent)."""
    global _installed
    if _installed:
        return
    yamux_window.install()
    sender_records.install()
    prune_backoff.install()
    stream_notify.install()
    yamux_open.install()
    yamux_ping.install()  # wraps yamux_open's writer
    multistream_listener.install()
    cancelled_close.install()
    cancelled_write.install()
    quick_locks.install()
    inbound_shares.install()
    inbound_streams.install()
    provider_records.install()
    iwant_bounds.install()
    ihave_bounds.install()
    graft_prune_bounds.install()
    peerstore_bounds.install()
    yamux_recv_window.install()
    _installed = True

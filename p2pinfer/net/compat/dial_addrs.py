"""Dialling a peer: the address it gave itself is dialled, whatever others planted.

**Defects (py-libp2p 0.8.1).** `libp2p/network/swarm.py`, `Swarm`:

- `dial_peer` dials at most one address per transport class (`MAX_ADDRS_PER_PEER`,
  "smart address selection"): the first TCP address its peerstore holds for the peer,
  and it drops every loopback address once any other is known. The peerstore is
  filled by others: py-libp2p's DHT stores the addresses a FIND_NODE answer gives for
  each peer it names, as they came (`kad_dht/peer_routing.py`), so a peer answering
  lookups can put an address that never answers ahead of a provider's own, and every
  dial to the provider went there and timed out
  (tests/integration/test_net_planted_addrs.py).
- `_dial_with_retry`, on a "Peer ID mismatch" (the address answered with another
  key: an attacker's node, or a planted address of its own), clears every address of
  the peer from the peerstore, its real ones too.

**What we do.** `connect(network, pid, preferred)` dials `preferred` (the peer's own
word: its signed advert, the address an operator or a circuit address names) first,
then what the peerstore holds, at most `MAX_DIAL_ADDRS`, each started `STAGGER_S`
after the one before it (at once when that one fails: happy eyeballs), through
`Swarm._dial_addr_single_attempt` (one attempt, nothing cleared). The first
connection wins; the other dials are cancelled. A peer none answers for is put in the
swarm's negative cache, as `dial_peer` does (py-libp2p's own dials, DHT walks, then
leave it alone for 60 s). Noise proves the peer id on each, so
a planted address costs a try, never an impersonation. Addresses the connection gate
refuses (`deny_ips`), circuit addresses (`RelayClient.dial` dials those) and those
no transport of ours can dial are skipped.

**To drop it.** When upstream dials the peer's addresses beyond one per class (or in
an order the caller gives) and no longer clears addresses on a mismatch, use
`host.connect` again (the canary for the functions in `PATCHED` fails first on any
upgrade).

**Upstream.** No issue found; not drafted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio
from libp2p.abc import IHost, INetConn, INetworkService
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from p2pinfer.errors import PeerUnreachableError
from p2pinfer.net.relay_rules import is_circuit_addr

log = logging.getLogger(__name__)

PATCHED = {
    "libp2p.network.swarm:Swarm.dial_peer": "da3b538ccaeaeaa6",
    "libp2p.network.swarm:Swarm._dial_with_retry": "bd2025f00c84dddb",
    "libp2p.network.swarm:Swarm._dial_addr_single_attempt": "54e3f8e1ea5b966e",
    "libp2p.network.swarm:_NegativePeerCache": "19e9601a2fb0568c",
}
UPSTREAM = None

MAX_DIAL_ADDRS = 8  # of one peer's addresses, per connect
STAGGER_S = 0.25  # between one dial's start and the next (py-libp2p's happy eyeballs)
PEER_INFO_TTL_S = 600  # as BasicHost.connect keeps a PeerInfo's addresses


async def connect(network: INetworkService, pid: ID, preferred: Sequence[Multiaddr] = (),
                  ) -> INetConn:
    """A connection to `pid`: the one held, else the first a dial to one of its
    addresses gives (`preferred` first, then the peerstore's). PeerUnreachableError when
    none answers as `pid` (the caller bounds the time)."""
    # py-libp2p's map of dials in flight: its own dials (`dial_peer`: DHT walks, a stream
    # to an unconnected peer) wait for ours and ours for them, so no two race to one peer.
    in_flight: dict[ID, trio.Event] = network._ongoing_dials  # type: ignore[attr-defined]
    while True:
        held = [c for c in network.get_connections(pid) if not c.is_closed]
        if held:
            return held[0]
        if pid not in in_flight:
            break
        await in_flight[pid].wait()  # another task's dial to it: its connection serves
    in_flight[pid] = done = trio.Event()
    try:
        return await _dial(network, pid, preferred)
    finally:
        if in_flight.get(pid) is done:
            del in_flight[pid]
        done.set()


async def _dial(network: INetworkService, pid: ID, preferred: Sequence[Multiaddr],
                ) -> INetConn:
    try:
        stored = list(network.peerstore.addrs(pid))
    except Exception:  # nothing stored for it
        stored = []
    candidates = await dialable(network, list(preferred) + stored)
    if not candidates:
        raise PeerUnreachableError(f"no address known to dial {pid}")
    won: list[INetConn] = []
    failures: list[str] = []

    async def one(addr: Multiaddr, failed: trio.Event) -> None:
        try:
            conn = await network._dial_addr_single_attempt(addr, pid)  # type: ignore[attr-defined]
        except Exception as exc:
            failures.append(f"{addr}: {exc}")
            failed.set()
            return
        if won:  # another dial won first: one connection per peer
            await conn.close()
            return
        won.append(conn)
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for addr in candidates:
            failed = trio.Event()
            nursery.start_soon(one, addr, failed)
            with trio.move_on_after(STAGGER_S):
                await failed.wait()
    cache = network._negative_peer_cache  # type: ignore[attr-defined]
    if won:
        cache.evict(str(pid))
        return won[0]
    # As dial_peer does: py-libp2p's own dials (DHT walks) skip the peer for 60 s, so a
    # peer behind NAT is not knocked on again from this node's address meanwhile.
    cache.mark_failed(str(pid))
    log.debug("dial failed peer=%s tried=%s", pid, failures)
    raise PeerUnreachableError(f"cannot reach {pid} at {len(candidates)} address(es): "
                               + "; ".join(failures[:3]))


async def connect_info(host: IHost, info: PeerInfo) -> INetConn:
    """`host.connect(info)` (its addresses kept in the peerstore for 10 min, as py-libp2p
    does) through `connect`: `info.addrs` dialled first."""
    if info.addrs:
        host.get_peerstore().add_addrs(info.peer_id, info.addrs, PEER_INFO_TTL_S)
    return await connect(host.get_network(), info.peer_id, info.addrs)


async def dialable(network: INetworkService, addrs: Sequence[Multiaddr]) -> list[Multiaddr]:
    """`addrs` without duplicates, circuit addresses, those the connection gate refuses
    and those no transport can dial; at most MAX_DIAL_ADDRS, in order."""
    out: list[Multiaddr] = []
    seen: set[str] = set()
    gate = network.connection_gate
    transports = network.transport_manager  # type: ignore[attr-defined]
    for addr in addrs:
        text = str(addr)
        key = text.split("/p2p/")[0]  # with or without the peer's id: one address
        if key in seen or is_circuit_addr(text):
            continue
        seen.add(key)
        try:
            if not await gate.is_allowed(addr) or transports.transport_for_dialing(addr) is None:
                continue
        except Exception:  # an address no transport parses
            continue
        out.append(addr)
        if len(out) == MAX_DIAL_ADDRS:
            break
    return out

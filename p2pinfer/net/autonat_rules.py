"""AutoNAT's rules without I/O: whom a dial-back may reach, how often, and the verdict.

A node learns whether it is publicly reachable by asking peers to dial it back
(AutoNAT v1, libp2p/specs autonat/autonat-v1.md; p2pinfer/net/autonat.py does the
I/O). The server side is a way to make a node open connections on someone's
behalf, so it is bounded here:

- `dial_back_addrs`: only the requester's *observed* IP (the address its
  connection to us comes from) is dialled, at the TCP ports it names; an address
  naming another IP gets that IP replaced, never dialled. So a request can make
  us connect to no one but the requester's own address, and to at most
  `max_dial_addrs` ports of it.
- `DialBackLimiter`: at most `per_peer_per_min` dial-backs per requesting peer
  and `global_per_min` in all in any minute (go-libp2p's defaults: 3 and 30).
- `Verdicts`: the client's status is "public" once `confirmations` distinct
  voters dialled it back, "private" once that many failed to, else "unknown"; a
  voter is a server's address group (`voter`: an IPv4 address, an IPv6 /56), since
  keys are free and five of them on one address outvoted three honest servers
  (attack 45); and `MIN_AGREEING` voters whose dial-backs were seen arriving
  (`verified`: a fact, where a failure is a server's word) make it "public" whatever
  more voters claim (attack 77); refusals and errors are no verdict. Where fewer
  peers than that can answer at all (a small network: two public nodes),
  `MIN_AGREEING` who all agree will do:
  otherwise a node behind NAT there would never learn it, and never reserve a
  relay by itself.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Literal

import multiaddr

from p2pinfer.addresses import asker_group, normal_ip, tcp_endpoint
from p2pinfer.bounded import keep_latest

Reachability = Literal["public", "private", "unknown"]

WINDOW_MS = 60_000

MIN_AGREEING = 2
"""Fewest agreeing peers a verdict rests on, whatever the network's size (unless a node
is configured with fewer `confirmations`): never one peer's word alone."""


@dataclass(frozen=True)
class AutoNatConfig:
    """AutoNAT settings of a node (client and server)."""

    confirmations: int = 3  # distinct peers agreeing before the status changes
    servers_per_round: int = 5  # peers asked in one round
    interval_s: float = 300.0  # between rounds once the status is known
    unknown_interval_s: float = 30.0  # between rounds while it is unknown
    first_delay_s: float = 5.0  # after start, so connections and identify are up
    request_timeout_s: float = 30.0  # for one peer's answer (its dial-backs included)
    dial_timeout_s: float = 5.0  # for one dial-back
    max_dial_addrs: int = 4  # ports of the requester's IP dialled per request
    per_peer_per_min: int = 3
    global_per_min: int = 30
    max_concurrent_dials: int = 4
    serve: bool = True  # answer other peers' requests


def observed_ip(host: str) -> str | None:
    """`host` (a transport's remote address) as a normalised IP; None if it is not one."""
    return normal_ip(host)


def voter(server: str, host: str | None) -> str:
    """Whose vote the verdict of `server` (a peer id) counts as in `Verdicts`: the address
    group (an IPv4 address, an IPv6 /56) of `host`, the address our connection to it
    runs to, so any number of keys on one address vote once; the peer id when the
    address is unknown or loopback (a local testnet's nodes all share 127.0.0.1): the
    rule every per-address budget counts by (`addresses.asker_group`)."""
    return asker_group(server, host)


def dial_back_addrs(requested: list[bytes], ip: str, *, limit: int) -> list[str]:
    """The addresses a dial-back may try: `/ip4|ip6/<ip>/tcp/<port>` for each TCP port
    named in `requested` (binary multiaddrs from the request), in order, at most
    `limit`. Whatever IP a requested address names, only `ip` is dialled; addresses
    that are not IP+TCP (relayed, DNS, QUIC) and malformed ones are skipped."""
    family = "ip6" if ":" in ip else "ip4"
    out: list[str] = []
    for raw in requested:
        port = _tcp_port(raw)
        if port is None:
            continue
        addr = f"/{family}/{ip}/tcp/{port}"
        if addr not in out:
            out.append(addr)
        if len(out) >= limit:
            break
    return out


def _tcp_port(raw: bytes) -> int | None:
    """The TCP port of a plain `/ip4|ip6/X/tcp/P[/p2p/ID]` address; None for anything else."""
    try:
        text = str(multiaddr.Multiaddr(raw))
    except Exception:  # another peer's bytes: anything malformed is skipped
        return None
    endpoint = tcp_endpoint(text)
    return None if endpoint is None else endpoint[1]


class DialBackLimiter:
    """Sliding one-minute windows: at most `per_peer` dial-backs per requesting peer and
    `total` for all peers in any 60 s (a fixed window would allow twice as many across
    its boundary). Remembers at most `max_peers` requesters at once."""

    def __init__(self, *, per_peer: int, total: int, max_peers: int = 10_000) -> None:
        self._per_peer = per_peer
        self._total = total
        self._max_peers = max_peers
        self._all: deque[int] = deque()
        self._by_peer: OrderedDict[str, deque[int]] = OrderedDict()

    def admit(self, peer_id: str, now_ms: int) -> str | None:
        """None if `peer_id` may have a dial-back now (and count it), else why not."""
        self._forget_before(now_ms - WINDOW_MS)
        if len(self._all) >= self._total:
            return "too many dial-back requests; try again in a minute"
        times = self._by_peer.get(peer_id)
        if times is not None and len(times) >= self._per_peer:
            return "too many dial-back requests from this peer; try again in a minute"
        if times is None:
            if len(self._by_peer) >= self._max_peers:
                return "too many requesting peers; try again in a minute"
            times = self._by_peer[peer_id] = deque()
        times.append(now_ms)
        self._by_peer.move_to_end(peer_id)
        self._all.append(now_ms)
        return None

    def _forget_before(self, cutoff_ms: int) -> None:
        while self._all and self._all[0] <= cutoff_ms:
            self._all.popleft()
        # Least recently admitted first: stop at the first peer still in the window.
        while self._by_peer:
            peer, times = next(iter(self._by_peer.items()))
            while times and times[0] <= cutoff_ms:
                times.popleft()
            if times:
                break
            del self._by_peer[peer]


class Verdicts:
    """The latest verdict of each peer that answered, and the status they add up to."""

    def __init__(self, confirmations: int, max_kept: int = 64) -> None:
        self._need = max(1, confirmations)
        self._max_kept = max_kept
        self._by_server: OrderedDict[str, bool] = OrderedDict()
        self._verified: OrderedDict[str, None] = OrderedDict()  # voters: a dial-back came

    def record(self, server: str, reachable: bool, *, verified: bool = False) -> None:
        """`server` dialled us back (`reachable`) or tried and failed; `verified`: its
        dial-back was seen arriving here (a fact, where the rest are its word)."""
        keep_latest(self._by_server, server, reachable, self._max_kept)
        if reachable and verified:
            keep_latest(self._verified, server, None, self._max_kept)
        else:
            self._verified.pop(server, None)

    def verified(self) -> int:
        """Voters whose latest verdict was a dial-back seen arriving."""
        return sum(1 for voter in self._verified if self._by_server.get(voter))

    @property
    def status(self) -> Reachability:
        """public once `MIN_AGREEING` voters' dial-backs were seen arriving (or fewer
        `confirmations`), whatever the others claim: a failure is a server's word, and
        servers on more address groups than the honest ones outvoted them (attack 77).
        Else public / private with `confirmations` agreeing peers (more of them than of
        the other verdict), else unknown. While fewer peers than `confirmations` have
        answered, all of them agreeing will do, if they are at least `MIN_AGREEING`
        (read it once a round's answers are all in: mid-round, two first answers
        would pass for all)."""
        if self.verified() >= min(self._need, MIN_AGREEING):
            return "public"
        yes, no = self.counts()
        need = min(self._need, max(MIN_AGREEING, yes + no))
        if yes >= need and yes >= no:
            return "public"
        if no >= need and no > yes:
            return "private"
        return "unknown"

    def counts(self) -> tuple[int, int]:
        """(peers that reached us, peers that could not)."""
        yes = sum(1 for ok in self._by_server.values() if ok)
        return yes, len(self._by_server) - yes

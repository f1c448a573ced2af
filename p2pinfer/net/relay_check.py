"""Whether a relay that holds this node's slot brings it circuits (`/p2pinfer/relay-check/1.0.0`).

A relay can take a NATed node's slot and refuse, or drop, every circuit to it: the
node's adverts name the relay, consumers fail on it, and the node never knows (attack
43). So a node checks each relay it holds a slot at: `FIRST_CHECK_S` after taking the
slot, then every `CHECK_EVERY_S`, it asks a helper (a peer it holds a direct
connection with, publicly reachable ones first, none of its relays) to connect to it
through that relay. The relay cannot tell the helper from a consumer. The check passes
when the node sees the relay bring it a connection (STOP) while the helper tries; the
helper's word decides nothing but which failures count:

- the helper could not reach the relay at all: not counted (its network, or a lie);
- the relay said its circuits to us are full while it brought us one in the last
  `BUSY_PROOF_S`: not counted (a busy relay);
- else (the relay refused, or said yes and brought nothing): a strike.

Strikes from `STRIKES` different helpers in a row drop the slot and keep the relay
unused for `SHUNNED_S`, so one lying helper cannot make a node leave a good relay
(a relay the operator named is kept, with a warning). A passed check clears them.
A relay that brings checks but cuts the jobs it carries is dropped the same way when
the job server's ends say so (`job_ended`, `relay_cuts.JobCuts`; attack 70).

The helper side: one request a stream, the asker's own circuit address through a relay
(so a helper only ever connects to the asker), the relay at a global address or one the
helper is connected to already (never into the helper's own network), `ASKS_PER_PEER`
and `ASKS_IN_ALL` a minute. The helper dials the circuit, verifies the asker's key
over it (Noise), closes it, and answers one word: `ok`, `refused:<status>`, `limited`,
`failed` or `unreachable`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode

from p2pinfer.addresses import tcp_endpoint
from p2pinfer.bounded import PerMinute, keep_latest
from p2pinfer.errors import P2PInferError, PeerUnreachableError
from p2pinfer.net.compat.dial_addrs import connect_info
from p2pinfer.net.config import parse_peer_addr
from p2pinfer.net.relay_client import RelayClient
from p2pinfer.net.relay_cuts import JobCuts
from p2pinfer.net.relay_rules import CIRCUIT, circuit_addr, ip_scope
from p2pinfer.net.streams import NetStream

log = logging.getLogger(__name__)

CHECK_PROTOCOL = "/p2pinfer/relay-check/1.0.0"
FIRST_CHECK_S = 10.0  # after a slot is taken
CHECK_EVERY_S = 300.0  # after a check that passed
RETRY_S = 30.0  # after one that failed or told nothing
CHECK_TIMEOUT_S = 20.0  # the asker's wait for the helper's answer
HELPER_TIMEOUT_S = 12.0  # the helper's try (reaching the relay, the circuit, Noise)
STRIKES = 2  # failed checks, each from another helper, that drop a relay
SHUNNED_S = 1800.0  # a dropped relay is not picked again for this long
BUSY_PROOF_S = 900.0  # "full" from a relay that brought us a circuit this recently: busy
ASKS_PER_PEER = 6  # checks a helper runs per asker per minute
ASKS_IN_ALL = 30  # ... for all askers together
MAX_REQUEST = 512
ANSWERS = ("ok", "limited", "failed", "unreachable")  # and "refused:<status>"

OpenStream = Callable[..., Awaitable[NetStream]]


class RelayChecker:
    """Both sides of relay checks for one node: `run` checks its slots, `serve` helps."""

    def __init__(self, host: IHost, client: RelayClient, open_stream: OpenStream, *,
                 public: Callable[[str], bool], direct: Callable[[str], bool]) -> None:
        self._host = host
        self._client = client
        self._open_stream = open_stream
        self._public = public  # whether AutoNAT found a peer publicly reachable
        self._direct = direct  # whether we hold a connection to a peer not via a relay
        self._next: dict[str, float] = {}  # relay id -> trio time of its next check
        self._strikes: dict[str, set[str]] = {}  # relay id -> helpers whose check failed
        self._last_stop: dict[str, float] = {}  # relay id -> trio time of its last STOP
        self.shunned: OrderedDict[str, float] = OrderedDict()  # relay id -> until (unix s)
        self.passed = self.failed = 0
        self._asks: PerMinute[str] = PerMinute(max_keys=1024)
        self.cuts = JobCuts()
        client.shunned = self.is_shunned

    def saw_stop(self, relay: ID) -> None:
        """The relay `relay` brought this node a connection (`RelayHop`'s STOP)."""
        self._last_stop[relay.to_base58()] = trio.current_time()

    def job_ended(self, relay_id: str, cut_under: str | None) -> None:
        """An accepted job through our slot at `relay_id` ended: its relayed connection
        closed under it (`cut_under`: the consumer's PeerID) or its result went out
        (None). A relay found cutting jobs (`relay_cuts.JobCuts`) is dropped (attack 70)."""
        slot = self._client.slots.get(relay_id)
        if slot is None:
            return
        self.cuts.keep_only(self._client.slots)
        if self.cuts.note(relay_id, cut_under):
            self._drop(relay_id, slot.configured, "cuts the jobs it carries")

    def is_shunned(self, relay_id: str) -> bool:
        """Whether `relay_id` failed its checks, or cut our jobs, within `SHUNNED_S` (not
        picked again)."""
        until = self.shunned.get(relay_id)
        return until is not None and until > time.time()

    # -- the node's own slots ----------------------------------------------------------

    async def run(self, poll_s: float = 5.0) -> None:
        """Check each slot when due, until cancelled (a failing check never ends it)."""
        while True:
            try:
                await self.check_due()
            except Exception:  # a libp2p error we did not foresee: log, check later
                log.exception("relay check failed")
            await trio.sleep(poll_s)

    async def check_due(self) -> None:
        """Check every slot whose check is due (a new slot's first one is scheduled)."""
        now = trio.current_time()
        for relay_id in list(self._client.slots):
            due = self._next.setdefault(relay_id, now + FIRST_CHECK_S)
            if due <= now:
                self._next[relay_id] = now + await self.check(relay_id)
        for gone in set(self._next) - set(self._client.slots):
            del self._next[gone]
            self._strikes.pop(gone, None)

    async def check(self, relay_id: str) -> float:
        """One check of the slot at `relay_id`; the seconds until the next one."""
        slot = self._client.slots.get(relay_id)
        strikes = self._strikes.setdefault(relay_id, set())
        helper = self._helper(relay_id, avoid=strikes)
        if slot is None or helper is None:
            return RETRY_S if slot is not None else CHECK_EVERY_S
        own = self._host.get_id().to_base58()
        asked_at = trio.current_time()
        answer = await self._ask(helper, circuit_addr(slot.relay_addr, relay_id, own))
        if self._last_stop.get(relay_id, -1.0) >= asked_at:
            self.passed += 1
            strikes.clear()
            log.info("relay check passed relay=%s helper=%s", relay_id, helper)
            return CHECK_EVERY_S
        last = self._last_stop.get(relay_id)
        busy = answer == "limited" and last is not None and \
            trio.current_time() - last < BUSY_PROOF_S
        if answer in (None, "unreachable") or busy:
            log.info("relay check told nothing relay=%s helper=%s answer=%s",
                     relay_id, helper, answer)
            return RETRY_S
        self.failed += 1
        strikes.add(helper)
        log.info("relay check failed relay=%s helper=%s answer=%s strikes=%d",
                 relay_id, helper, answer, len(strikes))
        if len(strikes) >= STRIKES:
            self._drop(relay_id, slot.configured, "holds our slot but brings no circuits")
        return RETRY_S

    def _helper(self, relay_id: str, avoid: set[str]) -> str | None:
        """A connected peer to ask: a direct connection, the check protocol, none of our
        relays nor one whose check already failed; publicly reachable ones first."""
        store = self._host.get_peerstore()
        found = []
        for peer in self._host.get_connected_peers():
            pid = peer.to_base58()
            if pid in self._client.slots or pid in avoid or not self._direct(pid):
                continue
            try:
                if not store.supports_protocols(peer, [CHECK_PROTOCOL]):
                    continue
            except Exception:  # forgotten by the peerstore meanwhile
                continue
            found.append(pid)
        random.shuffle(found)
        found.sort(key=lambda pid: not self._public(pid))
        return found[0] if found else None

    async def _ask(self, helper: str, addr: str) -> str | None:
        """The helper's answer for a check of `addr`; None if it gave none."""
        try:
            with trio.fail_after(CHECK_TIMEOUT_S):
                stream = await self._open_stream(helper, CHECK_PROTOCOL, timeout_s=5.0)
                try:
                    await stream.write_frame(addr.encode(), timeout_s=5.0)
                    raw = await stream.read_frame(max_size=64, timeout_s=CHECK_TIMEOUT_S)
                finally:
                    await stream.close()
            answer = raw.decode("ascii")
        except Exception as exc:  # P2PInferError, TooSlowError, a bad answer, libp2p's own
            log.info("relay check got no answer helper=%s error=%r", helper, exc)
            return None
        return answer if answer in ANSWERS or answer.startswith("refused:") else None

    def _drop(self, relay_id: str, configured: bool, why: str) -> None:
        self._strikes.pop(relay_id, None)
        if configured:
            log.warning("relay named by --reserve-relay failed its checks (it %s): consumers "
                        "may not reach this node through it relay=%s", why, relay_id)
            return
        log.warning("relay dropped: it %s relay=%s", why, relay_id)
        keep_latest(self.shunned, relay_id, time.time() + SHUNNED_S, 256)
        self._client.drop(relay_id)

    # -- helping others ------------------------------------------------------------------

    async def serve(self, stream: NetStream) -> None:
        """Answer one check request (see the module doc)."""
        asker = stream.remote_peer_id
        raw = await stream.read_frame(max_size=MAX_REQUEST, timeout_s=10.0)
        addr, relay = "", None
        with contextlib.suppress(UnicodeDecodeError, P2PInferError):
            addr = raw.decode("ascii")
            relay = parse_peer_addr(addr.split(CIRCUIT)[0])
        problem = self._refusal(asker, addr, relay)
        if problem is not None or relay is None:
            log.info("relay check refused asker=%s reason=%s", asker, problem)
            await stream.reset()
            return
        with trio.move_on_after(HELPER_TIMEOUT_S):
            answer = "failed"  # the relay said yes, and no connection came of it in time
            answer = await self._try(asker, addr, relay)
        await stream.write_frame(answer.encode(), timeout_s=5.0)

    def _refusal(self, asker: str, addr: str, relay: PeerInfo | None) -> str | None:
        if relay is None or addr.count(CIRCUIT) != 1 or \
                not addr.endswith(f"{CIRCUIT}/p2p/{asker}"):
            return "not the asker's own circuit address"
        if relay.peer_id in (ID.from_base58(asker), self._host.get_id()):
            return "the asker or this node as the relay"
        endpoint = tcp_endpoint(addr.split(CIRCUIT)[0])
        if relay.peer_id not in self._host.get_connected_peers() and \
                (endpoint is None or ip_scope(endpoint[0]) != "global"):
            return "a relay not connected and not at a global TCP address"
        return None if self._asks.admit(asker, ASKS_PER_PEER, ASKS_IN_ALL) else "over the rate"

    async def _try(self, asker: str, addr: str, relay: PeerInfo) -> str:
        """Connect to `asker` through the relay in `addr`, verify its key, hang up."""
        target = ID.from_base58(asker)
        try:
            with trio.fail_after(HELPER_TIMEOUT_S / 2):
                await connect_info(self._host, relay)
        except Exception:
            return "unreachable"
        try:
            stream, _, _ = await self._client._hop_connect(target, addr)
        except PeerUnreachableError as exc:
            if StatusCode.RESOURCE_LIMIT_EXCEEDED.name in str(exc):
                return "limited"
            return "refused:" + str(exc).rsplit(": ", 1)[-1][:32]
        except Exception:
            return "failed"
        try:
            conn = await self._client._upgrade(stream, addr, target)
        except Exception:
            return "failed"
        ok = conn.muxed_conn.peer_id == target
        await conn.close()
        return "ok" if ok else "failed"


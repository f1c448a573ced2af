"""Finding and ranking the providers of a model for the consumer client.

Providers come from the gossip catalog and, for a model never heard
advertised (or once the catalog's are used up) or while the host is too young
to have heard every advert (`ClientConfig.catalog_warmup_s`), from the DHT and
the connected peers as well, with a fetched advert. Ranking: providers this
node has completed a job with ("proven") come before the others, and among
those, ones we hold a connection with before the rest; within each, price,
inflated by low reputation, by measured latency and by the pace its answers came at
here (`Candidate.rank_key`); one that could not be reached goes last for a while. One job in
`explore_every` tries the best unproven provider first (and only that one
before the proven), so newcomers get a bounded share of jobs until proven, and
any number of fresh keys claiming price 0 get no more (docs/security/adverts.md).
`CandidateSearch` is mixed into `JobClient` (`jobs/client.py`), which owns its state.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import replace

import trio

from p2pinfer.bounded import keep_latest
from p2pinfer.errors import P2PInferError
from p2pinfer.jobs.job_types import Candidate, ClientConfig, StakeSource
from p2pinfer.net.adverts import VerifiedAdvert
from p2pinfer.net.nethost import NetHost
from p2pinfer.verify.breaker import BreakerState
from p2pinfer.verify.reputation_store import ReputationBook

log = logging.getLogger(__name__)

RTT_MAX_AGE_S = 300.0
UNREACHABLE_RTT_MS = 10_000.0
MAX_RTT_PROBES = 8
#: How long a provider we failed to reach ranks as unreachable before it is probed
#: again (a restarted provider is back within seconds, on a new advert).
UNREACHABLE_RETRY_S = 30.0
#: Unproven providers whose RTT is probed for a job while proven ones exist: only the one an
#: exploring job would try (probing every fresh key would dial every fake, each job).
MAX_UNPROVEN_PROBES = 1
#: Answers shorter than this (tokens after the first chunk) do not measure a pace; a new
#: answer's pace moves the kept one by this weight; paces (provider, model) kept at most,
#: and too-slow marks (TOO_SLOW_LAST_S) likewise.
PACE_MIN_TOKENS = 8
PACE_WEIGHT = 0.3
MAX_PACES = 4_096
#: A provider left under the pace floor ranks last this long (priced lowest, it would
#: otherwise get the next job again, and hold it as long, until its breaker opens).
TOO_SLOW_LAST_S = 300.0


class CandidateSearch:
    """Provider discovery and ranking; the state is set up by `JobClient.__init__`."""

    net: NetHost
    config: ClientConfig
    stakes: StakeSource | None
    reputation: ReputationBook | None
    _rng: random.Random
    _rtt: dict[str, tuple[float, float]]  # peer -> (ms, trio time measured)
    _warmed: set[str]
    _jobs_ordered: int
    _pace: OrderedDict[tuple[str, str], float]  # (provider, model) -> tokens a second
    _too_slow: OrderedDict[str, float]  # provider -> trio time it ranks last until


    async def candidates(
        self, model: str, *, dht: bool = False, exclude: set[str] | frozenset[str] = frozenset()
    ) -> list[Candidate]:
        """Providers of `model`, best first: from the catalog, else (or with `dht`) the DHT."""
        found: dict[str, tuple[VerifiedAdvert, str]] = {}  # peer -> (advert, found via)
        dht = dht or self.config.dht_only
        if not dht:
            for entry in self.net.catalog.providers(model):
                found[entry.peer_id] = (entry.advert, "catalog")
        # Once per model is enough: what the lookup fetches lands in the catalog.
        young = (trio.current_time() - self.net.started_at < self.config.catalog_warmup_s
                 and model not in self._warmed)
        if not found or (young and not dht):
            self._warmed.add(model)
            # A host that has heard no adverts yet, or only some (a short-lived consumer:
            # `ask` took the one advert gossip had brought, 4 times in 10 on the docker NAT
            # testnet, and paid 9x for it): ask the DHT once and, at the same time, the
            # peers it is connected to; if nobody knows a provider, keep asking the DHT
            # while its routing table fills.
            heard: dict[str, tuple[VerifiedAdvert, str]] = {}

            async def from_dht(wait: bool) -> None:
                for advert in await self._dht_lookup(model, wait=wait):
                    heard[advert.signer] = (advert, "dht")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(from_dht, False)
                if not dht:
                    nursery.start_soon(self._from_connected_peers, model, heard)
            if not heard and not found and (not dht or self.config.dht_only):
                await from_dht(True)
            for peer_id, heard_as in heard.items():
                found.setdefault(peer_id, heard_as)
        if self.stakes is not None and self.config.min_stake > 0:
            await self._read_chain_stakes(found.values(), model)
        usable = [
            c for c in (self._candidate(advert, model, via) for advert, via in found.values())
            if c.peer_id not in exclude and c.stake >= self.config.min_stake
        ]
        usable = await self._scored(usable)
        await self._probe_rtts(usable, set(self.net.peers()))
        connected = set(self.net.peers())  # reachable now: our connection to it is up
        ranked = [self._with_rtt(c) for c in usable]
        now = trio.current_time()
        ranked.sort(key=lambda c: (unreachable(c) or self._too_slow.get(c.peer_id, 0) > now,
                                   tier(c, connected), c.rank_key(), self._rng.random()))
        if ranked and log.isEnabledFor(logging.INFO):
            log.info("providers ranked model=%s %s", model, describe(ranked, connected))
        return ranked

    def order_for_job(self, ranked: list[Candidate]) -> list[Candidate]:
        """The order one job tries `ranked` (from `candidates`) in: as ranked, except that
        one job in `config.explore_every` tries the best unproven provider first."""
        self._jobs_ordered += 1
        every = self.config.explore_every
        if every <= 0 or self._jobs_ordered % every:
            return ranked
        now = trio.current_time()  # one left as too slow (attack 76) is not explored again
        return explore_first(ranked, lambda c: self._too_slow.get(c.peer_id, 0) > now)

    async def _read_chain_stakes(self, found: Iterable[tuple[VerifiedAdvert, str]],
                                 model: str) -> None:
        """Read now the chain stakes of providers in `found` never read yet: the
        `min_stake` filter would drop them on a stake of 0 that only means "not read yet"
        (a short-lived consumer's background reader has not run; CI saw `ask --min-stake`
        find no provider). What the advert declares does not decide it: the stake is
        the chain's. Bounded by the book (READS_PER_PASS accounts, bad bindings never
        read) and by the discovery timeout."""
        assert self.stakes is not None
        claims = [(advert.signer, advert.advert.payee, advert.advert.payee_binding)
                  for advert, via in found
                  if self._candidate(advert, model, via).stake < self.config.min_stake]
        if claims:
            await self.stakes.read_unread(claims, self.config.discovery_timeout_s)

    async def _scored(self, found: list[Candidate]) -> list[Candidate]:
        """`found` with each provider's score and breaker state from the reputation book,
        read in the book's thread in one go (`_candidate` gives the score of a peer never
        seen, and reads no SQLite)."""
        book = self.reputation
        if book is None or not found:
            return found
        records = await book.run(lambda: [book.get(c.peer_id) for c in found])
        return [replace(c, score_pm=rec.score_pm,
                        breaker_closed=rec.breaker.state is BreakerState.CLOSED)
                for c, rec in zip(found, records, strict=True)]

    def _candidate(self, advert: VerifiedAdvert, model: str, via: str) -> Candidate:
        offer = advert.offer(model)
        assert offer is not None
        score = self.reputation.params.initial_score_pm if self.reputation else 950
        ad = advert.advert
        stake = ad.stake if self.stakes is None else self.stakes.stake_of_peer(
            advert.signer, ad.payee, ad.payee_binding)
        return Candidate(
            peer_id=advert.signer,
            model=model,
            price_per_1k=offer.price_per_1k,
            rtt_ms=None,
            score_pm=score,
            stake=stake,
            declared_stake=ad.stake,
            generation_tps=offer.generation_tps_milli / 1000,
            found_via=via,
            proven=self.net.catalog.is_proven(advert.signer),
            embeds=offer.embedding_length is not None,
        )

    def _with_rtt(self, c: Candidate) -> Candidate:
        """`c` with its measured RTT and pace, where measured."""
        known, pace = self._rtt.get(c.peer_id), self._pace.get((c.peer_id, c.model))
        if known is None and pace is None:
            return c
        return replace(c, rtt_ms=known[0] if known else None, observed_tps=pace)

    def mark_too_slow(self, peer_id: str) -> None:
        """Rank `peer_id` last for TOO_SLOW_LAST_S: its answer fell under the pace floor."""
        keep_latest(self._too_slow, peer_id, trio.current_time() + TOO_SLOW_LAST_S,
                    MAX_PACES)

    def observe_pace(self, peer_id: str, model: str, tokens: int, seconds: float) -> None:
        """A completed answer of `peer_id` with `model` came at `tokens` in `seconds`
        after its first chunk: folded into the pace it ranks with (recent answers
        weigh most; too short an answer says little and is left out)."""
        if tokens < PACE_MIN_TOKENS or seconds <= 0:
            return
        tps = tokens / seconds
        old = self._pace.get((peer_id, model))
        keep_latest(self._pace, (peer_id, model),
                    tps if old is None else old + PACE_WEIGHT * (tps - old), MAX_PACES)

    def mark_unreachable(self, peer_id: str) -> None:
        """Rank `peer_id` last until it is probed again, UNREACHABLE_RETRY_S from now. A
        provider we just failed to dial is most likely gone (killed, offline) while
        catalogs still list it: without this, every later job tried it first and paid
        a failed dial (bench/scale.py: 40 failovers for 14 kills at 50 nodes)."""
        stamp = trio.current_time() - RTT_MAX_AGE_S + UNREACHABLE_RETRY_S
        self._rtt[peer_id] = (UNREACHABLE_RTT_MS, stamp)

    def _rtt_known(self, peer_id: str) -> bool:
        known = self._rtt.get(peer_id)
        return known is not None and trio.current_time() - known[1] < RTT_MAX_AGE_S

    async def _probe_rtts(
        self, candidates: list[Candidate], connected: Collection[str] = frozenset()
    ) -> None:
        """Measure the info-protocol RTT of providers we have no fresh number for (this
        also opens the connection the job will use): the proven ones and, while there are
        any, at most MAX_UNPROVEN_PROBES others."""
        unknown = [c for c in candidates if not self._rtt_known(c.peer_id)]
        unknown.sort(key=lambda c: (tier(c, connected), c.price_per_1k))
        if any(c.proven for c in candidates):
            unproven = [c for c in unknown if not c.proven][:MAX_UNPROVEN_PROBES]
            unknown = [c for c in unknown if c.proven] + unproven

        async def probe(peer_id: str) -> None:
            try:
                fetched = await self.net.fetch_advert(
                    peer_id, timeout_s=self.config.rtt_probe_timeout_s)
            except P2PInferError as exc:
                log.info("provider probe failed peer=%s error=%s", peer_id, exc)
                self.mark_unreachable(peer_id)
                return
            if fetched is not None:
                self._rtt[peer_id] = (fetched.rtt_ms, trio.current_time())

        async with trio.open_nursery() as nursery:
            for c in unknown[:MAX_RTT_PROBES]:
                nursery.start_soon(probe, c.peer_id)

    async def _dht_lookup(self, model: str, *, wait: bool) -> list[VerifiedAdvert]:
        """Providers of `model` found in the DHT, with their fetched adverts. With `wait`,
        retry (a new host's routing table fills within seconds) up to discovery_timeout_s."""
        deadline = trio.current_time() + self.config.discovery_timeout_s
        delay = 0.1
        refreshed = False
        while True:
            remaining = max(0.5, deadline - trio.current_time())
            with trio.move_on_after(remaining):
                fetched = await self.net.lookup_providers(model, timeout_s=min(remaining, 5.0))
                for f in fetched:
                    self._rtt[f.advert.signer] = (f.rtt_ms, trio.current_time())
                if fetched:
                    return [f.advert for f in fetched]
            if not wait or trio.current_time() + delay >= deadline:
                return []
            if not refreshed and self.net.peers():
                refreshed = True
                with trio.move_on_after(max(0.1, deadline - trio.current_time())):
                    await self.net.refresh_routing_table()
                continue
            await trio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _from_connected_peers(
        self, model: str, heard: dict[str, tuple[VerifiedAdvert, str]]
    ) -> None:
        """Adverts offering `model` from the peers we are connected to now (tagged "peer")."""

        async def ask(peer_id: str) -> None:
            try:
                fetched = await self.net.fetch_advert(
                    peer_id, timeout_s=self.config.rtt_probe_timeout_s)
            except P2PInferError as exc:
                log.info("advert fetch failed peer=%s error=%s", peer_id, exc)
                return
            if fetched is None or fetched.advert.offer(model) is None:
                return
            self._rtt[peer_id] = (fetched.rtt_ms, trio.current_time())
            heard.setdefault(peer_id, (fetched.advert, "peer"))

        async with trio.open_nursery() as nursery:
            for peer_id in self.net.peers():
                nursery.start_soon(ask, peer_id)

    async def survey(self, *, timeout_s: float = 10.0) -> list[VerifiedAdvert]:
        """Adverts of every peer we can reach now: refresh the DHT routing table (which
        connects to the peers near us), then ask each connected peer for its advert."""
        with trio.move_on_after(timeout_s / 2):
            await self.net.refresh_routing_table()
        adverts: dict[str, VerifiedAdvert] = {}

        async def ask(peer_id: str) -> None:
            try:
                fetched = await self.net.fetch_advert(peer_id, timeout_s=timeout_s / 2)
            except P2PInferError as exc:
                log.info("advert fetch failed peer=%s error=%s", peer_id, exc)
                return
            if fetched is not None:
                adverts[peer_id] = fetched.advert
                self._rtt[peer_id] = (fetched.rtt_ms, trio.current_time())

        async with trio.open_nursery() as nursery:
            for peer_id in self.net.peers():
                nursery.start_soon(ask, peer_id)
        for peer_id in self.net.catalog.peer_ids():
            known = self.net.catalog.advert_of(peer_id)
            if known is not None:
                adverts.setdefault(peer_id, known)
        return sorted(adverts.values(), key=lambda a: a.signer)

    def rtt_ms(self, peer_id: str) -> float | None:
        """The last RTT measured to `peer_id`, if any."""
        known = self._rtt.get(peer_id)
        return known[0] if known is not None else None


def unreachable(c: Candidate) -> bool:
    """Whether `c` failed to answer lately (`JobClient.mark_unreachable`)."""
    return c.rtt_ms is not None and c.rtt_ms >= UNREACHABLE_RTT_MS


def tier(c: Candidate, connected: Collection[str]) -> int:
    """0: proven; 1: unproven, but we hold a connection with it; 2: the rest (a fresh key
    with an address nobody has dialled yet)."""
    if c.proven:
        return 0
    return 1 if c.peer_id in connected else 2


def explore_first(ranked: list[Candidate],
                  skip: Callable[[Candidate], bool] = lambda _: False) -> list[Candidate]:
    """`ranked` with its best reachable unproven provider (not `skip`ped) moved to the
    front, if a proven one leads it (with none proven, every provider is unproven and the
    ranking stands)."""
    if not ranked or not ranked[0].proven:
        return ranked
    pick = next((c for c in ranked if not c.proven and not unreachable(c) and not skip(c)),
                None)
    if pick is None:
        return ranked
    return [pick, *(c for c in ranked if c is not pick)]


def describe(ranked: list[Candidate], connected: Collection[str]) -> str:
    """One line for the log: each candidate, best first, with what ranked it (an operator
    asking "why that provider?" reads price, RTT, score, tier and where it was found)."""
    def one(c: Candidate) -> str:
        rtt = "-" if c.rtt_ms is None else f"{c.rtt_ms:.0f}ms"
        return (f"{c.peer_id[-8:]}(price={c.price_per_1k} rtt={rtt} score={c.score_pm} "
                f"tier={tier(c, connected)} via={c.found_via})")
    return " ".join(one(c) for c in ranked)

"""The consumer client: find providers of a model, rank them, run jobs with failover.

```python
client = JobClient(net, identity, ledger=ledger, reputation=book, metrics=metrics)
async with client.job("smollm2:135m", [ChatTurn("user", "Hi")], JobParams(max_tokens=64)) as job:
    async for delta in job:                  # TextDelta(text, restart)
        print(delta.text, end="")
outcome = job.outcome                        # JobOutcome: provider, job_id, usage, charged, ...
```

Providers come from the gossip catalog and, for a model never heard
advertised (or once the catalog's are used up), from the DHT with a fetched
advert. Ranking: providers this node has completed a job with ("proven") come
before the others, and among those, ones we hold a connection with before the
rest; within each, price, inflated by low reputation and by measured latency;
one that could not be reached goes last for a while. One job in
`explore_every` tries the best unproven provider first (and only that one
before the proven), so newcomers get a bounded share of jobs until proven, and
any number of fresh keys claiming price 0 get no more (docs/security/adverts.md).
Peers whose circuit breaker is open or whose stake is under `min_stake` are
skipped: the advertised stake without settlement, the stake locked on chain by the
account bound to the provider's peer id with it (`stakes`, docs/settlement.md).
A job is charged at most once: only the attempt whose result checked out is
receipted, and the ledger refuses a second charge for a job id anyway.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

import trio

from p2pinfer.backends.models import normalize_name
from p2pinfer.errors import (
    DuplicateEntryError,
    InsufficientCreditError,
    LedgerError,
    P2PInferError,
    UsageError,
)
from p2pinfer.identity import NodeIdentity, public_key_from_peer_id
from p2pinfer.market.entries import peer_account
from p2pinfer.market.ledger import ChargeInput, Ledger
from p2pinfer.market.pricing import charge_for, quality_multiplier_pm
from p2pinfer.metrics import NodeMetrics
from p2pinfer.net.adverts import VerifiedAdvert
from p2pinfer.net.config import wall_clock_ms
from p2pinfer.net.job_types import (
    Candidate,
    ClientConfig,
    JobOutcome,
    RefusedCharge,
    StakeSource,
)
from p2pinfer.net.net_job import NetJob, with_seed
from p2pinfer.net.nethost import NetHost
from p2pinfer.protocol import ChatTurn, ConsumerJob, JobParams
from p2pinfer.protocol.embedding import MAX_EMBED_INPUTS
from p2pinfer.settle.payer import PayerBook
from p2pinfer.verify.reputation import Outcome
from p2pinfer.verify.reputation_store import ReputationBook

log = logging.getLogger(__name__)

RTT_MAX_AGE_S = 300.0
UNREACHABLE_RTT_MS = 10_000.0
MAX_RTT_PROBES = 8
#: Refused charges kept as evidence (the newest; each holds a request and a result).
MAX_REFUSED_CHARGES = 100
#: How long a provider we failed to reach ranks as unreachable before it is probed
#: again (a restarted provider is back within seconds, on a new advert).
UNREACHABLE_RETRY_S = 30.0
#: Unproven providers whose RTT is probed for a job while proven ones exist: only the one an
#: exploring job would try (probing every fresh key would dial every fake, each job).
MAX_UNPROVEN_PROBES = 1


class JobClient:
    """Runs jobs on the network for this node (or a short-lived consumer host)."""

    def __init__(
        self,
        net: NetHost,
        identity: NodeIdentity,
        *,
        ledger: Ledger | None = None,
        reputation: ReputationBook | None = None,
        metrics: NodeMetrics | None = None,
        config: ClientConfig = ClientConfig(),
        clock_ms: Callable[[], int] = wall_clock_ms,
        rng: random.Random | None = None,
        payer: PayerBook | None = None,
        stakes: StakeSource | None = None,
    ) -> None:
        self.net = net
        # Settlement on: jobs are paid by vouchers on our channels (settle.payer), and the
        # credit check is the channel to the provider that accepts, not the local ledger;
        # stake is read from the chain, never taken from the advert.
        self.payer = payer
        self.stakes = stakes
        self.identity = identity
        self.ledger = ledger
        self.reputation = reputation
        self.metrics = metrics or NodeMetrics()
        self.config = config
        self.clock_ms = clock_ms
        self._rng = rng or random.Random()
        self._rtt: dict[str, tuple[float, float]] = {}  # peer -> (ms, trio time measured)
        self._db = trio.CapacityLimiter(1)
        self._jobs_ordered = 0  # jobs given a provider order (one in explore_every explores)
        if reputation is not None:
            for rec in reputation.peers():  # providers completed jobs with before a restart
                if rec.jobs_ok > 0:
                    net.catalog.vouch(rec.peer_id)
        # Called with each completed job's outcome (verify/ samples them for re-checks).
        self.outcome_hooks: list[Callable[[JobOutcome], None]] = []
        # Results refused for overcharging, newest last: evidence against their providers.
        self.refused_charges: deque[RefusedCharge] = deque(maxlen=MAX_REFUSED_CHARGES)

    # -- jobs ----------------------------------------------------------------------

    @asynccontextmanager
    async def job(
        self, model: str, input: str | Sequence[ChatTurn], params: JobParams = JobParams()
    ) -> AsyncIterator[NetJob]:
        """A job for `model`: `input` is a raw prompt (str) or chat turns. Iterate the
        yielded NetJob for the answer; leaving the block abandons an unfinished one."""
        if isinstance(input, str):
            messages: tuple[ChatTurn, ...] = ()
            prompt: str | None = input
        else:
            messages, prompt = tuple(input), None
            if not messages:
                raise UsageError("a chat job needs at least one message")
        await self._check_credit(params)
        job = NetJob(self, self.resolve_model(model), messages, prompt,
                     with_seed(params, self._rng.randrange(2**32)))
        try:
            yield job
        finally:
            if job.outcome is None:
                self.metrics.jobs.labels("consumer", "failed").inc()
            await job.aclose()

    async def run(
        self, model: str, input: str | Sequence[ChatTurn], params: JobParams = JobParams()
    ) -> JobOutcome:
        """Run a job to the end and return its outcome."""
        async with self.job(model, input, params) as job:
            async for _ in job:
                pass
        assert job.outcome is not None
        return job.outcome

    async def embed(self, model: str, inputs: Sequence[str]) -> JobOutcome:
        """Run an embed job for `inputs` (1..MAX_EMBED_INPUTS texts) on a provider whose
        advert says it embeds with `model`; the outcome's text holds the vectors
        (`protocol.embedding.decode_vectors`)."""
        if not 0 < len(inputs) <= MAX_EMBED_INPUTS:
            raise UsageError(f"an embed job takes 1 to {MAX_EMBED_INPUTS} inputs")
        params = JobParams(max_tokens=1, temperature=0.0)  # nothing is sampled
        await self._check_credit(params)
        job = NetJob(self, self.resolve_model(model), (), None,
                     with_seed(params, self._rng.randrange(2**32)), inputs=tuple(inputs))
        try:
            async for _ in job:
                pass
        finally:
            if job.outcome is None:
                self.metrics.jobs.labels("consumer", "failed").inc()
            await job.aclose()
        assert job.outcome is not None
        return job.outcome

    def resolve_model(self, name: str) -> str:
        """The network's spelling of `name` (`smollm2` -> `smollm2:135m`)."""
        known = {m.lower(): m for m in self.net.catalog.models()}
        for wanted in (name, normalize_name(name)):
            if wanted.lower() in known:
                return known[wanted.lower()]
        return normalize_name(name)

    async def _check_credit(self, params: JobParams) -> None:
        ledger = self.ledger
        if ledger is None or not self.config.require_credit or self.payer is not None:
            return
        try:
            await ledger.run(  # SQLite: in the ledger's thread, never on the loop
                ledger.require_credit,
                peer_account(self.identity.public_key),
                charge_for(self.config.max_price_per_1k, params.max_tokens),
            )
        except InsufficientCreditError as exc:
            raise InsufficientCreditError(
                f"{exc} (max price {self.config.max_price_per_1k} per 1k tokens x max_tokens "
                f"{params.max_tokens}); on a testnet, grant credit with --faucet"
            ) from exc

    # -- providers -----------------------------------------------------------------

    async def candidates(
        self, model: str, *, dht: bool = False, exclude: set[str] | frozenset[str] = frozenset()
    ) -> list[Candidate]:
        """Providers of `model`, best first: from the catalog, else (or with `dht`) the DHT."""
        found: dict[str, tuple[VerifiedAdvert, str]] = {}  # peer -> (advert, found via)
        dht = dht or self.config.dht_only
        if not dht:
            for entry in self.net.catalog.providers(model):
                found[entry.peer_id] = (entry.advert, "catalog")
        if not found:
            # A host that has not heard adverts yet (a short-lived consumer): ask the DHT
            # once and, at the same time, the peers it is connected to; if neither knows
            # a provider, keep asking the DHT while its routing table fills.
            heard: dict[str, tuple[VerifiedAdvert, str]] = {}

            async def from_dht(wait: bool) -> None:
                for advert in await self._dht_lookup(model, wait=wait):
                    heard[advert.signer] = (advert, "dht")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(from_dht, False)
                if not dht:
                    nursery.start_soon(self._from_connected_peers, model, heard)
            if not heard and (not dht or self.config.dht_only):
                await from_dht(True)
            found.update(heard)
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
        ranked.sort(key=lambda c: (unreachable(c), tier(c, connected), c.rank_key(),
                                   self._rng.random()))
        return ranked

    def order_for_job(self, ranked: list[Candidate]) -> list[Candidate]:
        """The order one job tries `ranked` (from `candidates`) in: as ranked, except that
        one job in `config.explore_every` tries the best unproven provider first."""
        self._jobs_ordered += 1
        every = self.config.explore_every
        if every <= 0 or self._jobs_ordered % every:
            return ranked
        return explore_first(ranked)

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
        """`found` with each provider's score from the reputation book, read in the book's
        thread (`_candidate` gives the score of a peer never seen, and reads no SQLite)."""
        book = self.reputation
        if book is None or not found:
            return found
        scores = await book.run(lambda: [book.get(c.peer_id).score_pm for c in found])
        return [replace(c, score_pm=score) for c, score in zip(found, scores, strict=True)]

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
        known = self._rtt.get(c.peer_id)
        if known is None:
            return c
        return replace(c, rtt_ms=known[0])

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

    # -- reputation and ledger (SQLite: off the event loop) ------------------------

    async def allow(self, peer_id: str) -> bool:
        """Whether the peer's circuit breaker lets a job through."""
        book = self.reputation
        if book is None:
            return True
        return await trio.to_thread.run_sync(book.allow, peer_id, limiter=self._db)

    async def observe(self, peer_id: str, *, ok: bool, blame: bool) -> None:
        """Record a job's outcome in the reputation table (neutral failures are not); a
        completed job makes the provider proven (ranked with the known good)."""
        if ok:
            self.net.catalog.vouch(peer_id)
        book = self.reputation
        if book is None or not (ok or blame):
            return
        outcome = Outcome.JOB_SUCCEEDED if ok else Outcome.JOB_FAILED
        try:
            await trio.to_thread.run_sync(book.record, peer_id, outcome, limiter=self._db)
        except P2PInferError as exc:
            log.warning("reputation not updated peer=%s error=%s", peer_id, exc)

    async def refuse_charge(
        self, candidate: Candidate, machine: ConsumerJob, error: Exception
    ) -> None:
        """A provider's signed result overcharged: nothing is receipted; keep the evidence
        (our signed request, its signed result) and convict it in the reputation book
        (score 0, breaker open), so it gets no more of our jobs."""
        result, accept = machine.refused_result, machine.refused_accept
        charged = result.msg.charged if result is not None else 0
        evidence = result.raw if result is not None else (
            accept.raw if accept is not None else b"")
        log.warning("charge refused: overcharge peer=%s job=%s charged=%d reason=%s",
                    candidate.peer_id, machine.job_id.hex(), charged, error)
        self.refused_charges.append(RefusedCharge(
            provider=candidate.peer_id, job_id=machine.job_id.hex(), reason=str(error),
            charged=charged, request=machine.request.raw, result=evidence))
        book = self.reputation
        if book is None:
            return
        try:
            await trio.to_thread.run_sync(book.convict, candidate.peer_id, limiter=self._db)
        except P2PInferError as exc:
            log.warning("reputation not updated peer=%s error=%s", candidate.peer_id, exc)

    async def record_charge(
        self, model: str, candidate: Candidate, machine: ConsumerJob, *, delivered: bool
    ) -> int:
        """Record the receipted job's charge in our ledger, once; the amount charged."""
        result, receipt = machine.result, machine.receipt_message
        assert result is not None and receipt is not None
        if not delivered:
            return 0  # the provider never got our receipt: it will not charge, nor do we
        amount = result.msg.charged
        self.metrics.charged.labels("consumer").inc(amount)
        ledger = self.ledger
        if ledger is None:
            return amount
        charge = ChargeInput(
            job_id=machine.job_id,
            model=model,
            provider=public_key_from_peer_id(candidate.peer_id),
            consumer=self.identity.public_key,
            tokens=result.msg.prompt_tokens + result.msg.completion_tokens,
            amount=amount,
            result=result.raw,
            receipt=receipt.raw,
        )
        quality = quality_multiplier_pm(candidate.score_pm)

        def write() -> int:
            ledger.record_charge(charge, self.config.preset, quality_pm=quality)
            return ledger.balance(peer_account(self.identity.public_key))

        try:
            balance = await trio.to_thread.run_sync(write, limiter=self._db)
        except DuplicateEntryError:
            log.error("job %s was already charged; not charging again", machine.job_id.hex())
            return 0
        except LedgerError as exc:
            log.error("charge not recorded job=%s error=%s", machine.job_id.hex(), exc)
            return amount
        self.metrics.balance.set(balance)
        return amount


def unreachable(c: Candidate) -> bool:
    """Whether `c` failed to answer lately (`JobClient.mark_unreachable`)."""
    return c.rtt_ms is not None and c.rtt_ms >= UNREACHABLE_RTT_MS


def tier(c: Candidate, connected: Collection[str]) -> int:
    """0: proven; 1: unproven, but we hold a connection with it; 2: the rest (a fresh key
    with an address nobody has dialled yet)."""
    if c.proven:
        return 0
    return 1 if c.peer_id in connected else 2


def explore_first(ranked: list[Candidate]) -> list[Candidate]:
    """`ranked` with its best reachable unproven provider moved to the front, if a proven
    one leads it (with none proven, every provider is unproven and the ranking stands)."""
    if not ranked or not ranked[0].proven:
        return ranked
    pick = next((c for c in ranked if not c.proven and not unreachable(c)), None)
    if pick is None:
        return ranked
    return [pick, *(c for c in ranked if c is not pick)]

"""The consumer client: find providers of a model, rank them, run jobs with failover.

```python
client = JobClient(net, identity, ledger=ledger, reputation=book, metrics=metrics)
async with client.job("smollm2:135m", [ChatTurn("user", "Hi")], JobParams(max_tokens=64)) as job:
    async for delta in job:                  # TextDelta(text, restart)
        print(delta.text, end="")
outcome = job.outcome                        # JobOutcome: provider, job_id, usage, charged, ...
```

Providers are found and ranked by `CandidateSearch` (`jobs/candidates.py`).
Peers whose circuit breaker is open or whose stake is under `min_stake` are
skipped: the advertised stake without settlement, the stake locked on chain by the
account bound to the provider's peer id with it (`stakes`, docs/settlement.md).
A job is charged at most once: only the attempt whose result checked out is
receipted, and the ledger refuses a second charge for a job id anyway.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

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
from p2pinfer.jobs.candidates import CandidateSearch
from p2pinfer.jobs.generation import collapsing_nursery
from p2pinfer.jobs.job_attempt import with_seed
from p2pinfer.jobs.job_types import (
    Candidate,
    ClientConfig,
    JobOutcome,
    RefusedCharge,
    StakeSource,
)
from p2pinfer.jobs.net_job import NetJob
from p2pinfer.market.entries import peer_account
from p2pinfer.market.ledger import ChargeInput, Ledger
from p2pinfer.market.pricing import quality_multiplier_pm
from p2pinfer.metrics import NodeMetrics
from p2pinfer.net.config import wall_clock_ms
from p2pinfer.net.nethost import NetHost
from p2pinfer.protocol import (
    REPORTS_TOPIC,
    ChatTurn,
    ConsumerJob,
    JobAccept,
    JobParams,
    JobResult,
    Signed,
    charge_for,
)
from p2pinfer.protocol.embedding import MAX_EMBED_INPUTS
from p2pinfer.settle.payer import PayerBook
from p2pinfer.verify.charge_proofs import build_charge_proof
from p2pinfer.verify.reputation import Outcome
from p2pinfer.verify.reputation_store import ReputationBook

log = logging.getLogger(__name__)

#: Refused charges kept as evidence (the newest; each holds a request and a result).
MAX_REFUSED_CHARGES = 100


class JobClient(CandidateSearch):
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
        self._pace: OrderedDict[tuple[str, str], float] = OrderedDict()  # CandidateSearch
        self._too_slow: OrderedDict[str, float] = OrderedDict()
        self._db = trio.CapacityLimiter(1)
        self._warmed: set[str] = set()  # models looked up in the DHT while the host was young
        self._jobs_ordered = 0  # jobs given a provider order (one in explore_every explores)
        if reputation is not None:
            for rec in reputation.peers():  # providers completed jobs with before a restart
                if rec.jobs_ok > 0:
                    net.catalog.vouch(rec.peer_id)
        # Called with each completed job's outcome (verify/ samples them for re-checks).
        self.outcome_hooks: list[Callable[[JobOutcome], None]] = []
        # Where provable overcharges are gossiped (with `config.gossip_charge_proofs`): this
        # host, or the node's own when this client's host was started for one check job.
        self.proof_net: NetHost | None = None
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
        job = NetJob(self, self.resolve_model(model), messages, prompt,
                     with_seed(params, self._rng.randrange(2**32)))
        await self._credit_and_candidates(job, params)
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
        job = NetJob(self, self.resolve_model(model), (), None,
                     with_seed(params, self._rng.randrange(2**32)), inputs=tuple(inputs))
        await self._credit_and_candidates(job, params)
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

    async def _credit_and_candidates(self, job: NetJob, params: JobParams) -> None:
        """The credit check and the search for providers at once (each waits on its own
        thread or the network; in a row they added up before every job). No credit: the
        search is cancelled and InsufficientCreditError raised, as before any attempt."""
        async with collapsing_nursery() as nursery:
            nursery.start_soon(job.find_candidates)
            await self._check_credit(params)

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

    # -- reputation and ledger (SQLite: off the event loop) ------------------------

    async def allow(self, peer_id: str) -> bool:
        """Whether the peer's circuit breaker lets a job through."""
        book = self.reputation
        if book is None:
            return True
        return await trio.to_thread.run_sync(book.allow, peer_id, limiter=self._db)

    async def observe(self, peer_id: str, *, ok: bool, blame: bool) -> None:
        """Record a job's outcome in the reputation table (neutral failures are not); a
        completed job makes the provider proven (ranked with the known good, and its
        address let in when inbound connections are short)."""
        if ok:
            self.net.catalog.vouch(peer_id)
            self.net.value_peer(peer_id)
        book = self.reputation
        if book is None or not (ok or blame):
            return
        outcome = Outcome.JOB_SUCCEEDED if ok else Outcome.JOB_FAILED
        try:
            await trio.to_thread.run_sync(book.record, peer_id, outcome, limiter=self._db)
        except P2PInferError as exc:
            log.warning("reputation not updated peer=%s error=%s", peer_id, exc)

    async def refuse_charge(
        self, candidate: Candidate, machine: ConsumerJob, error: Exception, output: str = ""
    ) -> None:
        """A provider's signed accept or result overcharged: nothing is receipted; keep the
        evidence (our signed request, its signed accept and result) and convict it in the
        reputation book (score 0, breaker open), so it gets no more of our jobs; where
        others can check it (`output` is what the provider streamed) and
        `config.gossip_charge_proofs` allows, gossip the proof so that they convict it too
        (verify/charge_proofs.py)."""
        result = machine.refused_result
        accept = machine.refused_accept or machine.accept
        charged = result.msg.charged if result is not None else 0
        log.warning("charge refused: overcharge peer=%s job=%s charged=%d reason=%s",
                    candidate.peer_id, machine.job_id.hex(), charged, error)
        self.refused_charges.append(RefusedCharge(
            provider=candidate.peer_id, job_id=machine.job_id.hex(), reason=str(error),
            charged=charged, request=machine.request.raw,
            accept=accept.raw if accept is not None else b"",
            result=result.raw if result is not None else b""))
        if self.config.gossip_charge_proofs:
            await self._publish_proof(machine, candidate.peer_id, accept, result, output)
        book = self.reputation
        if book is None:
            return
        try:
            await trio.to_thread.run_sync(book.convict, candidate.peer_id, limiter=self._db)
        except P2PInferError as exc:
            log.warning("reputation not updated peer=%s error=%s", candidate.peer_id, exc)

    async def _publish_proof(self, machine: ConsumerJob, provider: str,
                             accept: Signed[JobAccept] | None,
                             result: Signed[JobResult] | None, output: str) -> None:
        proof = build_charge_proof(self.identity, machine.request, self.clock_ms(),
                                   accept=accept, result=result, output=output)
        if proof is None:
            log.info("overcharge not provable to others job=%s", machine.job_id.hex())
            return
        try:
            await (self.proof_net or self.net).publish(REPORTS_TOPIC, proof.raw)
        except Exception as exc:  # py-libp2p's publish: no peers, a closed host, ...
            log.warning("charge proof not published job=%s error=%s", machine.job_id.hex(), exc)
            return
        self.metrics.charge_proofs.inc()
        log.info("charge proof published job=%s provider=%s", machine.job_id.hex(), provider)

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

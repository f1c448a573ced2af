"""Spot-checks over the network: validators, consumer re-checks and report receivers.

`Verifier` runs in the node's nursery (wired by `node.py`):

- **validator** (`--validator`): every `check_interval_s` (exponentially
  distributed, so checks are not periodic) it picks a provider of a model its
  own engine serves, biased to peers on probation (`check_rate_pm`), and sends it
  a *check job* that looks like any other: it goes out from a libp2p host started
  for that check under a new key, which also signs the request, so the provider sees
  a first-time consumer (`fresh_host`; the IP address is still the validator's), the
  prompt comes from the shipped prompt set (`prompts.txt`), greedy with a
  random seed. It judges the answer (`judge_answer`: its engine's score of the
  text, and a re-run of the signed request unless the score alone passes it;
  `verify/compare.py`), records the check in its ReputationBook (and so the
  breaker) and publishes a signed CheckReport on `p2pinfer/reports/1`.
- **consumer re-checks** (`--recheck-rate`): a sample of this node's own
  completed jobs is re-run the same way when its engine serves the model.
- **receiver**: every node judges the reports it hears (`verify/reports.py`):
  forged or stale ones are dropped; a `fail` about a model it serves is re-run
  on its own engine (its own observation; confirmed fraud is slashed in its
  ledger, the entry holding the report's sha256), but only within its own request
  limits, per-reporter rate and engine-time budget, and only while no paid job
  wants the engine (`verify/engine_gate.py`), or it is not counted at all; a `fail`
  about a model it does not serve counts by the weight the reporter earned with
  reports this node re-ran and found right, or not at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import TYPE_CHECKING

import trio

from p2pinfer.backends.base import (
    Backend,
    ChatMessage,
    Completion,
    Embedder,
    TextScore,
    TextScorer,
    TokenDelta,
)
from p2pinfer.errors import BackendError, ModelNotFound, P2PInferError
from p2pinfer.identity import NodeIdentity, public_key_from_peer_id
from p2pinfer.market.ledger import Ledger
from p2pinfer.net import NetConfig, run_host
from p2pinfer.net.client import JobClient
from p2pinfer.net.config import wall_clock_ms
from p2pinfer.net.generation import sampling_params
from p2pinfer.net.gossip import GossipMessage
from p2pinfer.net.job_types import Candidate, JobOutcome
from p2pinfer.net.net_job import NetJob
from p2pinfer.net.nethost import NetHost
from p2pinfer.protocol import (
    REPORTS_TOPIC,
    ChatTurn,
    JobParams,
    JobRequest,
    JobResult,
    RequestLimits,
)
from p2pinfer.protocol.codec import decode_as
from p2pinfer.protocol.embedding import encode_vectors
from p2pinfer.verify.compare import (
    DEFAULT_THRESHOLDS,
    CompareThresholds,
    Comparison,
    Verdict,
    compare_by_likelihood,
    compare_embeddings,
    compare_outputs,
)
from p2pinfer.verify.engine_gate import EngineGate, EngineTime, Preempted
from p2pinfer.verify.reports import (
    RECHECK_MAX_PREEMPTIONS,
    RECHECK_MAX_RUN_MS,
    OpenedReport,
    RecheckBudget,
    ReporterRate,
    ReportWindow,
    build_report,
    recheck_refusal,
    reporter_weight_pm,
    try_open,
)
from p2pinfer.verify.reputation import Outcome
from p2pinfer.verify.reputation_store import ReputationBook

if TYPE_CHECKING:
    from p2pinfer.settle.slasher import Slasher

log = logging.getLogger(__name__)

#: Result hashes of re-run reports remembered, so a proof is re-run (and earns its
#: reporter a confirmation) once: a day of re-runs at the budget's pace is far fewer.
JUDGED_PROOFS = 10_000


def prompt_set() -> tuple[str, ...]:
    """The realistic prompts check jobs are drawn from (`verify/prompts.txt`)."""
    text = resources.files("p2pinfer.verify").joinpath("prompts.txt").read_text("utf-8")
    return tuple(ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))


@dataclass(frozen=True)
class VerifyConfig:
    """How much this node checks. Rates per mille; seconds as floats."""

    validator: bool = False
    check_interval_s: float = 10.0  # mean time between a validator's check jobs
    check_max_tokens: int = 64
    recheck_rate_pm: int = 0  # share of this node's own jobs it re-runs (consumers)
    thresholds: CompareThresholds = DEFAULT_THRESHOLDS
    slash_on_fraud: bool = True
    #: Send each check job from a libp2p host started for it under a new key, so the
    #: provider cannot tell a check from a first-time consumer by PeerID. Off: the
    #: validator's own connection carries it, signed by a throwaway key.
    fresh_host: bool = True
    check_listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    #: What a reported request may ask of our engine to be re-run: the job server's
    #: limits on a paid request (node.py passes the job server's own).
    recheck_limits: RequestLimits = field(default_factory=RequestLimits)


@dataclass(frozen=True)
class CheckResult:
    """One finished spot-check."""

    provider: str
    model: str
    comparison: Comparison
    report: bytes  # the signed CheckReport as published
    reference_ms: float  # seconds of our engine's time, in ms
    completion_tokens: int


async def reference_output(backend: Backend, request: JobRequest) -> str:
    """Our own engine's answer to `request`, with its model and sampling parameters (for
    an embed job: its vectors, as the job's output text)."""
    if request.kind == "embed":
        if not isinstance(backend, Embedder):
            raise ModelNotFound(f"this engine does not embed with {request.model}")
        embeddings = await backend.embed(request.model, request.inputs or ())
        return encode_vectors(embeddings.vectors)
    # The same sampling; log probabilities change no token and are not compared.
    params = replace(sampling_params(request), top_logprobs=None)
    if request.kind == "chat":
        turns = [ChatMessage(t.role, t.content, t.tool_calls, t.tool_name)
                 for t in request.messages]
        stream = backend.chat(request.model, turns, params)
    else:
        stream = backend.generate(request.model, request.prompt or "", params)
    parts: list[str] = []
    async with stream as events:
        async for event in events:
            if isinstance(event, Completion):
                break
            if isinstance(event, TokenDelta):
                parts.append(event.text)
    return "".join(parts)


async def score_output(backend: Backend, request: JobRequest, text: str) -> TextScore | None:
    """Our engine's score of a provider's answer `text` to `request`; None when the engine
    cannot score a text (or failed to: the check then falls back on token agreement)."""
    if not isinstance(backend, TextScorer):
        return None
    try:
        if request.kind == "chat":
            turns = [ChatMessage(t.role, t.content, t.tool_calls, t.tool_name)
                     for t in request.messages]
            return await backend.score_chat(request.model, turns, text)
        return await backend.score_generate(request.model, request.prompt or "", text)
    except BackendError as exc:
        log.warning("answer not scored model=%s error=%s", request.model, exc)
        return None


def is_greedy(params: JobParams) -> bool:
    """Whether a request asks for the model's greedy choices (nothing sampled)."""
    return params.temperature == 0.0 or params.top_k == 1


@dataclass
class JudgeMemo:
    """What a judgement has computed so far: a pre-empted re-run starts again from here,
    not from the start (`EngineGate.run` calls the work once per attempt)."""

    scored: bool = False
    score: TextScore | None = None
    reference: str | None = None


async def judge_answer(
    backend: Backend, request: JobRequest, result: JobResult, text: str,
    thresholds: CompareThresholds, memo: JudgeMemo | None = None,
) -> tuple[str, Comparison]:
    """Judge the provider's answer `text` to `request`: (our reference output, or "" when
    none was needed, and the comparison). A greedy answer our engine can score and
    finds consistent passes on its likelihood alone (`compare_by_likelihood`: the
    re-run could not change that verdict); otherwise we re-run the request on our
    engine with its parameters and compare the two answers (`compare_outputs`), so
    every fail rests on a re-run. A reshaped request (a penalty or an output format) is
    judged by the re-run alone."""
    memo = memo if memo is not None else JudgeMemo()
    if request.kind == "embed":  # vectors: the re-run's, compared by cosine similarity
        if memo.reference is None:
            memo.reference = await reference_output(backend, request)
        return memo.reference, compare_embeddings(
            memo.reference, text, len(request.inputs or ()), thresholds)
    if not memo.scored:
        # The score is the raw model's: under a penalty or a grammar the sampler picks
        # from other logits, so only the re-run (same parameters) can judge the answer.
        raw_model = not request.params.reshaped
        memo.score = await score_output(backend, request, text) if raw_model else None
        memo.scored = True
    score = memo.score
    greedy = is_greedy(request.params)
    # A stop string also ends an answer "naturally" where the model would not stop.
    claimed_stop = result.finish_reason == "stop" and not request.params.stop
    if score is not None:
        judged = compare_by_likelihood(text, score, thresholds, greedy=greedy,
                                       claimed_stop=claimed_stop)
        if judged is not None and judged.verdict is Verdict.CONSISTENT:
            return "", judged
    if memo.reference is None:
        memo.reference = await reference_output(backend, request)
    reference = memo.reference
    comparison = compare_outputs(reference, text, thresholds, score=score, greedy=greedy,
                                 claimed_stop=claimed_stop)
    return reference, comparison


class TargetedClient(JobClient):
    """A JobClient that sends its job to one chosen provider and nobody else. With a
    `catalog_source`, the provider's advert (and addresses) come from that host's
    catalog: a fresh check host has heard no adverts of its own."""

    target: str = ""
    catalog_source: NetHost | None = None

    async def candidates(
        self, model: str, *, dht: bool = False, exclude: set[str] | frozenset[str] = frozenset()
    ) -> list[Candidate]:
        source = self.catalog_source
        if source is None:
            found = await super().candidates(model, dht=dht, exclude=exclude)
            return [c for c in found if c.peer_id == self.target]
        for entry in source.catalog.providers(model):
            if entry.peer_id == self.target and entry.peer_id not in exclude:
                self.net.add_peer_addrs(entry.peer_id, entry.advert.advert.listen_addrs)
                [candidate] = await self._scored([self._candidate(entry.advert, model,
                                                                 "catalog")])
                await self._probe_rtts([candidate])
                return [self._with_rtt(candidate)]
        return []


class Verifier:
    """Spot-checks and report handling for one node (see the module docstring)."""

    def __init__(
        self, net: NetHost, identity: NodeIdentity, client: JobClient, *,
        backend: Backend | None, models: frozenset[str], reputation: ReputationBook,
        ledger: Ledger | None, config: VerifyConfig = VerifyConfig(), digests: dict[str, str]
        | None = None, clock_ms: Callable[[], int] = wall_clock_ms,
        rng: random.Random | None = None, gate: EngineGate | None = None,
    ) -> None:
        self.net, self.identity, self.client = net, identity, client
        self.backend, self.models, self.book, self.ledger = backend, models, reputation, ledger
        self.config = config
        self.digests = digests or {}
        self.clock_ms = clock_ms
        self.rng = rng or random.Random()
        self.prompts = prompt_set()
        self.window = ReportWindow()
        #: Re-runs of reported jobs: paid jobs first (the job server's engine is wrapped
        #: in `gate.paid`), a rate per reporter, and a budget of engine time.
        self.gate = gate or EngineGate()
        self.reporter_rate = ReporterRate()
        self.budget = RecheckBudget(now_ms=clock_ms())
        self._judged: dict[bytes, None] = {}  # result hashes re-run, oldest first
        self.results: list[CheckResult] = []  # the last checks this node made (bounded)
        self.report_log: list[tuple[str, str, str]] = []  # (reporter, provider, what we did)
        # The ReputationBook and Ledger connections are shared with the client: same limiter.
        self._db: trio.CapacityLimiter = getattr(client, "_db", trio.CapacityLimiter(1))
        self._pending_reports = 0
        self._nursery: trio.Nursery | None = None
        self._engine = trio.CapacityLimiter(1)  # one reference run at a time
        self._rechecks_send, self._rechecks = trio.open_memory_channel[JobOutcome](16)
        self.slasher: Slasher | None = None  # settlement on: votes to slash stake on chain

    # -- running ---------------------------------------------------------------

    async def run(self) -> None:
        """Subscribe to reports and run the validator / re-check loops until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self.net.subscribe(REPORTS_TOPIC, handler=self._on_gossip)
            if self.backend is not None and self.config.recheck_rate_pm > 0:
                self.client.outcome_hooks.append(self._sample)
                nursery.start_soon(self._recheck_loop)
            if self.config.validator and self.backend is not None:
                nursery.start_soon(self._validator_loop)
            await trio.sleep_forever()  # the nursery stays open for report judgements

    async def _validator_loop(self) -> None:
        while True:
            await trio.sleep(self.rng.expovariate(1 / max(self.config.check_interval_s, 0.01)))
            target = await self.pick_target()
            if target is None:
                continue
            try:
                await self.check_provider(*target)
            except P2PInferError as exc:
                log.info("check job failed provider=%s error=%s", target[0], exc)

    async def pick_target(self) -> tuple[str, str] | None:
        """A (provider, model) to check: peers weighted by their check rate (read from the
        reputation book in its thread; the catalog, on the loop that owns it)."""
        options = [(entry.peer_id, model) for model in sorted(self.models)
                   for entry in self.net.catalog.providers(model)
                   if entry.peer_id != self.net.peer_id]
        if not options:
            return None
        book = self.book
        weights = await book.run(lambda: [max(1, book.check_rate_pm(p)) for p, _ in options])
        return self.rng.choices(options, weights)[0]

    async def check_provider(self, provider: str, model: str) -> CheckResult | None:
        """Send one check job to `provider` and check its answer.

        With `fresh_host` (the default) the job goes out from a libp2p host of its own,
        started for this check under a new key that also signs the request, so the
        provider sees a first-time consumer: neither the connection's PeerID nor the
        request's signer is the validator's."""
        if not self.config.fresh_host:
            client = self._check_client(self.net, self.identity, throwaway_key=True)
            client.target = provider
            return await self._run_check(client, provider, model)
        identity = NodeIdentity.generate()
        host_config = NetConfig(identity, listen_addrs=self.config.check_listen,
                                clock_ms=self.clock_ms)
        async with run_host(host_config) as host:
            client = self._check_client(host, identity, throwaway_key=False)
            client.target, client.catalog_source = provider, self.net
            return await self._run_check(client, provider, model)

    def _check_client(
        self, net: NetHost, identity: NodeIdentity, *, throwaway_key: bool
    ) -> TargetedClient:
        # With settlement on a provider serves only a request whose bound payer's channel
        # covers it (no free job): a check job is paid from this node's channels like any
        # job, the payer account bound to the check's fresh key. The provider then sees
        # the validator's chain account, though not its PeerID (docs/verify.md).
        return TargetedClient(
            net, identity, ledger=None, reputation=None, metrics=self.client.metrics,
            config=replace(self.client.config, throwaway_key=throwaway_key,
                           require_credit=False, max_attempts=1, busy_wait_s=0.0),
            rng=self.rng, payer=self.client.payer)

    async def _run_check(
        self, client: TargetedClient, provider: str, model: str
    ) -> CheckResult | None:
        prompt = self.rng.choice(self.prompts)
        params = JobParams(max_tokens=self.config.check_max_tokens, temperature=0.0, top_k=1,
                           seed=self.rng.randrange(2**32))
        job: NetJob | None = None
        try:
            async with client.job(model, [ChatTurn("user", prompt)], params) as job:
                async for _ in job:
                    pass
            outcome = job.outcome
            assert outcome is not None
        except P2PInferError as exc:
            if job is not None and job.failovers and all(
                    f.code == "busy" for f in job.failovers):
                # A check comes from a fresh key: a provider runs such jobs only on an
                # idle slot and gives the slot to a paying job (net/admission.py).
                log.info("check job refused busy provider=%s", provider)
                return None
            # The check job failed outright: that is a failed job, seen by us.
            await self._record(provider, Outcome.JOB_FAILED, 1000)
            log.info("check job not completed provider=%s error=%s", provider, exc)
            return None
        return await self.recheck(outcome)

    # -- consumer re-checks ----------------------------------------------------

    def _sample(self, outcome: JobOutcome) -> None:
        if outcome.model not in self.models or not outcome.request:
            return
        if self.rng.randrange(1000) < self.config.recheck_rate_pm:
            # Our engine behind: skip this one rather than queue forever.
            with contextlib.suppress(trio.WouldBlock):
                self._rechecks_send.send_nowait(outcome)

    async def _recheck_loop(self) -> None:
        async for outcome in self._rechecks:
            try:
                await self.recheck(outcome)
            except P2PInferError as exc:
                log.warning("re-check failed job=%s error=%s", outcome.job_id, exc)

    async def recheck(self, outcome: JobOutcome) -> CheckResult | None:
        """Re-run a completed job on our engine, compare, record it and publish a report."""
        assert self.backend is not None
        request = decode_as(outcome.request, JobRequest).msg
        claim = decode_as(outcome.result, JobResult).msg
        started = trio.current_time()
        async with self._engine:
            reference, comparison = await judge_answer(
                self.backend, request, claim, outcome.text, self.config.thresholds)
        reference_ms = (trio.current_time() - started) * 1000
        if comparison.verdict is not Verdict.INCONCLUSIVE:
            passed = comparison.verdict.passed
            await self._record(outcome.provider,
                               Outcome.CHECK_PASSED if passed else Outcome.CHECK_FAILED, 1000)
        report = build_report(
            self.identity, request=outcome.request, result=outcome.result,
            provider_output=outcome.text, reference_output=reference,
            reference_digest=self.digests.get(request.model, ""), comparison=comparison,
            now_ms=self.clock_ms())
        log.info("spot-check provider=%s model=%s verdict=%s agreement_pm=%d scored=%d "
                 "greedy_pm=%d mean_logprob_milli=%d tokens=%d reference_ms=%.0f",
                 outcome.provider, outcome.model, comparison.verdict.value,
                 comparison.agreement_pm, comparison.scored_tokens, comparison.greedy_pm,
                 comparison.mean_logprob_milli, outcome.completion_tokens, reference_ms)
        try:
            await self.net.publish(REPORTS_TOPIC, report.raw)
        except Exception as exc:  # gossip is best effort; the local record stands
            log.warning("report not published error=%s", exc)
        result = CheckResult(outcome.provider, outcome.model, comparison, report.raw,
                             reference_ms, outcome.completion_tokens)
        self.results = [*self.results[-499:], result]
        return result

    # -- reports heard ---------------------------------------------------------

    async def _on_gossip(self, message: GossipMessage) -> None:
        # The topic's reader must not wait for a re-run: judge in our own task, a bounded few.
        if self._nursery is None or self._pending_reports >= 32:
            return
        self._pending_reports += 1
        self._nursery.start_soon(self._judge, message.data)

    async def _judge(self, raw: bytes) -> None:
        try:
            await self.receive_report(raw)
        except P2PInferError as exc:
            log.warning("report not judged error=%s", exc)
        except Exception:  # a report is anyone's bytes: judging one must never end the node
            log.exception("report not judged: unexpected error")
        finally:
            self._pending_reports -= 1

    async def receive_report(self, raw: bytes) -> str:
        """Judge one gossiped report; returns what was done (for logs and tests)."""
        opened = try_open(raw, self.clock_ms())
        if opened is None:
            return self._note("?", "?", "ignored: forged or stale")
        me = self.net.peer_id
        if opened.reporter in (me, opened.provider) or opened.provider == me:
            return self._note(opened.reporter, opened.provider, "ignored: own or self-report")
        if opened.verdict != "fail":
            return self._note(opened.reporter, opened.provider, "ignored: not a failure")
        model = opened.evidence.request.msg.model
        if self.backend is not None and model in self.models:
            # We can judge it ourselves: re-run it, or count it not at all.
            return await self._confirm(opened)
        book = self.book
        record, reputation = await trio.to_thread.run_sync(
            lambda: (book.reporter(opened.reporter), book.get(opened.reporter)),
            limiter=self._db)
        weight = reporter_weight_pm(record, reputation)
        if weight == 0:
            return self._note(opened.reporter, opened.provider, "ignored: reporter untrusted")
        if not self.window.admit(opened.reporter, opened.provider, self.clock_ms()):
            return self._note(opened.reporter, opened.provider, "ignored: already counted")
        await self._record(opened.provider, Outcome.CHECK_FAILED, weight)
        return self._note(opened.reporter, opened.provider, f"counted: weight {weight}")

    async def _confirm(self, opened: OpenedReport) -> str:
        """Re-run the reported request ourselves, if it is within our limits, the reporter's
        rate and our engine budget, and no paid job wants the engine; a confirmed failure
        is proven fraud."""
        assert self.backend is not None
        request = opened.evidence.request.msg
        refusal = recheck_refusal(request, self.config.recheck_limits,
                                  opened.report.msg.provider_output)
        if refusal is not None:
            return self._note(opened.reporter, opened.provider,
                              f"not re-checked: over my limits ({refusal})")
        proof = opened.evidence.result.hash
        if proof in self._judged:
            # One proof is judged once and earns one reporter once, however re-signed.
            return self._note(opened.reporter, opened.provider, "ignored: already judged")
        if not self.reporter_rate.admit(opened.reporter, self.clock_ms()):
            return self._note(opened.reporter, opened.provider,
                              "not re-checked: reporter over its rate")
        if not self.budget.available(self.clock_ms()):  # and again once it is our turn
            return self._note(opened.reporter, opened.provider,
                              "not re-checked: re-run budget spent")
        async with self._engine:
            if not self.budget.available(self.clock_ms()):
                return self._note(opened.reporter, opened.provider,
                                  "not re-checked: re-run budget spent")
            used, memo = EngineTime(), JudgeMemo()
            backend = self.backend
            try:
                # One run may overdraw the bucket by RECHECK_MAX_RUN_MS at most (the next
                # re-run then waits until that is paid back); pre-empted attempts keep
                # what they computed, and after RECHECK_MAX_PREEMPTIONS a run may finish.
                _, comparison = await self.gate.run(lambda: judge_answer(
                    backend, request, opened.evidence.result.msg,
                    opened.report.msg.provider_output, self.config.thresholds, memo), used,
                    max_run_s=RECHECK_MAX_RUN_MS / 1000,
                    max_preemptions=RECHECK_MAX_PREEMPTIONS)
            except Preempted as exc:
                return self._note(opened.reporter, opened.provider, f"not re-checked: {exc}")
            finally:  # what the engine spent on it, pre-empted attempts included
                self.budget.charge(used.seconds * 1000, self.clock_ms())
                log.info("re-run charged engine_s=%.2f budget_left_s=%.1f", used.seconds,
                         self.budget.level_ms(self.clock_ms()) / 1000)
        self._judged[proof] = None
        while len(self._judged) > JUDGED_PROOFS:
            del self._judged[next(iter(self._judged))]
        if comparison.verdict is Verdict.INCONCLUSIVE:
            return self._note(opened.reporter, opened.provider, "re-checked: inconclusive")
        if comparison.verdict.passed:
            # The reporter accused an honest answer: that is on the reporter.
            await self._record(opened.reporter, Outcome.CHECK_FAILED, 1000)
            await self._record_report_check(opened.reporter, confirmed=False)
            return self._note(opened.reporter, opened.provider, "re-checked: report was false")
        await self._record(opened.provider, Outcome.CHECK_FAILED, 1000)
        await self._record_report_check(opened.reporter, confirmed=True)
        if self.ledger is not None and self.config.slash_on_fraud:
            await self._slash(opened)
        return self._note(opened.reporter, opened.provider, "re-checked: fraud confirmed")

    async def _slash(self, opened: OpenedReport) -> None:
        advert = self.net.catalog.advert_of(opened.provider)
        if self.slasher is not None:  # the stake that counts is on chain: vote to slash it
            ad = advert.advert if advert is not None else None
            done = await self.slasher.on_fraud(
                opened.provider, ad.payee if ad else None, ad.payee_binding if ad else None,
                opened.report.raw)
            log.info("slash vote provider=%s %s", opened.provider, done)
            return
        amount = advert.advert.stake if advert is not None else 0
        ledger = self.ledger
        assert ledger is not None
        provider_key = public_key_from_peer_id(opened.provider)

        def write() -> None:
            # The hash of the report, not the report: the proof is on gossip and with
            # the reporter; a ledger entry per report must not grow by its size.
            ledger.record_slash(provider_key, amount, reason="spot-check failed, re-checked",
                                evidence=hashlib.sha256(opened.report.raw).digest(),
                                slash_id=opened.evidence.result.hash.hex())

        try:
            await trio.to_thread.run_sync(write, limiter=self._db)
        except P2PInferError as exc:  # DuplicateEntryError: this proof was slashed before
            log.info("slash not recorded provider=%s error=%s", opened.provider, exc)

    async def _record_report_check(self, reporter: str, *, confirmed: bool) -> None:
        book = self.book
        try:
            await trio.to_thread.run_sync(
                lambda: book.record_report_check(reporter, confirmed=confirmed),
                limiter=self._db)
        except P2PInferError as exc:
            log.warning("reporter not updated peer=%s error=%s", reporter, exc)

    async def _record(self, peer_id: str, outcome: Outcome, weight_pm: int) -> None:
        try:
            await trio.to_thread.run_sync(
                lambda: self.book.record(peer_id, outcome, report_weight_pm=weight_pm),
                limiter=self._db)
        except P2PInferError as exc:
            log.warning("reputation not updated peer=%s error=%s", peer_id, exc)

    def _note(self, reporter: str, provider: str, what: str) -> str:
        self.report_log = [*self.report_log[-199:], (reporter, provider, what)]
        log.info("check report reporter=%s provider=%s %s", reporter, provider, what)
        return what

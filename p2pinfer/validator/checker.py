"""Spot-checks over the network: validators, consumer re-checks and report receivers.

`Verifier` runs in the node's nursery (wired by `node/run.py`):

- **validator** (`--validator`): every `check_interval_s` (exponentially
  distributed, so checks are not periodic) it picks a provider of a model its
  own engine serves, biased to peers on probation (`check_rate_pm`), and sends it
  a *check job* that looks like any other: it goes out from a libp2p host started
  for that check under a new key, which also signs the request, so the provider sees
  a first-time consumer (`fresh_host`), through one of the provider's relays when it
  names any (`check_via_relay`: the provider sees the relay's IP address), the
  prompt comes from the shipped prompt set (`prompts.txt`), greedy with a
  random seed. It judges the answer (`verify/judge.py`: its engine's score of the
  text, and a re-run of the signed request unless the score alone passes it;
  `verify/compare.py`), records the check in its ReputationBook (and so the
  breaker) and publishes a signed CheckReport on `p2pinfer/reports/1`.
- **consumer re-checks** (`--recheck-rate`): a sample of this node's own
  completed jobs is re-run the same way when its engine serves the model.
- **receiver** (`verify/report_receiver.py`, mixed into `Verifier`): every node
  judges the reports it hears (`verify/reports.py`):
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
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from typing import TYPE_CHECKING

import trio

from p2pinfer.backends.base import (
    Backend,
)
from p2pinfer.errors import P2PInferError
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.client import JobClient
from p2pinfer.jobs.job_types import Candidate, JobOutcome
from p2pinfer.jobs.net_job import NetJob
from p2pinfer.market.ledger import Ledger
from p2pinfer.net.config import NetConfig, wall_clock_ms
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.relay_rules import behind_nat, is_circuit_addr
from p2pinfer.protocol import (
    REPORTS_TOPIC,
    ChatTurn,
    JobParams,
    JobRequest,
    JobResult,
)
from p2pinfer.protocol.codec import decode_as
from p2pinfer.verify.compare import (
    Comparison,
    Verdict,
)
from p2pinfer.verify.config import VerifyConfig
from p2pinfer.verify.engine_gate import EngineGate
from p2pinfer.verify.judge import judge_answer
from p2pinfer.verify.report_receiver import ReportReceiver
from p2pinfer.verify.reports import (
    build_report,
)
from p2pinfer.verify.reputation import Outcome
from p2pinfer.verify.reputation_store import ReputationBook

if TYPE_CHECKING:
    from p2pinfer.settle.slasher import Slasher

log = logging.getLogger(__name__)

#: How long a check tries the provider's relays before it goes direct instead.
CHECK_RELAY_DIAL_S = 10.0
#: Check jobs a validator runs at once: one provider that accepts and never answers must
#: not hold the loop (attack 78); each check is a host of its own, so a few, not many.
MAX_CHECKS_IN_FLIGHT = 4


def prompt_set() -> tuple[str, ...]:
    """The realistic prompts check jobs are drawn from (`verify/prompts.txt`)."""
    text = resources.files("p2pinfer.verify").joinpath("prompts.txt").read_text("utf-8")
    return tuple(ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))


@dataclass(frozen=True)
class CheckResult:
    """One finished spot-check."""

    provider: str
    model: str
    comparison: Comparison
    report: bytes  # the signed CheckReport as published
    reference_ms: float  # seconds of our engine's time, in ms
    completion_tokens: int


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
        self._config = config
        self.digests = digests or {}
        self.clock_ms = clock_ms
        self.rng = rng or random.Random()
        self.prompts = prompt_set()
        # The ReputationBook and Ledger connections are shared with the client: same limiter.
        self._db: trio.CapacityLimiter = getattr(client, "_db", trio.CapacityLimiter(1))
        self._engine = trio.CapacityLimiter(1)  # one reference run at a time
        #: Gossiped reports are judged by a ReportReceiver that shares the book, the
        #: database limiter and the engine limiter.
        self.reports = ReportReceiver(
            net, backend=backend, models=models, book=reputation, ledger=ledger,
            config=config, clock_ms=clock_ms, gate=gate or EngineGate(), db=self._db,
            engine=self._engine)
        self.results: list[CheckResult] = []  # the last checks this node made (bounded)
        self._rechecks_send, self._rechecks = trio.open_memory_channel[JobOutcome](16)

    @property
    def config(self) -> VerifyConfig:
        """The settings in effect; governance replaces them (the receiver's too)."""
        return self._config

    @config.setter
    def config(self, config: VerifyConfig) -> None:
        self._config = self.reports.config = config

    @property
    def slasher(self) -> Slasher | None:
        """Settlement on: votes to slash stake on chain (the report receiver's)."""
        return self.reports.slasher

    @slasher.setter
    def slasher(self, slasher: Slasher | None) -> None:
        self.reports.slasher = slasher

    @property
    def report_log(self) -> list[tuple[str, str, str]]:
        """(reporter, provider, what was done) for the last reports judged."""
        return self.reports.report_log

    async def receive_report(self, raw: bytes) -> str:
        """Judge one gossiped report (see `ReportReceiver.receive_report`)."""
        return await self.reports.receive_report(raw)

    # -- running ---------------------------------------------------------------

    async def run(self) -> None:
        """Subscribe to reports and run the validator / re-check loops until cancelled."""
        async with trio.open_nursery() as nursery:
            await self.reports.start(nursery)
            if self.backend is not None and self.config.recheck_rate_pm > 0:
                self.client.outcome_hooks.append(self._sample)
                nursery.start_soon(self._recheck_loop)
            if self.config.validator and self.backend is not None:
                nursery.start_soon(self._validator_loop)
            await trio.sleep_forever()  # the nursery stays open for report judgements

    async def _validator_loop(self) -> None:
        # Up to MAX_CHECKS_IN_FLIGHT at once: a provider that accepts a check and never
        # answers holds one of them for its wait, not every check after it (attack 78).
        slots = trio.Semaphore(MAX_CHECKS_IN_FLIGHT)
        async with trio.open_nursery() as nursery:
            while True:
                await trio.sleep(self.rng.expovariate(1 / max(self.config.check_interval_s,
                                                              0.01)))
                target = await self.pick_target()
                if target is None:
                    continue
                await slots.acquire()
                nursery.start_soon(self._check_in_flight, target, slots)

    async def _check_in_flight(self, target: tuple[str, str], slots: trio.Semaphore) -> None:
        try:
            await self.check_provider(*target)
        except P2PInferError as exc:
            log.info("check job failed provider=%s error=%s", target[0], exc)
        finally:
            slots.release()

    async def pick_target(self) -> tuple[str, str] | None:
        """A (provider, model) to check: peers weighted by their check rate, those this
        node excludes (breaker open) left out (read from the reputation book in its
        thread; the catalog, on the loop that owns it)."""
        options = [(entry.peer_id, model) for model in sorted(self.models)
                   for entry in self.net.catalog.providers(model)
                   if entry.peer_id != self.net.peer_id]
        book = self.book
        weights = await book.run(lambda: [book.check_weight_pm(p) for p, _ in options])
        if not any(weights):
            return None
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
            if self.config.check_via_relay:
                await self._through_a_relay(host, provider)
            return await self._run_check(client, provider, model)

    async def _through_a_relay(self, host: NetHost, provider: str) -> None:
        """Connect the check host to a provider behind NAT (`behind_nat`: its advert names
        relays and no public address) through one of its relays, picked at random per
        check, and never dial it directly for this check: neither the provider nor its
        router sees the validator's address, only the relay's. A provider with a public
        address is dialled as consumers dial it; one whose relays do not answer is
        checked over a direct connection (a bogus circuit address must not buy a provider
        freedom from checks). docs/verify.md says what each path still reveals."""
        advert = self.net.catalog.advert_of(provider)
        addrs = advert.advert.listen_addrs if advert is not None else ()
        if not behind_nat(addrs):
            return
        circuits = [a for a in addrs if is_circuit_addr(a)]
        self.rng.shuffle(circuits)
        with trio.move_on_after(CHECK_RELAY_DIAL_S):
            try:
                await host.relay_client.dial(provider, circuits)
            except P2PInferError as exc:
                log.info("no relay reached the provider, checking directly provider=%s "
                         "error=%s", provider, exc)
        if provider in host.peers():
            host.relay_only.add(provider)

    def _check_client(
        self, net: NetHost, identity: NodeIdentity, *, throwaway_key: bool
    ) -> TargetedClient:
        # With settlement on a provider serves only a request whose bound payer's channel
        # covers it (no free job): a check job is paid from this node's channels like any
        # job, the payer account bound to the check's fresh key. The provider then sees
        # the validator's chain account, though not its PeerID (docs/verify.md).
        # A provable overcharge is gossiped from this node's host (a check host is
        # connected to the provider alone); our own receiver convicts it as others do.
        client = TargetedClient(
            net, identity, ledger=None, reputation=None, metrics=self.client.metrics,
            config=replace(self.client.config, throwaway_key=throwaway_key,
                           require_credit=False, max_attempts=1, busy_wait_s=0.0,
                           gossip_charge_proofs=True),
            rng=self.rng, payer=self.client.payer)
        client.proof_net = self.net
        return client

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
                    f.code in ("busy", "slow_to_accept") for f in job.failovers):
                # A check comes from a fresh key: a provider runs such jobs only on an
                # idle slot and gives the slot to a paying job (jobs/admission.py); with
                # settlement a covered check may wait in its queue (attack 76's wait).
                log.info("check job refused busy provider=%s", provider)
                return None
            # The check job failed outright: that is a failed job, seen by us.
            await self.reports.record(provider, Outcome.JOB_FAILED, 1000)
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
            await self.reports.record(outcome.provider,
                               Outcome.CHECK_PASSED if passed else Outcome.CHECK_FAILED, 1000)
        report = build_report(
            self.identity, request=outcome.request, result=outcome.result,
            provider_output=outcome.text, reference_output=reference,
            reference_digest=self.digests.get(request.model, ""), comparison=comparison,
            now_ms=self.clock_ms())
        log.info("spot-check provider=%s model=%s verdict=%s agreement_pm=%d scored=%d "
                 "greedy_pm=%d mean_logprob_milli=%d tokens=%d reference_ms=%.0f%s",
                 outcome.provider, outcome.model, comparison.verdict.value,
                 comparison.agreement_pm, comparison.scored_tokens, comparison.greedy_pm,
                 comparison.mean_logprob_milli, outcome.completion_tokens, reference_ms,
                 f" overclaim={comparison.overclaim!r}" if comparison.overclaim else "")
        try:
            await self.net.publish(REPORTS_TOPIC, report.raw)
        except Exception as exc:  # gossip is best effort; the local record stands
            log.warning("report not published error=%s", exc)
        result = CheckResult(outcome.provider, outcome.model, comparison, report.raw,
                             reference_ms, outcome.completion_tokens)
        self.results = [*self.results[-499:], result]
        return result

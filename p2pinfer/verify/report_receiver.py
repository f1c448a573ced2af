"""The report receiver: every node judges the CheckReports and ChargeProofs it hears on
gossip.

A ChargeProof that checks out (verify/charge_proofs.py) convicts and slashes its
provider on the spot: it is the provider's own signed overcharge. Forged or stale
reports are dropped; a `fail` about a model this node serves is
re-run on its own engine (`verify/judge.py`), within its request limits, the
reporter's rate and an engine-time budget, and only while no paid job wants the
engine (`verify/engine_gate.py`); confirmed fraud is slashed in the ledger (or
voted on chain by the Slasher). A `fail` about a model it does not serve counts by
the weight its reporter earned, or not at all. `Verifier` (`validator/checker.py`)
holds one and shares its reputation book, database limiter and engine limiter.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING

import trio

from p2pinfer.backends.base import Backend
from p2pinfer.bounded import RateLimiter, keep_latest
from p2pinfer.errors import P2PInferError, ProtocolError
from p2pinfer.identity import public_key_from_peer_id
from p2pinfer.market.ledger import Ledger
from p2pinfer.net.gossip import GossipMessage
from p2pinfer.net.nethost import NetHost
from p2pinfer.protocol import REPORTS_TOPIC, ChargeProof, Signed, decode
from p2pinfer.verify.breaker import BreakerState
from p2pinfer.verify.charge_proofs import OpenedProof, ProofJudge, open_charge_proof
from p2pinfer.verify.compare import Verdict
from p2pinfer.verify.engine_gate import EngineGate, EngineTime, Preempted
from p2pinfer.verify.judge import JudgeMemo, judge_answer
from p2pinfer.verify.reports import (
    RECHECK_MAX_PREEMPTIONS,
    RECHECK_MAX_RUN_MS,
    OpenedReport,
    RecheckBudget,
    ReporterRate,
    ReportWindow,
    earns_weight,
    open_report,
    recheck_refusal,
    reporter_weight_pm,
    try_open,
)
from p2pinfer.verify.reputation import Outcome, PeerReputation
from p2pinfer.verify.reputation_store import ReputationBook

if TYPE_CHECKING:
    from collections.abc import Callable

    from p2pinfer.settle.slasher import Slasher
    from p2pinfer.verify.config import VerifyConfig

log = logging.getLogger(__name__)

#: Result hashes of re-run reports remembered, so a proof is re-run (and earns its
#: reporter a confirmation) once: a day of re-runs at the budget's pace is far fewer.
JUDGED_PROOFS = 10_000
#: Messages the topic's validator opened and its handler has not taken yet (the handler
#: takes each at once; those dropped by the 32-judgement bound wait here to be evicted).
ADMITTED_KEPT = 64
#: Judgements running at once, of reports and of charge proofs each; past it the
#: message is dropped (it was delivered and relayed: other nodes judge it).
PENDING_PER_KIND = 32
#: Bytes a peer may forward us on the topic (attack 49): reports and proofs are a few
#: KB (a check job's request and 64-token answer) and a validator sends one every ~10 s,
#: so 256 KiB/s carries a thousand validators' reports through one peer; the burst
#: takes a message of the largest size (1 MiB) and a few more. GossipSub alone let a
#: peer forward 200 messages of 1 MiB a second.
REPORT_BYTES_PER_S = 256 * 1024
REPORT_BURST_BYTES = 4 * 1024 * 1024


Opened = OpenedReport | OpenedProof
"""A report or a charge proof whose signatures, age and evidence checked out."""


def open_gossip(raw: bytes, now_ms: int) -> Opened:
    """`raw` decoded and opened as a CheckReport or a ChargeProof; ProtocolError if it is
    neither, over 24 h old or from the future, or its evidence does not open."""
    signed = decode(raw)
    if isinstance(signed.msg, ChargeProof):
        return open_charge_proof(signed.expect(ChargeProof), now_ms)
    return open_report(signed, now_ms)


def gossip_refusal(raw: bytes, now_ms: int) -> tuple[str, Opened | None]:
    """Why the reports topic must neither deliver nor relay `raw` ("" if it may), with the
    opened message: not a signed CheckReport or ChargeProof, over 24 h old or from the
    future, evidence that does not open, or a proof that proves no overcharge."""
    try:
        opened = open_gossip(raw, now_ms)
    except ProtocolError as exc:
        return type(exc).__name__, None
    if isinstance(opened, OpenedProof) and opened.problem is None:
        return "proves nothing", None
    return "", opened


class ReportReceiver:
    """Judges gossiped reports: the state of that and nothing of the validator's."""

    def __init__(
        self, net: NetHost, *, backend: Backend | None, models: frozenset[str],
        book: ReputationBook, ledger: Ledger | None, config: VerifyConfig,
        clock_ms: Callable[[], int], gate: EngineGate, db: trio.CapacityLimiter,
        engine: trio.CapacityLimiter,
    ) -> None:
        self.net, self.backend, self.models, self.book, self.ledger = (
            net, backend, models, book, ledger)
        self.config, self.clock_ms = config, clock_ms
        self.window = ReportWindow()
        #: Re-runs of reported jobs: paid jobs first (the job server's engine is wrapped
        #: in `gate.paid`), a rate per reporter, and a budget of engine time.
        self.gate = gate
        self.reporter_rate = ReporterRate()
        self.budget = RecheckBudget(now_ms=clock_ms())
        self.report_log: list[tuple[str, str, str]] = []  # (reporter, provider, what we did)
        self.slasher: Slasher | None = None  # settlement on: votes to slash stake on chain
        self._judged: OrderedDict[bytes, None] = OrderedDict()  # results re-run, oldest first
        self.proofs = ProofJudge(net.peer_id,
                                 lambda peer: net.catalog.advert_of(peer) is not None)
        self.dropped: Counter[str] = Counter()  # gossip refused by `admit`, by why
        self.forwarded = RateLimiter(REPORT_BYTES_PER_S, REPORT_BURST_BYTES, max_keys=1024)
        self._admitted: OrderedDict[bytes, Opened] = OrderedDict()
        self._db, self._engine = db, engine  # shared with the validator: one limiter each
        self._pending: Counter[str] = Counter()  # judgements running, by kind
        self._nursery: trio.Nursery | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        """Judge every report heard on the topic from now on, in tasks of `nursery`."""
        self._nursery = nursery
        await self.net.subscribe(REPORTS_TOPIC, validator=self.admit, handler=self._on_gossip)

    def admit(self, message: GossipMessage) -> bool:
        """The topic's validator (attacks 48, 49): deliver and relay only what a peer
        forwards within its byte budget, and of that only a signed CheckReport whose
        evidence opens and that is under 24 h old, or a ChargeProof that proves an
        overcharge; anything else stops here, counted in `dropped` by why."""
        if message.forwarder != self.net.peer_id and self.forwarded.acquire(
                message.forwarder, len(message.data)) > 0:
            self.dropped["over the forwarder's budget"] += 1
            return False
        why, opened = gossip_refusal(message.data, self.clock_ms())
        if opened is None:
            self.dropped[why] += 1
            return False
        # Opened once: the handler takes it rather than checking the signatures again.
        keep_latest(self._admitted, message.data, opened, ADMITTED_KEPT)
        return True

    async def _on_gossip(self, message: GossipMessage) -> None:
        # The topic's reader must not wait for a re-run: judge in our own task, a bounded
        # few of each kind. Reports to re-run wait for the engine in theirs; proofs need
        # no engine, so waiting reports must not take their places.
        opened = self._admitted.pop(message.data, None)
        kind = "proof" if isinstance(opened, OpenedProof) else "report"
        if self._nursery is None or self._pending[kind] >= PENDING_PER_KIND:
            return
        self._pending[kind] += 1
        self._nursery.start_soon(self._judge, message.data, opened, kind)

    async def _judge(self, raw: bytes, opened: Opened | None, kind: str) -> None:
        try:
            await self.receive_report(raw, opened)
        except P2PInferError as exc:
            log.warning("report not judged error=%s", exc)
        except Exception:  # a report is anyone's bytes: judging one must never end the node
            log.exception("report not judged: unexpected error")
        finally:
            self._pending[kind] -= 1

    async def receive_report(self, raw: bytes, opened: Opened | None = None) -> str:
        """Judge one gossiped report or charge proof (`opened`: `raw` already opened by the
        topic's validator); returns what was done (for logs and tests)."""
        if opened is None:
            try:
                signed = decode(raw)
            except ProtocolError:
                return self._note("?", "?", "ignored: forged or stale")
            if isinstance(signed.msg, ChargeProof):
                return await self._charge_proof(signed.expect(ChargeProof))
            opened = try_open(signed, self.clock_ms())
            if opened is None:
                return self._note("?", "?", "ignored: forged or stale")
        if isinstance(opened, OpenedProof):
            return await self._charge_proof(opened)
        me = self.net.peer_id
        if opened.reporter in (me, opened.provider) or opened.provider == me:
            return self._note(opened.reporter, opened.provider, "ignored: own or self-report")
        if opened.verdict != "fail":
            return self._note(opened.reporter, opened.provider, "ignored: not a failure")
        if self.net.catalog.advert_of(opened.provider) is None:
            # A report costs nothing to make about a key of one's own that never
            # advertised (attack 50): no one sends such a provider jobs, so it is worth
            # neither engine time nor a row in the reputation table.
            return self._note(opened.reporter, opened.provider,
                              "not re-checked: provider not in the catalog")
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
        await self.record(opened.provider, Outcome.CHECK_FAILED, weight)
        return self._note(opened.reporter, opened.provider, f"counted: weight {weight}")

    async def _confirm(self, opened: OpenedReport) -> str:
        """Re-run the reported request ourselves, if it is within our limits, the reporter's
        rate and our engine budget, and no paid job wants the engine; a confirmed failure
        is proven fraud."""
        assert self.backend is not None
        request, proof = opened.evidence.request.msg, opened.evidence.result.hash
        book = self.book
        record, reporter, reputation = await trio.to_thread.run_sync(lambda: (
            book.get(opened.provider), book.reporter(opened.reporter),
            book.get(opened.reporter)), limiter=self._db)
        proven = reporter_weight_pm(reporter, reputation) > 0  # attack 73
        refusal = self._refusal(opened, excluded=record.breaker.state is BreakerState.OPEN,
                                proven=proven)
        if refusal is not None:
            return self._note(opened.reporter, opened.provider, refusal)
        async with self._engine:
            spent = self._budget_spent(opened.reporter, proven)
            if spent is not None:
                return self._note(opened.reporter, opened.provider, spent)
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
                self.budget.charge(used.seconds * 1000, self.clock_ms(), opened.reporter)
                log.info("re-run charged engine_s=%.2f budget_left_s=%.1f", used.seconds,
                         self.budget.level_ms(self.clock_ms()) / 1000)
        keep_latest(self._judged, proof, None, JUDGED_PROOFS)
        if comparison.verdict is Verdict.INCONCLUSIVE:
            return self._note(opened.reporter, opened.provider, "re-checked: inconclusive")
        if comparison.verdict.passed:
            # The reporter accused an honest answer: that is on the reporter.
            await self.record(opened.reporter, Outcome.CHECK_FAILED, 1000)
            await self._record_report_check(opened.reporter, confirmed=False)
            return self._note(opened.reporter, opened.provider, "re-checked: report was false")
        await self.record(opened.provider, Outcome.CHECK_FAILED, 1000)
        if await self._had_standing(opened.provider, record):
            await self._record_report_check(opened.reporter, confirmed=True)
        else:  # attack 81: a stranger's fraud may be the reporter's own, made to farm weight
            log.info("reporter earns nothing: provider had no standing here reporter=%s "
                     "provider=%s", opened.reporter, opened.provider)
        if self.ledger is not None and self.config.slash_on_fraud:
            await self._slash(opened.provider, opened.report.raw, opened.evidence.result.hash)
        return self._note(opened.reporter, opened.provider, "re-checked: fraud confirmed")

    def _refusal(self, opened: OpenedReport, *, excluded: bool, proven: bool) -> str | None:
        """Why a report is not re-run (None: it may be, budget allowing): over our limits,
        its proof judged before, its provider already `excluded` here (breaker open: a
        re-run could change nothing), its reporter over its rate, or the budget spent
        (its own share, all of it, or for an unproven reporter all but the proven's
        share; checked again once it is our turn)."""
        refusal = recheck_refusal(opened.evidence.request.msg, self.config.recheck_limits,
                                  opened.report.msg.provider_output)
        if refusal is not None:
            return f"not re-checked: over my limits ({refusal})"
        if opened.evidence.result.hash in self._judged:
            # One proof is judged once and earns one reporter once, however re-signed.
            return "ignored: already judged"
        if excluded:
            return "not re-checked: provider already excluded"
        if not self.reporter_rate.admit(opened.reporter, self.clock_ms()):
            return "not re-checked: reporter over its rate"
        return self._budget_spent(opened.reporter, proven)

    def _budget_spent(self, reporter: str, proven: bool) -> str | None:
        """Why the re-run budget lets no re-run of `reporter`'s start now (None: it does)."""
        if self.budget.share_ms(reporter, self.clock_ms()) <= 0:  # attack 80
            return "not re-checked: reporter's share of the re-run budget spent"
        if not self.budget.available(self.clock_ms(), proven=proven):
            return "not re-checked: re-run budget spent"
        return None

    async def _charge_proof(self, proof: Signed[ChargeProof] | OpenedProof) -> str:
        """A charge proof: checked here, no engine and no reporter weight needed."""
        what, opened = self.proofs.judge(proof, self.clock_ms())
        if opened is None:
            provider = "?" if what.startswith("ignored: forged") else "-"
            signer = proof.reporter if isinstance(proof, OpenedProof) else proof.signer_peer_id
            return self._note(signer, provider, what)
        book, provider = self.book, opened.provider
        try:
            await trio.to_thread.run_sync(book.convict, provider, limiter=self._db)
        except P2PInferError as exc:
            log.warning("reputation not updated peer=%s error=%s", provider, exc)
        if self.ledger is not None and self.config.slash_on_fraud:
            await self._slash(provider, opened.proof.raw, opened.job,
                              "overcharge, proven by a charge proof")
        return self._note(opened.reporter, provider, what)

    async def _slash(self, provider: str, proof_raw: bytes, slash_key: bytes,
                     reason: str = "spot-check failed, re-checked") -> None:
        """Slash `provider` for the proof `proof_raw` (a report of the result, or a charge
        proof of the job, whose hash is `slash_key`: one slash each): a vote on chain
        with settlement, else a ledger entry of the stake this ledger credits the
        provider with (its operator's accepted declarations, less earlier slashes),
        none when that is 0: the advert's stake is
        the provider's word, and an entry of nothing would only grow the ledger."""
        advert = self.net.catalog.advert_of(provider)
        if self.slasher is not None:  # the stake that counts is on chain: vote to slash it
            ad = advert.advert if advert is not None else None
            done = await self.slasher.on_fraud(
                provider, ad.payee if ad else None, ad.payee_binding if ad else None, proof_raw)
            log.info("slash vote provider=%s %s", provider, done)
            return
        ledger = self.ledger
        assert ledger is not None
        provider_key = public_key_from_peer_id(provider)

        def write() -> None:
            amount = ledger.stake_of(provider_key).effective
            if amount == 0:
                return
            # The hash of the proof, not the proof: it is on gossip and with the
            # reporter; a ledger entry per proof must not grow by its size.
            ledger.record_slash(provider_key, amount, reason=reason,
                                evidence=hashlib.sha256(proof_raw).digest(),
                                slash_id=slash_key.hex())

        try:
            await trio.to_thread.run_sync(write, limiter=self._db)
        except P2PInferError as exc:  # DuplicateEntryError: this proof was slashed before
            log.info("slash not recorded provider=%s error=%s", provider, exc)

    async def _had_standing(self, provider: str, before: PeerReputation) -> bool:
        """`earns_weight` for `provider`, its record `before` the conviction and the stake
        this node's ledger credits it with (read only when the record has no history)."""
        if earns_weight(before):
            return True
        if self.ledger is None:
            return False
        ledger, key = self.ledger, public_key_from_peer_id(provider)
        try:
            stake = await trio.to_thread.run_sync(lambda: ledger.stake_of(key).effective,
                                                  limiter=self._db)
        except P2PInferError as exc:
            log.warning("stake not read peer=%s error=%s", provider, exc)
            return False
        return earns_weight(before, stake)

    async def _record_report_check(self, reporter: str, *, confirmed: bool) -> None:
        book = self.book
        try:
            await trio.to_thread.run_sync(
                lambda: book.record_report_check(reporter, confirmed=confirmed),
                limiter=self._db)
        except P2PInferError as exc:
            log.warning("reporter not updated peer=%s error=%s", reporter, exc)

    async def record(self, peer_id: str, outcome: Outcome, weight_pm: int) -> None:
        """Record `outcome` for `peer_id` in the reputation book (in its thread)."""
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

"""Spot-check reports: build a signed CheckReport, and judge one heard on gossip.

No trio, no libp2p: the validator (`validator/checker.py`) and the receivers call these.

A receiver believes a report only as far as it can check it:

- the report must decode, be signed, be younger than 24 h, and its evidence must
  open (`open_evidence`: request and result signed, the result answers the request,
  the requested provider signed it, the provider output hashes to the result's
  `output_hash`); anything else is forged and ignored;
- a reporter never judges itself, and a report about the receiver is ignored;
- a `fail` about a model the receiver serves is re-run on its own engine, or not
  counted at all: only within the receiver's own request limits (`recheck_refusal`:
  the job server's `RequestLimits` and a sampling range), at most `REPORTER_RECHECKS`
  per reporter per `REPORTER_WINDOW_MS` (`ReporterRate`), within a total engine-time
  budget (`RecheckBudget`) and only while no paid job wants the engine
  (`verify/engine_gate.py`). Confirmed, it is proven fraud (a slash entry holding the
  report's sha256) and the reporter earns a confirmation; found false, the reporter
  earns a false report;
- a `fail` the receiver cannot re-run (it does not serve the model) counts only with a
  weight the reporter earned at this receiver (`reporter_weight_pm`: its reports this
  node re-ran and found right, less those it found false), once per (reporter,
  provider) per `REPORT_WINDOW_MS`. Serving jobs well earns no weight: Sybil providers
  that served a consumer well are still unproven reporters, and unproven reporters,
  however many, move nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from p2pinfer.bounded import keep_latest
from p2pinfer.errors import P2PInferError, ProtocolError
from p2pinfer.protocol import CheckReport, JobRequest, Metric, RequestLimits, check_report_age
from p2pinfer.protocol.codec import Evidence, Signed, Signer, decode_as, open_evidence, sign
from p2pinfer.protocol.codec import output_hash as hash_output
from p2pinfer.protocol.validation import check_request
from p2pinfer.verify.breaker import BreakerState
from p2pinfer.verify.compare import Comparison, Verdict
from p2pinfer.verify.reputation import PeerReputation, ReporterRecord

REPORT_WINDOW_MS = 3_600_000  # one unconfirmed report per (reporter, provider) per hour
#: Earned weight per net confirmed report (per mille): one confirmation buys a fifth of
#: the cap, so a reporter needs several checked-and-right reports to count fully.
WEIGHT_PER_CONFIRMED_PM = 100
#: The most an unconfirmed report counts (per mille): even a proven reporter's word is
#: worth half of what the receiver saw itself.
MAX_REPORT_WEIGHT_PM = 500
#: A report found false cancels this many confirmations (lying must cost more than it pays).
FALSE_REPORT_COST = 3
#: Re-runs of sampled requests go up to this temperature: the OpenAI API's own range;
#: above it any model's output is noise, and no check job (greedy) comes near it.
RECHECK_MAX_TEMPERATURE = 2.0
#: An answer of `max_tokens` tokens is at most this many characters per token (English
#: averages about 4): longer, the request could not have produced it, and scoring it
#: would cost engine time in proportion to its length for nothing.
MAX_CHARS_PER_TOKEN = 32
#: The input a re-run evaluates before its first token, in characters (about 250
#: tokens, under a second at SmolLM2's ~300 prompt tokens/s on 2 cores): llama.cpp
#: evaluates a prompt in one go, so a paid job that pre-empts the re-run waits for it.
#: Check jobs' prompts (verify/prompts.txt) are under 100 characters.
RECHECK_MAX_PROMPT_CHARS = 1_000
#: Re-runs per reporter per window: an honest validator reports a few checks a minute
#: (one per `check_interval_s`, 10 s by default); a flood from one key stops here.
REPORTER_RECHECKS = 6
REPORTER_WINDOW_MS = 60_000
#: Engine time re-runs may take, all reporters together: 10 s per minute (a sixth of an
#: idle engine), with 20 s in hand. One re-run may run RECHECK_MAX_RUN_MS and overdraw
#: the bucket by that (the next one then waits until the bucket is positive again), so
#: re-runs average 10 s a minute at most over any span, plus what one run may overdraw.
#: Time is wall time (an engine behind HTTP has no other measure): six nodes sharing two
#: cores in bench/verify.py took 21-25 s for a 64-token re-run that takes 1 s alone.
RECHECK_BUDGET_MS_PER_MIN = 10_000
RECHECK_BURST_MS = 20_000
RECHECK_MAX_RUN_MS = 60_000
#: A re-run pre-empted this many times by paid jobs is let finish its next attempt: on
#: an engine busy every few seconds (check jobs every second across five providers in
#: bench/verify.py) a re-run never fits between paid jobs, and a fraud report that is
#: never confirmed is fraud never excluded. A paid job then waits for one bounded re-run
#: (these limits, RECHECK_MAX_PROMPT_CHARS and the budget) at most.
RECHECK_MAX_PREEMPTIONS = 2
#: A re-run starts only with this much in the bucket: a 64-token check re-run takes
#: about a second on SmolLM2 here; a run cut after 0.1 s is waste.
RECHECK_MIN_START_MS = 1_000
#: The share of the burst kept for reporters with weight here (reports of theirs this node
#: re-ran and confirmed before: honest validators). An unproven reporter starts a re-run
#: only while the bucket holds more than this; fresh keys are free, so a flood of them
#: within every other limit spends the rest, and the proven still find engine time
#: (attack 73). Unproven reporters keep the whole rate: only their burst is halved.
RECHECK_PROVEN_SHARE = 0.5
#: The share of the budget (rate and burst) one reporter's re-runs may take: a reporter
#: proven here, whose reports keep confirming (fraud its own Sybil provider commits on
#: purpose confirms too), could otherwise spend the whole kept half with 6 long re-runs
#: a minute, and the other proven reporters' reports were dropped (attack 80). A
#: reporter may start a re-run while its share is positive; what it took is charged to
#: the share and the bucket both.
RECHECK_REPORTER_SHARE = 0.25
#: Reporters whose share is tracked; the one charged longest ago is forgotten beyond it
#: (a full share again: that takes this many other reporters' re-runs since its last,
#: which the budget spaces out).
RECHECK_REPORTERS_TRACKED = 10_000


def wire_verdict(comparison: Comparison) -> str:
    """The CheckReport verdict for a comparison."""
    if comparison.verdict.passed:
        return "pass"
    return "inconclusive" if comparison.verdict is Verdict.INCONCLUSIVE else "fail"


def metrics_of(comparison: Comparison) -> tuple[Metric, ...]:
    """The comparison's numbers as report metrics (likelihood ones when it was scored)."""
    metrics = (
        Metric("prefix_agreement_permille", comparison.prefix_pm),
        Metric("rest_similarity_permille", comparison.rest_pm),
        Metric("agreement_permille", comparison.agreement_pm),
        Metric("reference_tokens", comparison.reference_tokens),
        Metric("candidate_tokens", comparison.candidate_tokens),
    )
    if comparison.scored_tokens == 0:
        return metrics
    return (
        *metrics,
        Metric("scored_tokens", comparison.scored_tokens),
        Metric("greedy_permille", comparison.greedy_pm),
        Metric("mean_logprob_millinats", comparison.mean_logprob_milli),
        Metric("end_logprob_millinats", comparison.end_logprob_milli),
    )


def build_report(
    signer: Signer, *, request: bytes, result: bytes, provider_output: str,
    reference_output: str, reference_digest: str, comparison: Comparison, now_ms: int,
) -> Signed[CheckReport]:
    """The validator's signed report on one checked job."""
    return sign(
        CheckReport(
            request=request, result=result, provider_output=provider_output,
            reference_output_hash=hash_output(reference_output),
            reference_digest=reference_digest[:128], metrics=metrics_of(comparison),
            verdict=wire_verdict(comparison),  # type: ignore[arg-type]
            issued_at=now_ms,
        ),
        signer,
    )


@dataclass(frozen=True)
class OpenedReport:
    """A report whose signatures and evidence check out."""

    report: Signed[CheckReport]
    evidence: Evidence

    @property
    def reporter(self) -> str:
        return self.report.signer_peer_id

    @property
    def provider(self) -> str:
        return self.evidence.provider

    @property
    def verdict(self) -> str:
        return self.report.msg.verdict


def open_report(raw: bytes | Signed[Any], now_ms: int) -> OpenedReport:
    """Decode (unless decoded) and check a gossiped report; ProtocolError if anything is
    forged or stale, or it is no CheckReport."""
    report = decode_as(raw, CheckReport) if isinstance(raw, bytes) else raw.expect(CheckReport)
    check_report_age(report.msg, now_ms)
    evidence = open_evidence(report.msg)
    return OpenedReport(report, evidence)


def try_open(raw: bytes | Signed[Any], now_ms: int) -> OpenedReport | None:
    """`open_report`, None instead of an error."""
    try:
        return open_report(raw, now_ms)
    except ProtocolError:
        return None


def reporter_weight_pm(record: ReporterRecord, reputation: PeerReputation | None = None) -> int:
    """How much an unconfirmed report from this reporter counts (0..MAX_REPORT_WEIGHT_PM):
    only what it earned by reports this node re-ran and found right, less
    `FALSE_REPORT_COST` for each it found false; 0 while its breaker here is not closed.
    A peer that merely served this node well (`reputation`'s jobs) earns nothing."""
    if reputation is not None and reputation.breaker.state is not BreakerState.CLOSED:
        return 0
    net = record.confirmed - FALSE_REPORT_COST * record.false_reports
    return max(0, min(MAX_REPORT_WEIGHT_PM, net * WEIGHT_PER_CONFIRMED_PM))


def earns_weight(provider: PeerReputation, credited_stake: int = 0) -> bool:
    """Whether confirming fraud by `provider` earns its reporter a confirmation: only if
    the provider had something to lose here before (attack 81). Fraud is free to commit
    on purpose by a fresh provider key of one's own, so a conviction of a stranger
    proves nothing about the reporter; one of a provider that had served this node
    well or passed its checks (`provider`, its record before the conviction), or whose
    stake this node's ledger credits (`credited_stake`, then slashed), does."""
    return provider.jobs_ok + provider.checks_passed > 0 or credited_stake > 0


def recheck_refusal(request: JobRequest, limits: RequestLimits, output: str = "") -> str | None:
    """Why this node will not re-run `request` (None: it may): the limits its job server
    applies to a paid request (prompt size, messages, max_tokens, stop strings, lifetime;
    the time window as of the request's own issue time, since a report comes later), a
    temperature of at most RECHECK_MAX_TEMPERATURE, an input of at most
    RECHECK_MAX_PROMPT_CHARS, and a provider `output` no longer than `max_tokens` ×
    MAX_CHARS_PER_TOKEN characters."""
    try:
        check_request(request, provider_peer_id=request.provider, now_ms=request.issued_at,
                      limits=limits)
    except P2PInferError as exc:
        return str(exc)
    if request.params.temperature > RECHECK_MAX_TEMPERATURE:
        return (f"temperature {request.params.temperature:g} is over "
                f"{RECHECK_MAX_TEMPERATURE:g}")
    chars = sum(len(m.content) for m in request.messages) + len(request.prompt or "") + sum(
        len(text) for text in request.inputs or ())
    if chars > RECHECK_MAX_PROMPT_CHARS:
        return f"an input of {chars} characters is over {RECHECK_MAX_PROMPT_CHARS} for a re-run"
    if request.kind != "embed" and len(output) > request.params.max_tokens * MAX_CHARS_PER_TOKEN:
        return (f"an output of {len(output)} characters is longer than max_tokens "
                f"{request.params.max_tokens} could give")
    return None


class ReporterRate:
    """At most `count` re-runs per reporter per `window_ms` (a fixed window per reporter;
    at `capacity` reporters the expired ones are forgotten, and if none has expired a new
    reporter waits: a flood of fresh keys cannot push memory past `capacity`)."""

    def __init__(self, count: int = REPORTER_RECHECKS, window_ms: int = REPORTER_WINDOW_MS,
                 capacity: int = 10_000) -> None:
        self.count, self.window_ms, self.capacity = count, window_ms, capacity
        self._used: dict[str, tuple[int, int]] = {}  # reporter -> (window start, re-runs)

    def admit(self, reporter: str, now_ms: int) -> bool:
        """True (and count it) when `reporter` may have one more re-run now."""
        start, used = self._used.get(reporter, (now_ms, 0))
        if now_ms - start >= self.window_ms:
            start, used = now_ms, 0
        if used >= self.count:
            return False
        if reporter not in self._used and len(self._used) >= self.capacity:
            cutoff = now_ms - self.window_ms
            self._used = {k: v for k, v in self._used.items() if v[0] > cutoff}
            if len(self._used) >= self.capacity:
                return False
        self._used[reporter] = (start, used + 1)
        return True


class RecheckBudget:
    """Engine time for re-runs, all reporters together: a bucket of `burst_ms` that
    refills at `per_min_ms` a minute. A re-run may start while the bucket is positive and
    is charged what it took afterwards (the bucket can go negative: the next re-run waits
    until it is paid off), so re-runs take at most `per_min_ms` a minute on average.
    Each reporter also has a share of RECHECK_REPORTER_SHARE of the rate and the burst,
    charged alike (`share_ms`)."""

    def __init__(self, per_min_ms: int = RECHECK_BUDGET_MS_PER_MIN,
                 burst_ms: int = RECHECK_BURST_MS, now_ms: int = 0) -> None:
        self.per_min_ms, self.burst_ms = per_min_ms, burst_ms
        self._level = float(burst_ms)
        self._at = now_ms
        # reporter -> (its share's level, when): attack 80
        self._shares: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def _refill(self, level: float, at: int, now_ms: int, part: float) -> float:
        rate = self.per_min_ms * part / 60_000
        return min(self.burst_ms * part, level + max(0, now_ms - at) * rate)

    def level_ms(self, now_ms: int) -> float:
        """What is in the bucket now (negative: overdrawn)."""
        self._level = self._refill(self._level, self._at, now_ms, 1.0)
        self._at = max(self._at, now_ms)
        return self._level

    def share_ms(self, reporter: str, now_ms: int) -> float:
        """What is left of `reporter`'s share now (negative: overdrawn)."""
        level, at = self._shares.get(reporter, (self.burst_ms * RECHECK_REPORTER_SHARE, now_ms))
        return self._refill(level, at, now_ms, RECHECK_REPORTER_SHARE)

    def available(self, now_ms: int, *, proven: bool = True) -> bool:
        """Whether a re-run may start now: at least RECHECK_MIN_START_MS in the bucket
        (less is not worth starting a run that will be cut), above the share kept for
        proven reporters unless the report's reporter is one (`proven`). The reporter's
        own share (`share_ms`) is asked apart."""
        kept = 0.0 if proven else self.burst_ms * RECHECK_PROVEN_SHARE
        return self.level_ms(now_ms) >= RECHECK_MIN_START_MS + kept

    def charge(self, spent_ms: float, now_ms: int, reporter: str | None = None) -> None:
        """Take what a re-run took out of the bucket, and out of `reporter`'s share."""
        self._level = self.level_ms(now_ms) - max(0.0, spent_ms)
        if reporter is not None:
            left = self.share_ms(reporter, now_ms) - max(0.0, spent_ms)
            keep_latest(self._shares, reporter, (left, now_ms), RECHECK_REPORTERS_TRACKED)


class ReportWindow:
    """Remembers which (reporter, provider) pairs already counted an unconfirmed report."""

    def __init__(self, window_ms: int = REPORT_WINDOW_MS, capacity: int = 10_000) -> None:
        self.window_ms = window_ms
        self.capacity = capacity
        self._seen: dict[tuple[str, str], int] = {}

    def admit(self, reporter: str, provider: str, now_ms: int) -> bool:
        """True the first time in the window (and remember it), False after."""
        key = (reporter, provider)
        last = self._seen.get(key)
        if last is not None and now_ms - last < self.window_ms:
            return False
        if len(self._seen) >= self.capacity:
            cutoff = now_ms - self.window_ms
            self._seen = {k: t for k, t in self._seen.items() if t >= cutoff}
        self._seen[key] = now_ms
        return True

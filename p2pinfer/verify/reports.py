"""Spot-check reports: build a signed CheckReport, and judge one heard on gossip.

No trio, no libp2p: the validator (`verify/checker.py`) and the receivers call these.

A receiver believes a report only as far as it can check it:

- the report must decode, be signed, be younger than 24 h, and its evidence must
  open (`open_evidence`: request and result signed, the result answers the request,
  the requested provider signed it, the provider output hashes to the result's
  `output_hash`); anything else is forged and ignored;
- a reporter never judges itself, and a report about the receiver is ignored;
- a `fail` the receiver re-checked itself on its own engine counts as its own
  observation (full weight) and, confirmed, is proven fraud: a slash entry;
- an unconfirmed report counts with the reporter's own score halved, only if the
  reporter has a track record with the receiver (`MIN_TRACK` observations, score at
  least `TRUSTED_PM`), and once per (reporter, provider) per `REPORT_WINDOW_MS`: so a
  peer with no reputation moves nothing, and one liar cannot open a breaker alone
  (one step of weight <= 0.5 takes an honest 0.95 to about 0.86 > 0.70).
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pinfer.errors import ProtocolError
from p2pinfer.protocol import CheckReport, Metric, check_report_age
from p2pinfer.protocol.codec import Evidence, Signed, Signer, decode_as, open_evidence, sign
from p2pinfer.protocol.codec import output_hash as hash_output
from p2pinfer.verify.breaker import BreakerState
from p2pinfer.verify.compare import Comparison, Verdict
from p2pinfer.verify.reputation import PeerReputation

MIN_TRACK = 3  # own observations of a reporter before its reports count at all
TRUSTED_PM = 900  # a reporter's score (per mille) below which its reports count for nothing
REPORT_WINDOW_MS = 3_600_000  # one unconfirmed report per (reporter, provider) per hour


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


def open_report(raw: bytes, now_ms: int) -> OpenedReport:
    """Decode and check a gossiped report; ProtocolError if anything is forged or stale."""
    report = decode_as(raw, CheckReport)
    check_report_age(report.msg, now_ms)
    evidence = open_evidence(report.msg)
    return OpenedReport(report, evidence)


def try_open(raw: bytes, now_ms: int) -> OpenedReport | None:
    """`open_report`, None instead of an error."""
    try:
        return open_report(raw, now_ms)
    except ProtocolError:
        return None


def reporter_weight_pm(reporter: PeerReputation) -> int:
    """How much an unconfirmed report from `reporter` counts (0..500 per mille)."""
    track = reporter.jobs_ok + reporter.checks_passed
    closed = reporter.breaker.state is BreakerState.CLOSED
    if track < MIN_TRACK or reporter.score_pm < TRUSTED_PM or not closed:
        return 0
    return reporter.score_pm // 2


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

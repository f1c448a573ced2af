"""Compare a provider's output with a reference re-run, for spot-checks.

Greedy decoding with a fixed seed repeats on one engine build but drifts
across hardware: honest outputs share a long prefix, then diverge into text
that is still much alike. So the metrics are, on tokens (words and
punctuation, or the engine's token ids when given):

    prefix_pm     = 1000 × longest common prefix / length of the longer output
    rest_pm       = 1000 × difflib ratio of what follows the common prefix
    agreement_pm  = prefix_pm + (1000 − prefix_pm) × rest_pm / 1000

and the verdict: IDENTICAL (same tokens), CONSISTENT (agreement ≥ threshold),
INCONCLUSIVE (they disagree but both are shorter than `min_tokens`: too
little text to accuse anyone), else INCONSISTENT. A candidate that is a strict
prefix of the reference, at least `min_tokens` shorter and covering less than
`truncation_coverage_pm` of it, is INCONSISTENT whatever its agreement: it
stopped early (the `truncate` cheat) rather than drifted. The default thresholds are
provisional: they are to be set from measurements of honest pairs (bench/),
not guessed; pass your own.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from p2pinfer.backends.base import TextScore

PER_MILLE = 1_000
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class Verdict(enum.Enum):
    IDENTICAL = "identical"
    CONSISTENT = "consistent"
    INCONCLUSIVE = "inconclusive"
    INCONSISTENT = "inconsistent"

    @property
    def passed(self) -> bool:
        """Whether the check counts for the provider (INCONCLUSIVE counts for nobody)."""
        return self in (Verdict.IDENTICAL, Verdict.CONSISTENT)


@dataclass(frozen=True)
class CompareThresholds:
    """Where CONSISTENT ends; provisional until calibrated on honest pairs."""

    agreement_pm: int = 600
    min_tokens: int = 8
    #: A candidate that is a strict prefix of the reference but covers less than this
    #: share of it stopped early: honest drift diverges, it does not stop on the same
    #: text while the reference goes on (bench/verify.py: `truncate` scored 764-923).
    truncation_coverage_pm: int = 900
    # -- likelihood: the provider's text scored by the validator's engine (TextScore) --
    #: A provider token whose logit lies within this many milli-nats of the reference's
    #: top logit counts as the reference's own greedy choice (honest numerical drift).
    greedy_gap_milli: int = 1_000
    #: Greedy requests: the share of provider tokens that must be reference-greedy.
    greedy_pm: int = 900
    #: Any request: floor on the mean per-token log probability (milli-nats).
    mean_logprob_milli: int = -3_000
    #: An answer that claims a natural stop: floor on the log probability that the
    #: reference model ends there (the `truncate` cheat stops mid-answer).
    end_logprob_milli: int = -8_000


DEFAULT_THRESHOLDS = CompareThresholds()


@dataclass(frozen=True)
class Comparison:
    """Metrics (per mille, integers) and the verdict for one reference/candidate pair."""

    reference_tokens: int
    candidate_tokens: int
    common_prefix: int
    prefix_pm: int
    rest_pm: int
    agreement_pm: int
    verdict: Verdict
    # Likelihood metrics; scored_tokens 0: the text was not scored.
    scored_tokens: int = 0
    greedy_pm: int = 0
    mean_logprob_milli: int = 0
    end_logprob_milli: int = 0


def likelihood_metrics(score: TextScore, thresholds: CompareThresholds) -> tuple[int, int]:
    """(greedy_pm, mean_logprob_milli) of a scored text: the share of its tokens within
    `greedy_gap_milli` of the reference's top choice, and its mean log probability."""
    n = score.tokens
    if n == 0:
        return 0, 0
    greedy = sum(1 for gap in score.gaps_milli if gap <= thresholds.greedy_gap_milli)
    return greedy * PER_MILLE // n, sum(score.logprobs_milli) // n


def likelihood_verdict(
    score: TextScore, thresholds: CompareThresholds, *, greedy: bool, claimed_stop: bool
) -> Verdict | None:
    """The verdict from the likelihood alone; None when too few tokens were scored to judge.
    Greedy requests must follow the reference's greedy choices (within the drift margin);
    any answer must be likely enough; a claimed natural stop must be a likely end."""
    if score.tokens < thresholds.min_tokens:
        return None
    greedy_pm, mean_logprob = likelihood_metrics(score, thresholds)
    if greedy and greedy_pm < thresholds.greedy_pm:
        return Verdict.INCONSISTENT
    if mean_logprob < thresholds.mean_logprob_milli:
        return Verdict.INCONSISTENT
    if claimed_stop and score.end_logprob_milli < thresholds.end_logprob_milli:
        return Verdict.INCONSISTENT
    return Verdict.CONSISTENT


def tokenize(text: str) -> list[str]:
    """Words and single punctuation marks; whitespace differences do not count."""
    return _TOKEN.findall(text)


def _common_prefix(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def compare_tokens(
    reference: Sequence[Hashable],
    candidate: Sequence[Hashable],
    thresholds: CompareThresholds = DEFAULT_THRESHOLDS,
    *,
    score: TextScore | None = None,
    greedy: bool = True,
    claimed_stop: bool = False,
) -> Comparison:
    """Compare two token sequences (strings or token ids) by the metrics above; with
    `score` (the candidate's text scored by the reference engine), the likelihood
    decides whenever it covers at least `min_tokens` tokens (`likelihood_verdict`)."""
    longest = max(len(reference), len(candidate))
    lcp = _common_prefix(reference, candidate)
    prefix_pm = PER_MILLE if longest == 0 else lcp * PER_MILLE // longest
    rest_ref, rest_cand = reference[lcp:], candidate[lcp:]
    if not rest_ref and not rest_cand:
        rest_pm = PER_MILLE
    else:
        # autojunk off: frequent tokens ("the", ",") must count, not be skipped.
        ratio = difflib.SequenceMatcher(None, rest_ref, rest_cand, autojunk=False).ratio()
        rest_pm = int(ratio * PER_MILLE)
    agreement_pm = prefix_pm + (PER_MILLE - prefix_pm) * rest_pm // PER_MILLE
    truncated = (
        lcp == len(candidate) < len(reference)
        and len(reference) - len(candidate) >= thresholds.min_tokens
        and len(candidate) * PER_MILLE < len(reference) * thresholds.truncation_coverage_pm
    )
    likely = None if score is None else likelihood_verdict(
        score, thresholds, greedy=greedy, claimed_stop=claimed_stop)
    if lcp == len(reference) == len(candidate):
        verdict = Verdict.IDENTICAL
    elif truncated:
        verdict = Verdict.INCONSISTENT
    elif likely is not None:
        verdict = likely
    elif agreement_pm >= thresholds.agreement_pm:
        verdict = Verdict.CONSISTENT
    elif longest < thresholds.min_tokens:
        verdict = Verdict.INCONCLUSIVE
    else:
        verdict = Verdict.INCONSISTENT
    greedy_pm, mean_logprob = (0, 0) if score is None else likelihood_metrics(score, thresholds)
    return Comparison(len(reference), len(candidate), lcp, prefix_pm, rest_pm, agreement_pm,
                      verdict, scored_tokens=0 if score is None else score.tokens,
                      greedy_pm=greedy_pm, mean_logprob_milli=mean_logprob,
                      end_logprob_milli=0 if score is None else score.end_logprob_milli)


def compare_outputs(
    reference: str, candidate: str, thresholds: CompareThresholds = DEFAULT_THRESHOLDS, *,
    score: TextScore | None = None, greedy: bool = True, claimed_stop: bool = False,
) -> Comparison:
    """Compare a reference re-run's text with the provider's text, on `tokenize` tokens
    (and by likelihood with `score`: see `compare_tokens`)."""
    return compare_tokens(tokenize(reference), tokenize(candidate), thresholds, score=score,
                          greedy=greedy, claimed_stop=claimed_stop)

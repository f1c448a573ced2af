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
little text to accuse anyone), else INCONSISTENT. Text with few words but many
characters (one long run of letters, a script written without spaces) is
compared on its non-space characters instead, with `min_tokens` ×
`CHARS_PER_TOKEN` as the bar, so a long garbage answer is never waved through
as "too short to judge". A candidate that is a strict
prefix of the reference, at least `min_tokens` shorter and covering less than
`truncation_coverage_pm` of it, is INCONSISTENT whatever its agreement: it
stopped early (the `truncate` cheat) rather than drifted. The default thresholds are
provisional: they are to be set from measurements of honest pairs (bench/),
not guessed; pass your own.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

PER_MILLE = 1_000
#: Characters that stand for one word token when short-in-words text is compared
#: on characters (about four characters per token in English).
CHARS_PER_TOKEN = 4
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
) -> Comparison:
    """Compare two token sequences (strings or token ids) by the metrics above."""
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
    if lcp == len(reference) == len(candidate):
        verdict = Verdict.IDENTICAL
    elif truncated:
        verdict = Verdict.INCONSISTENT
    elif agreement_pm >= thresholds.agreement_pm:
        verdict = Verdict.CONSISTENT
    elif longest < thresholds.min_tokens:
        verdict = Verdict.INCONCLUSIVE
    else:
        verdict = Verdict.INCONSISTENT
    return Comparison(len(reference), len(candidate), lcp, prefix_pm, rest_pm, agreement_pm,
                      verdict)


def compare_outputs(
    reference: str, candidate: str, thresholds: CompareThresholds = DEFAULT_THRESHOLDS
) -> Comparison:
    """Compare a reference re-run's text with the provider's text, on `tokenize` tokens,
    or on characters when both have fewer than `min_tokens` words but one has at least
    `min_tokens` × `CHARS_PER_TOKEN` non-space characters."""
    ref_words, cand_words = tokenize(reference), tokenize(candidate)
    if max(len(ref_words), len(cand_words)) < thresholds.min_tokens:
        ref_chars = [c for c in reference if not c.isspace()]
        cand_chars = [c for c in candidate if not c.isspace()]
        min_chars = thresholds.min_tokens * CHARS_PER_TOKEN
        if max(len(ref_chars), len(cand_chars)) >= min_chars:
            return compare_tokens(ref_chars, cand_chars,
                                  dataclasses.replace(thresholds, min_tokens=min_chars))
    return compare_tokens(ref_words, cand_words, thresholds)

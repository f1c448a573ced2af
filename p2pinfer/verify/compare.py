"""Compare a provider's output with a reference re-run, for spot-checks.

Greedy decoding with a fixed seed repeats on one engine build, but other engine
settings (flash attention, the KV cache type, another build) change the logits a
little, and at a near-tie the answers part ways for good: measured on SmolLM2,
honest answers of two settings went down to no token in common. Two judges:

- **likelihood** (when the validator's engine can score the provider's text, a
  `TextScore`): an honest greedy answer is, token by token, the reference model's
  own greedy choice up to a small drift margin; a substitute model's is not
  everywhere; garbage is unlikely; a `truncate` cheat claims a stop where the
  model would go on. It decides whenever it can (`likelihood_verdict`).
- **token agreement** (words and punctuation, or the engine's token ids), used
  when the text was not scored or is too short to judge:

    prefix_pm     = 1000 × longest common prefix / length of the longer output
    rest_pm       = 1000 × difflib ratio of what follows the common prefix
    agreement_pm  = prefix_pm + (1000 − prefix_pm) × rest_pm / 1000

  IDENTICAL (same tokens), CONSISTENT (agreement ≥ threshold), INCONCLUSIVE (they
  disagree but both are shorter than `min_tokens`: too little text to accuse
  anyone), else INCONSISTENT; a candidate that is a strict prefix of the reference,
  at least `min_tokens` shorter and covering less than `truncation_coverage_pm` of
  it, is INCONSISTENT (it stopped early rather than drifted).

The default thresholds come from bench/verify_thresholds.py (see CompareThresholds).

Text with few words but many characters (one long run of letters, a script
written without spaces) is compared on its non-space characters instead, with
`min_tokens` × `CHARS_PER_TOKEN` as the bar, so a long garbage answer is never
waved through as "too short to judge".
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from p2pinfer.backends.base import TextScore
from p2pinfer.errors import ValidationError
from p2pinfer.protocol.embedding import decode_vectors

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
    """Where CONSISTENT ends. The defaults come from bench/verify_thresholds.py (SmolLM2,
    102 prompts x 48 tokens, honest pairs from 8 engine settings against substitutes,
    `truncate` and `garbage`; numbers in docs/verify.md)."""

    #: Token agreement, used only when the text could not be scored: honest answers of
    #: engines with other settings (flash attention, KV cache type) went down to 0-127,
    #: so only answers with next to nothing in common fail (substitutes pass it).
    agreement_pm: int = 100
    min_tokens: int = 8
    #: A candidate that is a strict prefix of the reference but covers less than this
    #: share of it stopped early: honest drift diverges, it does not stop on the same
    #: text while the reference goes on (bench/verify.py: `truncate` scored 764-923).
    truncation_coverage_pm: int = 900
    # -- likelihood: the provider's text scored by the validator's engine (TextScore) --
    #: A provider token whose logit lies more than this many milli-nats below the
    #: reference's top logit is "off greedy". Honest drift: 99.9 % of tokens within 335,
    #: at most 1 token per answer beyond 1000; a Q4_0 substitute: 10 % beyond 1287.
    greedy_gap_milli: int = 1_000
    #: Greedy requests fail with at least this many off-greedy tokens *and* a greedy share
    #: below `greedy_pm` (honest: at most 1 off; the count protects short answers, the
    #: share long ones).
    greedy_off_tokens: int = 3
    greedy_pm: int = 980
    #: Any request: floor on the mean per-token log probability (milli-nats). Honest,
    #: sampled at temperature 0.8 included: >= -2075; garbage <= -5459.
    mean_logprob_milli: int = -3_500
    #: An answer that claims a natural stop: floor on the log probability that the
    #: reference model ends there. Honest stops >= -1918; `truncate` cuts <= -6358.
    end_logprob_milli: int = -4_000
    #: Embed jobs: the least cosine similarity (per mille) of each of the provider's
    #: vectors with the re-run's. Honest re-runs of SmolLM2 (other batch sizes and
    #: thread counts) stay above 999; another model gives vectors of another length
    #: or far lower similarity.
    embedding_cosine_pm: int = 990
    #: Token claims (verify/claims.py): a count may exceed our engine's by this share
    #: and, for the prompt, this many tokens (another engine's chat template, a default
    #: system prompt of ~20-30 tokens), for the answer this many (a generation's own
    #: token splits, special tokens that leave no text); the bounds a consumer checks
    #: without a tokenizer allow ~4x.
    claim_slack_pm: int = 250
    prompt_claim_slack: int = 64
    completion_claim_slack: int = 16


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
    # Why the answer's token claims are over our engine's counts ("": they are not).
    overclaim: str = ""


class Likelihood(NamedTuple):
    """A scored text's summary under `CompareThresholds`."""

    greedy_pm: int  # share of tokens within greedy_gap_milli of the reference's top choice
    mean_logprob_milli: int
    off_greedy: int  # tokens farther than greedy_gap_milli from it


def likelihood_metrics(score: TextScore, thresholds: CompareThresholds) -> Likelihood:
    """The greedy share, mean log probability and off-greedy tokens of a scored text."""
    n = score.tokens
    if n == 0:
        return Likelihood(0, 0, 0)
    off = sum(1 for gap in score.gaps_milli if gap > thresholds.greedy_gap_milli)
    return Likelihood((n - off) * PER_MILLE // n, sum(score.logprobs_milli) // n, off)


def likelihood_verdict(
    score: TextScore, thresholds: CompareThresholds, *, greedy: bool, claimed_stop: bool
) -> Verdict | None:
    """The verdict from the likelihood alone, or None to leave it to token agreement.
    Greedy requests must follow the reference's greedy choices (to the drift margin);
    any answer must be likely enough; a claimed natural stop must be a likely end.
    Fewer than `min_tokens` scored tokens are too little to accuse anyone (None); they
    pass only as a whole answer that stops where the reference model would."""
    m = likelihood_metrics(score, thresholds)
    off_greedy = greedy and m.off_greedy >= thresholds.greedy_off_tokens \
        and m.greedy_pm < thresholds.greedy_pm
    failed = off_greedy or m.mean_logprob_milli < thresholds.mean_logprob_milli or (
        claimed_stop and score.end_logprob_milli < thresholds.end_logprob_milli)
    if score.tokens >= thresholds.min_tokens:
        return Verdict.INCONSISTENT if failed else Verdict.CONSISTENT
    if not failed and claimed_stop and score.tokens > 0:
        return Verdict.CONSISTENT
    return None


def compare_by_likelihood(
    candidate: str, score: TextScore, thresholds: CompareThresholds = DEFAULT_THRESHOLDS, *,
    greedy: bool, claimed_stop: bool,
) -> Comparison | None:
    """The comparison of a greedy answer judged by its likelihood alone, with no re-run
    of the request; None when the likelihood cannot judge it (`likelihood_verdict`) or
    the request was sampled (only a re-run with the same seed reproduces a sampled
    answer), and the caller re-runs it and uses `compare_outputs`.

    Where the likelihood can judge, `compare_tokens` lets it decide and uses the
    re-run only to call an exact copy of our own answer IDENTICAL, which passes. So
    a CONSISTENT verdict here is the verdict the re-run would give, and a validator
    can skip ~64 sequential decoding steps per honest answer (the score is one
    batched pass; bench/verify.py measures the cost). An INCONSISTENT one is not
    final: a model with flat distributions (the tests' tiny model) scores even its
    own greedy answer as unlikely, so the caller re-runs to rule out an exact copy.
    `reference_tokens` and the agreement metrics are 0: nothing was re-run."""
    if not greedy:
        return None
    verdict = likelihood_verdict(score, thresholds, greedy=True, claimed_stop=claimed_stop)
    if verdict is None:
        return None
    m = likelihood_metrics(score, thresholds)
    return Comparison(0, len(tokenize(candidate)), 0, 0, 0, 0, verdict,
                      scored_tokens=score.tokens, greedy_pm=m.greedy_pm,
                      mean_logprob_milli=m.mean_logprob_milli,
                      end_logprob_milli=score.end_logprob_milli)


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
    elif likely is not None:  # the likelihood, where it can judge, before any text rule
        verdict = likely
    elif truncated:
        verdict = Verdict.INCONSISTENT
    elif agreement_pm >= thresholds.agreement_pm:
        verdict = Verdict.CONSISTENT
    elif longest < thresholds.min_tokens:
        verdict = Verdict.INCONCLUSIVE
    else:
        verdict = Verdict.INCONSISTENT
    m = Likelihood(0, 0, 0) if score is None else likelihood_metrics(score, thresholds)
    return Comparison(len(reference), len(candidate), lcp, prefix_pm, rest_pm, agreement_pm,
                      verdict, scored_tokens=0 if score is None else score.tokens,
                      greedy_pm=m.greedy_pm, mean_logprob_milli=m.mean_logprob_milli,
                      end_logprob_milli=0 if score is None else score.end_logprob_milli)


def compare_outputs(
    reference: str, candidate: str, thresholds: CompareThresholds = DEFAULT_THRESHOLDS, *,
    score: TextScore | None = None, greedy: bool = True, claimed_stop: bool = False,
) -> Comparison:
    """Compare a reference re-run's text with the provider's text, on `tokenize` tokens
    (and by likelihood with `score`: see `compare_tokens`), or on characters when both
    have fewer than `min_tokens` words but one has at least `min_tokens` ×
    `CHARS_PER_TOKEN` non-space characters."""
    ref_words, cand_words = tokenize(reference), tokenize(candidate)
    if max(len(ref_words), len(cand_words)) < thresholds.min_tokens:
        ref_chars = [c for c in reference if not c.isspace()]
        cand_chars = [c for c in candidate if not c.isspace()]
        min_chars = thresholds.min_tokens * CHARS_PER_TOKEN
        if max(len(ref_chars), len(cand_chars)) >= min_chars:
            return compare_tokens(ref_chars, cand_chars,
                                  dataclasses.replace(thresholds, min_tokens=min_chars),
                                  score=score, greedy=greedy, claimed_stop=claimed_stop)
    return compare_tokens(ref_words, cand_words, thresholds, score=score, greedy=greedy,
                          claimed_stop=claimed_stop)


def compare_embeddings(
    reference: str, candidate: str, count: int,
    thresholds: CompareThresholds = DEFAULT_THRESHOLDS,
) -> Comparison:
    """Compare an embed job's vectors (protocol/embedding.py text) with a re-run's: the
    least cosine similarity over the inputs is `agreement_pm`; CONSISTENT at or above
    `embedding_cosine_pm`, IDENTICAL when the texts are equal, INCONSISTENT otherwise
    (a malformed candidate, or vectors of another length, included)."""
    ref = decode_vectors(reference, count)
    try:
        cand = decode_vectors(candidate, count)
    except ValidationError:
        cand = []
    if len(cand) != len(ref) or any(len(a) != len(b) for a, b in zip(ref, cand, strict=False)):
        least = 0
    else:
        least = min((_cosine_pm(a, b) for a, b in zip(ref, cand, strict=True)), default=1000)
    if reference == candidate:
        verdict = Verdict.IDENTICAL
    elif least >= thresholds.embedding_cosine_pm:
        verdict = Verdict.CONSISTENT
    else:
        verdict = Verdict.INCONSISTENT
    same = PER_MILLE if reference == candidate else 0
    return Comparison(count, len(cand), same and count, same, same, least, verdict)


def _cosine_pm(a: Sequence[float], b: Sequence[float]) -> int:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return max(0, min(PER_MILLE, int(dot / norm * PER_MILLE))) if norm else 0

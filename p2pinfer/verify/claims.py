"""The token counts a provider claims, against our engine's count of the same texts.

A consumer bounds a result's claims without a tokenizer (protocol/charges.py): at most
one token per UTF-8 byte of the prompt and of the answer, plus template overheads. The
engines' tokenizers spend ~4 bytes of English a token, so a provider claiming those
bounds charged ~4x (~10x on a short chat: the bound's 272 template tokens) and no
consumer could tell. A checker has the model: its engine counts the prompt's tokens
(the re-run's or the score's, through the same chat template) and the answer's (the
score's tokenization of the provider's text, or the re-run's count when the re-run
gave the same text). A claim over that count, beyond what another engine's template
or a generation's own token splits explain (`CompareThresholds`: `claim_slack_pm`,
`prompt_claim_slack`, `completion_claim_slack`), is a
lie the provider signed, judged as a wrong answer is (attack 83).
"""

from __future__ import annotations

from dataclasses import replace

from p2pinfer.protocol import JobRequest, JobResult
from p2pinfer.protocol.charges import TOOLS_OVERHEAD, utf8_len
from p2pinfer.verify.compare import CompareThresholds, Comparison, Verdict


def claim_allowed(count: int, slack: int, thresholds: CompareThresholds) -> int:
    """The most tokens an honest engine may claim where ours counts `count`."""
    return count + count * thresholds.claim_slack_pm // 1000 + slack


def overclaim(
    request: JobRequest, result: JobResult, prompt_tokens: int | None,
    completion_tokens: int | None, thresholds: CompareThresholds,
) -> str:
    """Why `result` claims more than our counts allow ("" when it does not, or when a
    count is unknown (None or 0); a `cancelled` result's prompt claim is an estimate
    and is not judged)."""
    slack = thresholds.prompt_claim_slack
    if request.params.tools is not None:  # each engine shows the tools its own way
        slack += TOOLS_OVERHEAD
    if prompt_tokens and result.finish_reason != "cancelled" and (
            result.prompt_tokens > claim_allowed(prompt_tokens, slack, thresholds)):
        return (f"claims {result.prompt_tokens} prompt tokens; our engine counts "
                f"{prompt_tokens}")
    if completion_tokens is not None:
        # Tokens of a stop string are generated, then cut from the text.
        stop = max((utf8_len(s) for s in request.params.stop), default=0)
        allowed = claim_allowed(completion_tokens, thresholds.completion_claim_slack, thresholds)
        if result.completion_tokens > allowed + stop:
            return (f"claims {result.completion_tokens} completion tokens; our engine "
                    f"counts {completion_tokens} in the answer")
    return ""


def with_claims_judged(
    comparison: Comparison, request: JobRequest, result: JobResult,
    prompt_tokens: int | None, completion_tokens: int | None,
    thresholds: CompareThresholds,
) -> Comparison:
    """`comparison`, made INCONSISTENT (`overclaim` saying why) when the answer passed
    and its claims are over our counts."""
    if not comparison.verdict.passed:
        return comparison
    why = overclaim(request, result, prompt_tokens, completion_tokens, thresholds)
    return replace(comparison, verdict=Verdict.INCONSISTENT, overclaim=why) if why else comparison

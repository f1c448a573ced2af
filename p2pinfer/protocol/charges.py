"""The most a job may charge, as a consumer can check it without a tokenizer.

A JobResult's token counts are the provider's claims. The consumer signs a
Receipt only for a charge it can bound from what it knows itself: its own
request and the text it received. Every tokenizer the network's engines use
(byte-level BPE, SentencePiece with byte fallback) spends at least one byte of
text per token, so

    prompt_tokens     <= UTF-8 bytes of the prompt (all message contents, with their
                         tool calls and tool names, and the tools offered)
                         + PROMPT_OVERHEAD_PER_JOB + PROMPT_OVERHEAD_PER_MESSAGE x messages
                         (+ TOOLS_OVERHEAD when tools are offered)
    completion_tokens <= UTF-8 bytes of the output received
                         + the longest stop string's bytes + COMPLETION_ALLOWANCE
                         (and <= max_tokens)

and the charge is at most `charge_for(price, prompt + completion)` at a price of at
most the quote the request carries. An `error` result charges nothing; a `cancelled`
one (the consumer asked to stop: JobCancel) the tokens it counts, as any other.
An honest provider clamps its claims to these bounds (`ProviderJob.finish`), so a
well-behaved job is never refused; a provider that claims more is caught lying
with its own signature (see docs/security/money.md).
"""

from __future__ import annotations

from p2pinfer.protocol.messages import JobRequest, JobResult
from p2pinfer.protocol.wire_types import charge_for

PROMPT_OVERHEAD_PER_JOB = 256
"""Template tokens around the whole prompt: BOS, a default system prompt some chat
templates add (SmolLM2's is ~20 tokens, Llama 3's date header ~30), generation prompt."""
PROMPT_OVERHEAD_PER_MESSAGE = 16
"""Template tokens around each message: role markers, separators, end-of-turn (ChatML
spends 5, Llama 3 about 6; a SentencePiece dummy-prefix token adds 1)."""
COMPLETION_ALLOWANCE = 16
"""Generated tokens that leave no bytes in the text: the end-of-turn token, special
tokens an engine drops, the bytes of a character cut off by max_tokens."""
TOOLS_OVERHEAD = 512
"""Template tokens around the tools offered: the instruction the embedded engine wraps
them in (backends/tools.py: 179 SmolLM2 tokens, and ~10 more a tool for its
`{"type": "function", ...}` wrapper, against the tools' bytes counted as tokens), or a
template's own tool section."""
UNCHARGED_FINISH_REASONS = frozenset({"error"})
"""A result that ended so pays nothing: the consumer did not get what it asked for. A
`cancelled` one pays for what was sent: the consumer asked to stop (attack 66)."""


def utf8_len(text: str) -> int:
    """Bytes of `text` in UTF-8 (a lone surrogate counts 3, as it would be escaped)."""
    return len(text.encode("utf-8", "surrogatepass"))


def prompt_token_bound(request: JobRequest) -> int:
    """The most prompt tokens `request` can take (see the module doc)."""
    if request.kind == "generate":
        return utf8_len(request.prompt or "") + PROMPT_OVERHEAD_PER_JOB + (
            PROMPT_OVERHEAD_PER_MESSAGE)
    if request.kind == "embed":  # each input its own sequence (BOS/EOS around it)
        inputs = request.inputs or ()
        return (sum(utf8_len(text) for text in inputs) + PROMPT_OVERHEAD_PER_JOB
                + PROMPT_OVERHEAD_PER_MESSAGE * len(inputs))
    text = sum(utf8_len(m.content) + utf8_len(m.tool_calls or "") + utf8_len(m.tool_name or "")
               for m in request.messages)
    tools = request.params.tools
    if tools is not None:  # the prompt shows the tools (backends/tools.py)
        text += utf8_len(tools) + TOOLS_OVERHEAD
    return (text + PROMPT_OVERHEAD_PER_JOB
            + PROMPT_OVERHEAD_PER_MESSAGE * len(request.messages))


def prompt_token_estimate(request: JobRequest) -> int:
    """The prompt tokens a `cancelled` result claims when its engine was stopped before
    it counted them: a quarter of the bound (byte-level BPE spends ~4 bytes of English a
    token; the bound's template overheads count too), never over the bound."""
    return -(-prompt_token_bound(request) // 4)


def completion_token_bound(request: JobRequest, output_bytes: int) -> int:
    """The most completion tokens an output of `output_bytes` UTF-8 bytes can have cost
    (an embed job generates none: its output is vectors, protocol/embedding.py)."""
    if request.kind == "embed":
        return 0
    stop = max((utf8_len(s) for s in request.params.stop), default=0)
    return min(request.params.max_tokens, output_bytes + stop + COMPLETION_ALLOWANCE)


def agreed_price(request: JobRequest) -> int:
    """The most the provider may accept at: the advert's quote the consumer chose (or,
    with no quote, its maximum)."""
    quote = request.quoted_price_per_1k
    return request.max_price_per_1k if quote is None else min(quote, request.max_price_per_1k)


def accept_problem(request: JobRequest, price_per_1k: int) -> str | None:
    """What is wrong with an accept of `request` at `price_per_1k`: over the agreed price
    (None: nothing). The consumer refuses such an accept; anyone holding the request and
    the signed accept can check it (verify/charge_proofs.py)."""
    agreed = agreed_price(request)
    if price_per_1k <= agreed:
        return None
    return (f"accepted at {price_per_1k} per 1k, over the max {agreed} the request allows "
            "(its quote, within max_price_per_1k)")


def max_charge(request: JobRequest, price_per_1k: int | None = None) -> int:
    """The most any result of `request` may charge: prompt bound + max_tokens at the agreed
    price (or at `price_per_1k`, the accepted one, when lower)."""
    price = agreed_price(request)
    if price_per_1k is not None:
        price = min(price, price_per_1k)
    completion = 0 if request.kind == "embed" else request.params.max_tokens
    return charge_for(price, prompt_token_bound(request) + completion)


def charge_problem(request: JobRequest, result: JobResult, price_per_1k: int,
                   output_bytes: int) -> str | None:
    """What is wrong with `result`'s claims for `request` at `price_per_1k`, after an
    output of `output_bytes` UTF-8 bytes (None: nothing). The consumer checks a result
    against the price the provider accepted at; anyone holding the request, the result
    and the output can check it against `agreed_price(request)`, which no honest
    provider's accept exceeds (verify/charge_proofs.py)."""
    if result.completion_tokens > request.params.max_tokens:
        return (f"{result.completion_tokens} completion tokens, over max_tokens "
                f"{request.params.max_tokens}")
    prompt_most = prompt_token_bound(request)
    if result.prompt_tokens > prompt_most:
        return f"claims {result.prompt_tokens} prompt tokens; the prompt is at most {prompt_most}"
    completion_most = completion_token_bound(request, output_bytes)
    if result.completion_tokens > completion_most:
        return (f"claims {result.completion_tokens} completion tokens for {output_bytes} "
                f"bytes of output; at most {completion_most}")
    if result.finish_reason in UNCHARGED_FINISH_REASONS and result.charged:
        return f"charged {result.charged} for a result that ended {result.finish_reason!r}"
    most = charge_for(price_per_1k, result.prompt_tokens + result.completion_tokens)
    if result.charged > most:
        return f"charged {result.charged}, more than the price {price_per_1k} per 1k gives {most}"
    cap = max_charge(request, price_per_1k)
    if result.charged > cap:  # implied by the checks above; the last line of defence
        return f"charged {result.charged}, over the job's cap {cap}"
    return None

"""Scoring a given text with llama.cpp (worker-thread side of `EmbeddedBackend.score_*`).

A verifier asks: how does *our* model rate the provider's answer? The prompt is
turned into tokens exactly as a generation would (`PromptCapture`: the same
chat template and special tokens), the answer is tokenized and appended, and
the whole sequence is decoded in `n_batch` chunks with logits kept for every
position from the last prompt token on (teacher forcing: one pass, prompt
speed, no sampling). Per answer token we keep its log probability and how far
its logit lies below the best one (0: the model's own greedy choice); after
the last one, the probability that generation ends there.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Any

from p2pinfer.backends.base import TextScore
from p2pinfer.backends.llama_thread import PromptCapture, PromptCaptured

MILLI = 1000
GAP_CAP_MILLI = 1_000_000  # logit gaps above 1000 nats are all "very far"


def prompt_tokens(llama: Any, kind: str, payload: object) -> list[int]:
    """The tokens a generation of `payload` (chat messages or a raw prompt) starts from."""
    capture = PromptCapture()
    llama.token_hook = capture
    try:
        if kind == "chat":
            chunks = llama.create_chat_completion(messages=payload, max_tokens=1, stream=True)
        else:
            chunks = llama.create_completion(prompt=payload, max_tokens=1, stream=True)
        with contextlib.suppress(PromptCaptured):
            for _ in chunks:
                pass
    finally:
        llama.token_hook = None
    if not capture.tokens:
        raise ValueError("the engine produced no prompt tokens")
    return capture.tokens


def answer_tokens(llama: Any, text: str) -> list[int]:
    """`text`'s tokens as they follow a prompt. SentencePiece vocabularies put a space
    before the start of a text, which a continuation does not have: so tokenize it
    behind a newline and drop the newline's tokens (when they stay apart)."""
    data = text.encode("utf-8")
    head = list(llama.tokenize(b"\n", add_bos=False, special=False))
    both = list(llama.tokenize(b"\n" + data, add_bos=False, special=False))
    if both[: len(head)] == head:
        return both[len(head) :]
    return list(llama.tokenize(data, add_bos=False, special=False))


def end_token_ids(llama: Any) -> list[int]:
    """Every end-of-generation token of the model (end of text, end of turn, ...)."""
    import llama_cpp

    vocab = llama._model.vocab
    return [t for t in range(llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]


# Over 60 lines by design: one decode loop filling llama.cpp's batch and reading its
# logits; its cache state (cleared before and after) must stay in one try/finally.
def score_continuation(
    llama: Any, kind: str, payload: object, continuation: str, end_ids: list[int], *,
    stop: threading.Event | None = None, chunk_tokens: int | None = None,
) -> TextScore | None:
    """How `llama`'s model rates `continuation` as the answer to `payload` (see module doc);
    None when the text cannot be turned back into the model's tokens (it holds U+FFFD, so
    the engine dropped bytes it could not decode, or its tokens do not give the text back)
    or when `stop` was set (checked before each decode of at most `chunk_tokens`).
    ValueError if prompt and answer do not fit in the context."""
    import numpy as np

    answer = answer_tokens(llama, continuation)
    if "\ufffd" in continuation or llama.detokenize(answer) != continuation.encode("utf-8"):
        return None
    prompt = prompt_tokens(llama, kind, payload)
    tokens = prompt + answer
    if len(tokens) > llama.n_ctx():
        raise ValueError(f"prompt and answer ({len(tokens)} tokens) exceed the context")
    first_out = len(prompt) - 1  # the logits there predict the answer's first token
    n_vocab, n_batch = llama.n_vocab(), min(llama.n_batch, chunk_tokens or llama.n_batch)
    ctx, batch = llama._ctx, llama._batch
    logprobs: list[int] = []
    gaps: list[int] = []
    end_logprob = 0
    # Start from an empty cache, and leave it empty: the next generation must not
    # reuse what scoring left behind (cache_prompt or not).
    llama.n_tokens = 0
    ctx.kv_cache_seq_rm(-1, 0, -1)
    try:
        for start in range(0, len(tokens), n_batch):
            if stop is not None and stop.is_set():
                return None
            chunk = tokens[start : start + n_batch]
            raw = batch.batch
            raw.n_tokens = len(chunk)
            for i, token in enumerate(chunk):
                raw.token[i] = token
                raw.pos[i] = start + i
                raw.seq_id[i][0] = 0
                raw.n_seq_id[i] = 1
                raw.logits[i] = start + i >= first_out
            ctx.decode(batch)
            for i in range(len(chunk)):
                pos = start + i
                if pos < first_out:
                    continue
                row = np.ctypeslib.as_array(ctx.get_logits_ith(i), shape=(n_vocab,))
                top = float(row.max())
                norm = top + math.log(float(np.exp(row - top).sum()))
                if pos + 1 < len(tokens):
                    logit = float(row[tokens[pos + 1]])
                    logprobs.append(round((logit - norm) * MILLI))
                    gaps.append(min(GAP_CAP_MILLI, round((top - logit) * MILLI)))
                elif end_ids:
                    ends = row[end_ids]
                    end_top = float(ends.max())
                    end_norm = end_top + math.log(float(np.exp(ends - end_top).sum()))
                    end_logprob = round((end_norm - norm) * MILLI)
    finally:
        ctx.kv_cache_seq_rm(-1, 0, -1)
        llama.n_tokens = 0
        llama._requires_eval = True
    return TextScore(tuple(logprobs), tuple(gaps), end_logprob, prompt_tokens=len(prompt))

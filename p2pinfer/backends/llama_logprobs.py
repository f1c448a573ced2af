"""Per-token log probabilities in the embedded engine, read where the token is sampled.

When the token hook hears a token, the context still holds the logits it was sampled
from (one row: llama.cpp keeps only the last position's without `logits_all`), so the
log-softmax of that row gives the token's log probability and its likeliest rivals at
no extra decoding. These are the model's own probabilities (before temperature,
penalties or a grammar), as Ollama and OpenAI report them.
"""

from __future__ import annotations

from typing import Any

from p2pinfer.backends.base import TokenLogprob


def token_logprob(llama: Any, token: int, top: int) -> TokenLogprob:
    """`token`'s log probability at the last decoded position, with the `top` likeliest."""
    import llama_cpp
    import numpy as np

    n_vocab = llama.n_vocab()
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama._ctx.ctx, -1),
                                   shape=(n_vocab,)).astype(np.float64)
    peak = logits.max()
    log_total = peak + np.log(np.exp(logits - peak).sum())
    best: list[int] = []
    if top > 0:
        part = np.argpartition(-logits, min(top, n_vocab) - 1)[:top]
        best = [int(t) for t in part[np.argsort(-logits[part])]]

    def piece(t: int) -> str:
        return bytes(llama.detokenize([t])).decode("utf-8", errors="replace")

    return TokenLogprob(piece(token), float(logits[token] - log_total),
                        tuple((piece(t), float(logits[t] - log_total)) for t in best))

"""Token log probabilities between the engine's floats and the wire's integers.

The wire carries them in millionths of a nat (protocol.messages.TokenLogprobs), token
texts cut to 64 characters; a chunk carries at most MAX_CHUNK_LOGPROBS of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from p2pinfer.backends.base import TokenLogprob
from p2pinfer.protocol.messages import MAX_CHUNK_LOGPROBS, LogprobRival, TokenLogprobs

_FLOOR = -(10**12)


def _micro(logprob: float) -> int:
    return max(_FLOOR, min(0, round(logprob * 1_000_000)))


def to_wire(item: TokenLogprob, top: int) -> TokenLogprobs:
    """The wire form of an engine's token log probability, with at most `top` rivals."""
    return TokenLogprobs(item.token[:64], _micro(item.logprob),
                         tuple(LogprobRival(t[:64], _micro(lp)) for t, lp in item.top[:top]))


def from_wire(items: Sequence[TokenLogprobs]) -> tuple[TokenLogprob, ...]:
    """The engine-side form of a chunk's log probabilities."""
    return tuple(TokenLogprob(i.token, i.logprob_micro / 1_000_000,
                              tuple((r.token, r.logprob_micro / 1_000_000) for r in i.top))
                 for i in items)


def batches(items: Sequence[TokenLogprobs]) -> list[tuple[TokenLogprobs, ...]]:
    """`items` cut into chunk-sized groups."""
    return [tuple(items[i:i + MAX_CHUNK_LOGPROBS])
            for i in range(0, len(items), MAX_CHUNK_LOGPROBS)]

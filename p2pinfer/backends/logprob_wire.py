"""Token log probabilities in each API's shape (pure).

Ollama (v0.12.11+) and OpenAI chat: a list of `{"token", "logprob", "bytes",
"top_logprobs": [{"token", "logprob", "bytes"}]}`; OpenAI's legacy completions:
`{"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from p2pinfer.backends.base import TokenLogprob


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def token_entries(items: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    """Ollama's `logprobs` list, also OpenAI chat's `logprobs.content`."""
    return [{**_entry(i.token, i.logprob),
             "top_logprobs": [_entry(t, lp) for t, lp in i.top]} for i in items]


def legacy(items: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    """OpenAI completions' `logprobs` object for `items`, the first at text `offset`."""
    offsets = []
    for item in items:
        offsets.append(offset)
        offset += len(item.token)
    return {"tokens": [i.token for i in items],
            "token_logprobs": [i.logprob for i in items],
            "top_logprobs": [dict(i.top) for i in items],
            "text_offset": offsets}


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
        return float(value)
    return None


def parse_entries(value: object) -> tuple[TokenLogprob, ...]:
    """An engine's Ollama/OpenAI-chat `logprobs` list; () where it is missing or malformed
    (log probabilities are an extra: a bad one never fails the answer)."""
    if not isinstance(value, list):
        return ()
    out = []
    for entry in value:
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            return ()
        logprob = _number(entry.get("logprob"))
        if logprob is None:
            return ()
        rivals = entry.get("top_logprobs")
        top = tuple((r["token"], lp) for r in (rivals if isinstance(rivals, list) else [])
                    if isinstance(r, dict)
                    and isinstance(r.get("token"), str)
                    and (lp := _number(r.get("logprob"))) is not None)
        out.append(TokenLogprob(entry["token"], logprob, top))
    return tuple(out)


def parse_legacy(value: object) -> tuple[TokenLogprob, ...]:
    """An engine's OpenAI-completions `logprobs` object; () where missing or malformed."""
    if not isinstance(value, dict):
        return ()
    tokens, logprobs = value.get("tokens"), value.get("token_logprobs")
    tops = value.get("top_logprobs") or []
    if not (isinstance(tokens, list) and isinstance(logprobs, list) and isinstance(tops, list)
            and len(tokens) == len(logprobs)):
        return ()
    out = []
    for i, (token, raw) in enumerate(zip(tokens, logprobs, strict=True)):
        logprob = _number(raw)
        if not isinstance(token, str) or logprob is None:
            return ()
        rivals = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        top = tuple(sorted(((t, lp) for t, v in rivals.items() if isinstance(t, str)
                            and (lp := _number(v)) is not None), key=lambda r: -r[1]))
        out.append(TokenLogprob(token, logprob, top))
    return tuple(out)

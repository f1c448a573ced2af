"""Deliberate provider misbehaviour, for tests and demos of failover and verification.

Off by default. A node started with `--fault KIND` logs a WARNING at start and on
every job it spoils, so nobody runs one by accident without noticing.

| kind | what the provider does |
| --- | --- |
| `substitute-model=NAME` | runs NAME under the advertised model's name (and digest) |
| `truncate` | stops after half of max_tokens, claims a natural stop, bills max_tokens |
| `garbage` | replaces every token's text by random letters of the same length |
| `crash-after=N` | the whole process exits (`os._exit`) once N tokens are on the wire |
| `slow=MS` | waits MS milliseconds before passing on each token |
| `inflate` | answers honestly, claims the most tokens a consumer's checks allow |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from p2pinfer.errors import UsageError

FaultKind = Literal["substitute-model", "truncate", "garbage", "crash-after", "slow", "inflate"]
FAULT_KINDS: tuple[str, ...] = ("substitute-model", "truncate", "garbage", "crash-after", "slow",
                                "inflate")
FAULT_HELP = "substitute-model=NAME | truncate | garbage | crash-after=N | slow=MS | inflate"


@dataclass(frozen=True)
class Fault:
    """One injected fault. `model` is set for substitute-model, `count` for crash-after
    (tokens) and slow (milliseconds per token)."""

    kind: FaultKind
    model: str = ""
    count: int = 0

    def __str__(self) -> str:
        if self.kind == "substitute-model":
            return f"substitute-model={self.model}"
        if self.kind in ("crash-after", "slow"):
            return f"{self.kind}={self.count}"
        return self.kind


def parse_fault(text: str) -> Fault:
    """A Fault from `--fault` text; UsageError naming the accepted forms otherwise."""
    kind, sep, arg = text.strip().partition("=")
    kind = kind.strip().lower()
    arg = arg.strip()
    if kind in ("truncate", "garbage", "inflate") and not sep:
        return Fault(kind)  # type: ignore[arg-type]
    if kind == "substitute-model" and arg:
        return Fault("substitute-model", model=arg)
    if kind in ("crash-after", "slow") and arg.isdigit():
        count = int(arg)
        if kind == "crash-after" and count < 1:
            raise UsageError("bad --fault crash-after=N: N must be at least 1")
        return Fault(kind, count=count)  # type: ignore[arg-type]
    raise UsageError(f"bad --fault {text!r}: use {FAULT_HELP}")

"""One attempt of a consumer's job on one provider (`NetJob`, `net/net_job.py`, runs
them one after another): its state, how it fails, and which rejects are nobody's fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pinfer.net.job_types import Candidate
from p2pinfer.net.streams import NetStream
from p2pinfer.protocol import ConsumerJob
from p2pinfer.protocol.messages import TokenLogprobs

# Rejects that say nothing bad about the provider: it is full, dearer than we pay,
# or does not serve the model; or the fault is ours (clock, replay, binding).
NEUTRAL_CODES = frozenset({"busy", "price_too_low", "unknown_model", "insufficient_credit",
                           "insufficient_stake", "expired", "replayed", "wrong_provider",
                           "over_limits"})


@dataclass
class Attempt:
    """One provider's try at a job: its stream, protocol machine and what it sent."""

    candidate: Candidate
    stream: NetStream
    machine: ConsumerJob
    text: str = ""
    caught_up: bool = False  # all its text beyond what was delivered has been delivered
    accepted: bool = False
    chunks: int = 0
    payee: str | None = None  # settlement: the provider's chain account (its JobAccept)
    # Token log probabilities received (bounded by ConsumerJob: max_tokens + allowance).
    logprobs: list[TokenLogprobs] = field(default_factory=list)


class AttemptFailed(Exception):
    """An attempt ended without a result; `blame` counts it against the provider."""

    def __init__(self, reason: str, code: str | None = None, *, blame: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.blame = blame

"""How much a node checks (`VerifyConfig`): below the validator (validator/checker.py)
and the report receiver (verify/report_receiver.py), which both read it."""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pinfer.protocol import RequestLimits
from p2pinfer.verify.compare import DEFAULT_THRESHOLDS, CompareThresholds


@dataclass(frozen=True)
class VerifyConfig:
    """How much this node checks. Rates per mille; seconds as floats."""

    validator: bool = False
    check_interval_s: float = 10.0  # mean time between a validator's check jobs
    check_max_tokens: int = 64
    recheck_rate_pm: int = 0  # share of this node's own jobs it re-runs (consumers)
    thresholds: CompareThresholds = DEFAULT_THRESHOLDS
    slash_on_fraud: bool = True
    #: Send each check job from a libp2p host started for it under a new key, so the
    #: provider cannot tell a check from a first-time consumer by PeerID. Off: the
    #: validator's own connection carries it, signed by a throwaway key.
    fresh_host: bool = True
    #: With `fresh_host`: reach a provider behind NAT through one of its relays, picked at
    #: random per check, never by a direct dial, so neither it nor its router sees the
    #: validator's IP address (validator/checker.py; what still leaks: docs/verify.md).
    check_via_relay: bool = True
    check_listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    #: What a reported request may ask of our engine to be re-run: the job server's
    #: limits on a paid request (node/run.py passes the job server's own).
    recheck_limits: RequestLimits = field(default_factory=RequestLimits)

"""The node's Prometheus metrics, in one registry per node.

A registry per node (not prometheus_client's global one) lets several nodes
run in one process, as the integration tests do. The job server, the consumer
client and the verifier update these; the gateway serves them at /metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass
class NodeMetrics:
    """Every metric a node exports. `role` is `provider` or `consumer`."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.jobs = Counter(
            "p2pinfer_jobs", "Jobs by role and outcome", ["role", "outcome"], registry=r
        )
        self.tokens = Counter(
            "p2pinfer_tokens", "Tokens processed by role and kind", ["role", "kind"], registry=r
        )
        self.job_seconds = Histogram(
            "p2pinfer_job_seconds", "Job wall time", ["role"], buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft_seconds = Histogram(
            "p2pinfer_time_to_first_token_seconds", "Time to first token", ["role"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.job_moves = Counter(
            "p2pinfer_job_moves",
            "Tries to move a relayed job onto a direct connection: moved, refused, failed",
            ["role", "outcome"], registry=r,
        )
        self.job_move_refusals = Counter(
            "p2pinfer_job_move_refusals", "Move requests this provider refused, by reason",
            ["reason"], registry=r,
        )
        self.failovers = Counter(
            "p2pinfer_failovers", "Jobs retried with another provider", registry=r
        )
        self.peers = Gauge("p2pinfer_peers", "Connected libp2p peers", registry=r)
        self.catalog_providers = Gauge(
            "p2pinfer_catalog_providers", "Providers in the advert catalog", registry=r
        )
        self.replay_ids = Gauge(
            "p2pinfer_replay_window_ids", "Job ids the provider's replay window holds",
            registry=r,
        )
        self.checks = Counter(
            "p2pinfer_checks", "Spot-checks by verdict", ["verdict"], registry=r
        )
        self.breaker_openings = Counter(
            "p2pinfer_breaker_openings", "Circuit breaker openings", registry=r
        )
        self.charge_proofs = Counter(
            "p2pinfer_charge_proofs", "Overcharges this node proved to the network", registry=r
        )
        self.balance = Gauge(
            "p2pinfer_balance_microcredits", "This node's ledger balance", registry=r
        )
        self.charged = Counter(
            "p2pinfer_charged_microcredits", "Micro-credits charged by role", ["role"],
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of this node's registry."""
        return bytes(generate_latest(self.registry))

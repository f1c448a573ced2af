"""What a `NetJob` (jobs/net_job.py) uses of the client that made it: `JobRunner`.

`JobClient` (jobs/client.py) is the one implementation; it builds NetJobs, so the
job names this interface instead of importing the class (no client <-> job cycle).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from p2pinfer.identity import NodeIdentity
    from p2pinfer.jobs.job_types import Candidate, ClientConfig, JobOutcome
    from p2pinfer.metrics import NodeMetrics
    from p2pinfer.net.nethost import NetHost
    from p2pinfer.protocol import ConsumerJob
    from p2pinfer.settle.payer import PayerBook


class JobRunner(Protocol):
    """Candidates, reputation and charging, as one job's attempts need them."""

    net: NetHost
    payer: PayerBook | None
    identity: NodeIdentity
    metrics: NodeMetrics
    config: ClientConfig
    clock_ms: Callable[[], int]
    outcome_hooks: list[Callable[[JobOutcome], None]]

    async def candidates(
        self, model: str, *, dht: bool = False, exclude: set[str] | frozenset[str] = frozenset()
    ) -> list[Candidate]: ...

    def order_for_job(self, ranked: list[Candidate]) -> list[Candidate]: ...

    def mark_unreachable(self, peer_id: str) -> None: ...

    def mark_too_slow(self, peer_id: str) -> None: ...

    async def allow(self, peer_id: str) -> bool: ...

    async def observe(self, peer_id: str, *, ok: bool, blame: bool) -> None: ...

    def observe_pace(self, peer_id: str, model: str, tokens: int, seconds: float) -> None: ...

    async def refuse_charge(
        self, candidate: Candidate, machine: ConsumerJob, error: Exception, output: str = ""
    ) -> None: ...

    async def record_charge(
        self, model: str, candidate: Candidate, machine: ConsumerJob, *, delivered: bool
    ) -> int: ...

"""What the gateway needs from a running node: `NodeView`, and the snapshots it returns.

The node implements `NodeView` over its live parts (host, catalog, job server,
consumer client, ledger, reputation table); the gateway only reads. Snapshots
are frozen dataclasses of plain values, so the admin endpoints serialise them
as they are: money in integer micro-credits, time in integer milliseconds
(Unix epoch for instants), speeds in tokens per second.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from p2pinfer.backends.base import Backend
from p2pinfer.gov.status import GovernanceView
from p2pinfer.market.kpis import CatalogCounts, LiveKPIs
from p2pinfer.metrics import NodeMetrics

JobRole = Literal["consumer", "provider"]
JobState = Literal["running", "done", "failed"]
BreakerStateName = Literal["closed", "open", "half_open"]
Reachability = Literal["public", "private", "unknown"]


@dataclass(frozen=True)
class GpuView:
    name: str
    vram_mb: int


@dataclass(frozen=True)
class HardwareView:
    """A machine as its advert describes it."""

    cpu: str
    cpu_cores: int
    ram_mb: int
    gpus: tuple[GpuView, ...] = ()


@dataclass(frozen=True)
class RelayView:
    """This node's part in Circuit Relay v2 (docs/network.md, "Reachability: relays")."""

    serving: bool  # relays for others now
    reservations: int  # slots peers hold here
    circuits: int  # relayed connections open through this node
    refusals: dict[str, int]  # reservations and circuits refused, by reason
    slots: tuple[str, ...]  # this node's own circuit addresses (slots it holds at relays)
    dcutr_upgrades: int  # relayed connections this node moved to direct ones


@dataclass(frozen=True)
class NodeInfo:
    """This node: identity, where it listens, what it serves, on what, for how long."""

    peer_id: str
    addrs: tuple[str, ...]
    models: tuple[str, ...]  # served by this node as a provider; empty for a consumer only
    hardware: HardwareView
    uptime_ms: int
    version: str
    engine: str = ""  # the backend kind it serves with, e.g. "llama.cpp", "ollama"
    # Whether other peers can dial this node (AutoNAT, docs/network.md "Reachability").
    reachability: Reachability = "unknown"
    relay: RelayView | None = None
    # "server": it answers DHT queries; "client": it only asks (while AutoNAT says private).
    dht_mode: str = "server"


@dataclass(frozen=True)
class PeerView:
    """A connected libp2p peer, with what its advert says if it sent one."""

    peer_id: str
    addrs: tuple[str, ...]
    models: tuple[str, ...] = ()
    hardware: HardwareView | None = None
    stake_declared: int | None = None  # what its advert claims (micro-credits)
    # Settlement on: its bound payee account and the stake that account holds on chain
    # (0 when unread, unbound or wrongly bound); None without a chain.
    stake_on_chain: int | None = None
    payee: str | None = None
    # Whether it can be dialled, as this node saw it (a dial-back it asked us for, or a
    # connection we dialled): public, private or unknown.
    reachability: Reachability = "unknown"


@dataclass(frozen=True)
class CatalogEntry:
    """One provider of one model in the advert catalog, with this node's view of it."""

    model: str
    provider: str  # peer id
    price_per_1k: int  # micro-credits per 1000 tokens
    tokens_per_s: float  # the provider's measured generation speed
    hardware: HardwareView
    reputation_pm: int | None  # per mille, None when this node has no record yet
    breaker: BreakerStateName
    expires_at_ms: int
    quantization: str = ""
    parameter_size: str = ""
    context_length: int = 0


@dataclass(frozen=True)
class JobView:
    """A job this node ran as consumer (through the network) or as provider."""

    job_id: str  # hex
    role: JobRole
    model: str
    provider: str  # peer id ("" before one accepted)
    state: JobState
    prompt_tokens: int
    completion_tokens: int
    tokens_per_s: float  # generation speed so far (running) or overall (done)
    charged: int  # micro-credits (0 until the result arrives)
    started_at_ms: int
    finished_at_ms: int | None = None
    error: str = ""


@dataclass(frozen=True)
class JobsSnapshot:
    live: tuple[JobView, ...]  # running now
    recent: tuple[JobView, ...]  # finished, newest first, bounded by the node


@dataclass(frozen=True)
class LedgerPoint:
    """The ledger after one entry: balance and running totals earned and spent."""

    at_ms: int
    balance: int
    earned: int
    spent: int


@dataclass(frozen=True)
class LedgerSummary:
    """This node's account in its own ledger, in micro-credits."""

    balance: int
    earned: int
    spent: int
    series: tuple[LedgerPoint, ...]  # oldest first


@dataclass(frozen=True)
class ReputationRow:
    """This node's record of one peer (see verify.reputation)."""

    peer_id: str
    score_pm: int
    jobs_ok: int
    jobs_failed: int
    checks_passed: int
    checks_failed: int
    breaker: BreakerStateName
    probation: bool
    updated_ms: int


@dataclass(frozen=True)
class JobMeta:
    """Which provider serves a job through the network backend, and what it cost."""

    provider: str  # peer id
    job_id: str  # hex
    charged: int | None = None  # micro-credits; None until the provider's result arrived
    failovers: int = 0  # providers that failed this request before this one
    price_per_1k: int | None = None  # micro-credits per 1k tokens the provider accepted
    path: str | None = None  # `direct`, `relayed` (Circuit Relay v2) or `moved` off it


def catalog_counts(entries: Sequence[CatalogEntry]) -> CatalogCounts:
    """Providers in a catalog and their capacity: each provider's fastest advertised model
    (a provider generates for one model at a time, so its speeds do not add up)."""
    fastest: dict[str, float] = {}
    for entry in entries:
        fastest[entry.provider] = max(fastest.get(entry.provider, 0.0), entry.tokens_per_s)
    return CatalogCounts(len(fastest), int(sum(fastest.values())))


class NodeView(Protocol):
    """The gateway's read-only window on a running node.

    The async methods return snapshots and must not block the event loop for long
    (the dashboard polls them every second or two). `backend` is the network
    backend: the `Backend` interface over the network, with failover.
    """

    @property
    def metrics(self) -> NodeMetrics:
        """The node's Prometheus registry and metrics."""
        ...

    @property
    def backend(self) -> Backend:
        """Every API job goes through this backend."""
        ...

    @property
    def governance(self) -> GovernanceView | None:
        """The node's governance (None: the node runs without it)."""
        ...

    async def node_info(self) -> NodeInfo: ...

    async def peers(self) -> Sequence[PeerView]: ...

    async def catalog(self) -> Sequence[CatalogEntry]: ...

    async def jobs(self) -> JobsSnapshot: ...

    async def ledger(self) -> LedgerSummary: ...

    async def reputation(self) -> Sequence[ReputationRow]: ...

    async def kpis(self) -> LiveKPIs:
        """The sustainability KPIs over this node's ledger and catalog (market.kpis.ledger_kpis)."""
        ...

    def track_job(self) -> Callable[[], JobMeta | None]:
        """Start following the job of the API request being served; return its reader.

        Called at the start of each API request, in the task that will call
        `backend.chat()`/`generate()`, before it does (the node sets its network
        backend's per-request metadata slot here, e.g. a ContextVar). The reader
        tells what is known so far: None before a provider accepted; `charged`
        once the provider's result arrived. The gateway reads it when the reply
        starts: at the first token when streaming, after the last one otherwise.
        """
        ...

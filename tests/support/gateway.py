"""A `FakeNodeView` with canned node state and a scripted network backend, for gateway tests.

The fake backend behaves as the network backend does at the interface: it lists
the catalog's models, streams a script of events, and fills the job's metadata
(provider, job id; the charge once the result arrived) into the slot the caller
put in a ContextVar, as `jobs.network_backend.NetworkBackend` does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from functools import partial

import trio

from p2pinfer.backends.base import (
    ChatMessage,
    Completion,
    ModelInfo,
    SamplingParams,
    StreamEvent,
    Timings,
    TokenDelta,
    Usage,
)
from p2pinfer.errors import P2PInferError
from p2pinfer.gateway.config import GatewayConfig
from p2pinfer.gateway.serve import GatewayBinding, run_gateway
from p2pinfer.gateway.view import (
    CatalogEntry,
    GpuView,
    HardwareView,
    JobMeta,
    JobsSnapshot,
    JobView,
    LedgerPoint,
    LedgerSummary,
    NodeInfo,
    PeerView,
    RelayView,
    ReputationRow,
)
from p2pinfer.gov.status import GovernanceView
from p2pinfer.market.kpis import LiveKPIs
from p2pinfer.metrics import NodeMetrics

MODEL = "smollm2:135m"
PROVIDER_A = "12D3KooWProviderAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
PROVIDER_B = "12D3KooWProviderBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
SELF = "12D3KooWSelfSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS"
RELAYED = f"/ip4/10.0.0.1/tcp/4001/p2p/{PROVIDER_A}/p2p-circuit/p2p/{SELF}"
JOB_ID = "0f" * 16
CHARGE = 1234
PRICE = 200  # micro-credits per 1k tokens, provider A's
DONE = Completion("stop", Usage(5, 2), Timings(total_ns=9_000_000, eval_ns=4_000_000))
CPU = HardwareView("AMD EPYC", 16, 65536)
GPU_BOX = HardwareView("Intel Xeon", 32, 131072, (GpuView("NVIDIA H100", 81920),))


@dataclass
class FakeJobMetaSlot:
    """What the caller puts in `fake_job_meta` for the backend to fill."""

    meta: JobMeta | None = None


fake_job_meta: ContextVar[FakeJobMetaSlot | None] = ContextVar("fake_job_meta", default=None)


class FakeJobStream:
    """The iterator a fake network job yields; it keeps the caller's metadata slot current."""

    def __init__(self, script: Sequence[StreamEvent | P2PInferError], slot: FakeJobMetaSlot
                 ) -> None:  # fmt: skip
        self._script = list(script)
        self._slot = slot
        slot.meta = JobMeta(PROVIDER_A, JOB_ID, price_per_1k=PRICE, path="relayed")

    def __aiter__(self) -> FakeJobStream:
        return self

    async def __anext__(self) -> StreamEvent:
        await trio.lowlevel.checkpoint()
        if not self._script:
            raise StopAsyncIteration
        item = self._script.pop(0)
        if isinstance(item, P2PInferError):
            raise item
        if isinstance(item, Completion) and self._slot.meta is not None:
            self._slot.meta = replace(self._slot.meta, charged=CHARGE)  # the result arrived
        return item


class FakeNetworkBackend:
    """Serves `MODEL` from `PROVIDER_A` with a script; records what it was asked."""

    name = "network"

    def __init__(
        self, script: Sequence[StreamEvent | P2PInferError] = (
            TokenDelta("Hel"), TokenDelta("lo"), DONE),
        open_error: P2PInferError | None = None,
    ) -> None:  # fmt: skip
        self.script, self.open_error = list(script), open_error
        self.calls: list[tuple[str, str, object, SamplingParams]] = []

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(MODEL, "ab" * 32, "llama", "135M", "Q4_1", 8192, 100_000,
                          True, 1_700_000_000_000)]  # fmt: skip

    @asynccontextmanager
    async def _stream(self) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        if self.open_error is not None:
            raise self.open_error
        yield FakeJobStream(self.script, fake_job_meta.get() or FakeJobMetaSlot())

    def chat(self, model: str, messages: Sequence[ChatMessage], params: SamplingParams
             ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:  # fmt: skip
        self.calls.append(("chat", model, list(messages), params))
        return self._stream()

    def generate(self, model: str, prompt: str, params: SamplingParams
                 ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:  # fmt: skip
        self.calls.append(("generate", model, prompt, params))
        return self._stream()

    async def aclose(self) -> None:
        pass


def _job(job_id: str, state: str, tokens: int, charged: int, started: int) -> JobView:
    return JobView(job_id, "consumer", MODEL, PROVIDER_A, state,  # type: ignore[arg-type]
                   12, tokens, 41.5 if tokens else 0.0, charged, started,
                   None if state == "running" else started + 800)  # fmt: skip


#: What the fake node's /admin/kpis says (a consumer that paid two providers this window).
FAKE_KPIS = LiveKPIs(
    window_ms=30 * 86_400_000, jobs=3, tokens=1_200, revenue_ucr=360, previous_revenue_ucr=240,
    revenue_growth_pct=50.0, burned_ucr=54, provider_earnings_ucr=216, providers_paid=2,
    retention_pct=100.0, mean_quality_pm=905.0, utilisation_pct=0.0001, catalog_providers=2,
)


@dataclass
class FakeNodeView:
    """Canned state of a consumer node that sees two providers of `MODEL`."""

    backend: FakeNetworkBackend = field(default_factory=FakeNetworkBackend)
    metrics: NodeMetrics = field(default_factory=NodeMetrics)
    failing: P2PInferError | None = None  # raised by every snapshot when set
    governance: GovernanceView | None = None

    async def node_info(self) -> NodeInfo:
        self._maybe_fail()
        return NodeInfo(SELF, ("/ip4/127.0.0.1/tcp/4001",), (), CPU, 3_723_000, "0.1.0",
                        "llama.cpp", "private",
                        RelayView(False, 0, 0, {"per_ip": 2}, (RELAYED,), 1), "client")  # fmt: skip

    async def peers(self) -> Sequence[PeerView]:
        self._maybe_fail()
        return [
            PeerView(PROVIDER_A, ("/ip4/127.0.0.1/tcp/4002",), (MODEL,), CPU,
                     reachability="public"),
            PeerView(PROVIDER_B, ("/ip4/127.0.0.1/tcp/4003",), (MODEL,), GPU_BOX),
            PeerView(SELF.replace("Self", "Cons"), ("/ip4/127.0.0.1/tcp/4004",)),
        ]

    async def catalog(self) -> Sequence[CatalogEntry]:
        self._maybe_fail()
        return [
            CatalogEntry(MODEL, PROVIDER_A, 200, 95.5, CPU, 910, "closed", 1_700_000_060_000,
                         "Q4_1", "135M", 8192),
            CatalogEntry(MODEL, PROVIDER_B, 150, 480.0, GPU_BOX, 420, "open", 1_700_000_060_000,
                         "Q4_1", "135M", 8192),
        ]  # fmt: skip

    async def jobs(self) -> JobsSnapshot:
        self._maybe_fail()
        return JobsSnapshot(
            live=(_job("aa" * 16, "running", 7, 0, 1_700_000_050_000),),
            recent=(_job(JOB_ID, "done", 40, CHARGE, 1_700_000_040_000),),
        )

    async def ledger(self) -> LedgerSummary:
        self._maybe_fail()
        series = tuple(
            LedgerPoint(1_700_000_000_000 + i * 1000, 10_000_000 - 600 * i + 300 * i, 300 * i,
                        600 * i)
            for i in range(1, 1201)
        )  # fmt: skip
        last = series[-1]
        return LedgerSummary(last.balance, last.earned, last.spent, series)

    async def reputation(self) -> Sequence[ReputationRow]:
        self._maybe_fail()
        return [
            ReputationRow(PROVIDER_A, 910, 30, 1, 4, 0, "closed", False, 1_700_000_055_000),
            ReputationRow(PROVIDER_B, 420, 3, 5, 0, 2, "open", True, 1_700_000_056_000),
        ]

    async def kpis(self) -> LiveKPIs:
        self._maybe_fail()
        return FAKE_KPIS

    def track_job(self) -> Callable[[], JobMeta | None]:
        slot = FakeJobMetaSlot()
        fake_job_meta.set(slot)
        return lambda: slot.meta

    def _maybe_fail(self) -> None:
        if self.failing is not None:
            raise self.failing


@asynccontextmanager
async def running_gateway(
    view: FakeNodeView, config: GatewayConfig | None = None
) -> AsyncIterator[GatewayBinding]:
    """Serve the gateway for `view` on a free loopback port while the block runs."""
    config = config or GatewayConfig(port=0)
    async with trio.open_nursery() as nursery:
        binding: GatewayBinding = await nursery.start(partial(run_gateway, view, config))
        try:
            yield binding
        finally:
            nursery.cancel_scope.cancel()

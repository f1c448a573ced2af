"""`LiveNodeView`: the gateway's `NodeView` over a running node's parts.

It reads the libp2p host (peers, addresses, advert catalog), the job board
(jobs through the gateway and jobs the provider ran), the job server's records
(job ids and charges of served jobs), the ledger (this node's account) and the
reputation table. SQLite reads run in a worker thread, one at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from p2pinfer import __version__
from p2pinfer.backends.base import Backend
from p2pinfer.gateway.view import (
    BreakerStateName,
    CatalogEntry,
    GpuView,
    HardwareView,
    JobMeta,
    JobsSnapshot,
    LedgerPoint,
    LedgerSummary,
    NodeInfo,
    PeerView,
    RelayView,
    ReputationRow,
    catalog_counts,
)
from p2pinfer.gov.status import GovernanceView
from p2pinfer.jobs import network_backend
from p2pinfer.market.entries import FaucetGrant, peer_account
from p2pinfer.market.kpis import LiveKPIs, ledger_kpis
from p2pinfer.metrics import NodeMetrics
from p2pinfer.node.job_board import BoardJob, JobBoard
from p2pinfer.protocol import AdvertHardware
from p2pinfer.settle.stakes import StakeBook
from p2pinfer.verify.reputation import on_probation

if TYPE_CHECKING:
    from p2pinfer.jobs.client import JobClient
    from p2pinfer.jobs.job_server import JobServer
    from p2pinfer.market.ledger import Ledger
    from p2pinfer.net.nethost import NetHost
    from p2pinfer.verify.reputation_store import ReputationBook


def hardware_view(profile: AdvertHardware) -> HardwareView:
    """An advert's hardware profile as the gateway shows it."""
    gpus = tuple(GpuView(g.name, g.vram_mb) for g in profile.gpus)
    return HardwareView(profile.cpu, profile.cpu_cores, profile.ram_mb, gpus)


def track_network_job() -> Callable[[], JobMeta | None]:
    """A fresh metadata slot for the network backend in this task, and its reader."""
    slot = network_backend.NetworkJobSlot()
    network_backend.current_job_meta.set(slot)
    return _reader(slot)


def network_job_reader() -> Callable[[], JobMeta | None]:
    """The reader of this task's slot (the gateway's, when it set one), made if missing."""
    slot = network_backend.current_job_meta.get()
    if slot is None:
        return track_network_job()
    return _reader(slot)


def _reader(slot: network_backend.NetworkJobSlot) -> Callable[[], JobMeta | None]:
    def read() -> JobMeta | None:
        if not slot.provider:
            return None
        return JobMeta(slot.provider, slot.job_id or "", slot.charged, slot.failovers,
                       slot.price_per_1k, slot.path)

    return read


@dataclass
class _LedgerCursor:
    """Running totals of this node's account, extended entry by entry."""

    seq: int = 0
    balance: int = 0
    earned: int = 0
    spent: int = 0
    series: list[LedgerPoint] = field(default_factory=list)


class LiveNodeView:
    """A NodeView over a running node (see module doc)."""

    def __init__(
        self,
        *,
        net: NetHost,
        client: JobClient,
        metrics: NodeMetrics,
        hardware: HardwareView,
        ledger: Ledger | None = None,
        reputation: ReputationBook | None = None,
        server: JobServer | None = None,
        board: JobBoard | None = None,
        engine: str = "",
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        governance: GovernanceView | None = None,
        stakes: StakeBook | None = None,
    ) -> None:
        self._governance, self._stakes = governance, stakes
        self._net, self._client, self._metrics = net, client, metrics
        self._hardware, self._ledger, self._reputation = hardware, ledger, reputation
        self._server, self._engine, self._clock = server, engine, clock_ms
        self.board = board or JobBoard(clock_ms=clock_ms)
        self._started_ms = clock_ms()
        self._db = trio.CapacityLimiter(1)
        self._cursor = _LedgerCursor()
        self._backend = self.board.track(
            network_backend.NetworkBackend(client), role="consumer", meta=network_job_reader)
        self._claimed: dict[str, BoardJob] = {}  # served job id -> the board's job

    @property
    def metrics(self) -> NodeMetrics:
        return self._metrics

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def governance(self) -> GovernanceView | None:
        return self._governance

    def track_job(self) -> Callable[[], JobMeta | None]:
        return track_network_job()

    async def node_info(self) -> NodeInfo:
        models = tuple(sorted(self._server.models)) if self._server is not None else ()
        hop, net = self._net.relay_hop, self._net
        relay = RelayView(hop.serving, len(hop.reservations()), hop.circuits,
                          dict(hop.refusals), tuple(net.relay_client.circuit_addrs()),
                          net.dcutr.upgrades)
        return NodeInfo(self._net.peer_id, tuple(self._net.addrs()), models, self._hardware,
                        self._clock() - self._started_ms, __version__, self._engine,
                        self._net.reachability, relay, self._net.records.dht_mode)  # fmt: skip

    async def peers(self) -> Sequence[PeerView]:
        catalog = self._net.catalog
        out = []
        for peer_id in self._net.peers():
            advert = catalog.advert_of(peer_id)
            if advert is None:
                out.append(PeerView(peer_id, (),
                                    reachability=self._net.peer_reachability(peer_id)))
                continue
            ad = advert.advert
            chain = self._stakes.view(peer_id, ad.stake, ad.payee, ad.payee_binding) \
                if self._stakes is not None else None
            out.append(PeerView(peer_id, tuple(ad.listen_addrs),
                                tuple(m.name for m in ad.models), hardware_view(ad.hardware),
                                stake_declared=ad.stake,
                                stake_on_chain=chain.on_chain if chain else None,
                                payee=chain.payee if chain and chain.binding_ok else None,
                                reachability=self._net.peer_reachability(peer_id)))
        return out

    async def catalog(self) -> Sequence[CatalogEntry]:
        records = {r.peer_id: r for r in await self._reputation_records()}
        catalog = self._net.catalog
        out = []
        for model in catalog.models():
            for entry in catalog.providers(model):
                rec = records.get(entry.peer_id)
                out.append(CatalogEntry(
                    model=model, provider=entry.peer_id, price_per_1k=entry.price_per_1k,
                    tokens_per_s=entry.generation_tps, hardware=hardware_view(entry.hardware),
                    reputation_pm=rec.score_pm if rec is not None else None,
                    breaker=rec.breaker if rec is not None else "closed",
                    expires_at_ms=entry.expires_at_ms, quantization=entry.offer.quantization,
                    parameter_size=entry.offer.parameter_size,
                    context_length=entry.offer.context_length,
                ))  # fmt: skip
        return out

    async def jobs(self) -> JobsSnapshot:
        self._claim_served_jobs()
        return self.board.snapshot()

    def _claim_served_jobs(self) -> None:
        # The job server records a served job's id and charge after the generation the
        # board saw ended; pair them per model, oldest first (jobs of one model end in
        # the order they started, one slot at a time by default).
        if self._server is None:
            return
        for record in self._server.records:
            if record.job_id in self._claimed or record.outcome.startswith("rejected"):
                continue
            unnamed = [j for j in reversed(self.board.recent)
                       if j.role == "provider" and not j.job_id and j.model == record.model]
            if not unnamed:
                continue
            job = unnamed[0]
            job.job_id, job.charged = record.job_id, record.charged
            if record.outcome != "completed":
                job.state, job.error = "failed", record.outcome
            self._claimed[record.job_id] = job

    async def ledger(self) -> LedgerSummary:
        ledger = self._ledger
        if ledger is None:
            return LedgerSummary(0, 0, 0, ())
        account = peer_account(self._client.identity.public_key)
        cursor = self._cursor
        entries = await trio.to_thread.run_sync(
            lambda: ledger.entries(after_seq=cursor.seq), limiter=self._db)
        for entry in entries:
            cursor.seq = entry.seq
            moved = sum(p.amount for p in entry.body.postings() if p.account == account)
            if moved == 0:
                continue
            cursor.balance += moved
            if moved < 0:
                cursor.spent -= moved
            elif not isinstance(entry.body, FaucetGrant):  # a grant is not earnings
                cursor.earned += moved
            cursor.series.append(
                LedgerPoint(entry.at_ms, cursor.balance, cursor.earned, cursor.spent))
        return LedgerSummary(cursor.balance, cursor.earned, cursor.spent, tuple(cursor.series))

    async def reputation(self) -> Sequence[ReputationRow]:
        return await self._reputation_records()

    async def kpis(self) -> LiveKPIs:
        counts = catalog_counts(await self.catalog())
        ledger = self._ledger
        if ledger is None:
            return ledger_kpis((), counts, self._clock())
        entries = await trio.to_thread.run_sync(ledger.entries, limiter=self._db)
        return ledger_kpis(entries, counts, self._clock())

    async def _reputation_records(self) -> list[ReputationRow]:
        book = self._reputation
        if book is None:
            return []
        records = await trio.to_thread.run_sync(book.peers, limiter=self._db)
        now = self._clock()
        return [
            ReputationRow(
                peer_id=r.peer_id, score_pm=r.score_pm, jobs_ok=r.jobs_ok,
                jobs_failed=r.jobs_failed, checks_passed=r.checks_passed,
                checks_failed=r.checks_failed, breaker=_breaker_name(r.breaker.state.value),
                probation=on_probation(r, now, book.params), updated_ms=r.updated_ms,
            )
            for r in records
        ]  # fmt: skip


def _breaker_name(value: str) -> BreakerStateName:
    if value == "open":
        return "open"
    if value == "half_open":
        return "half_open"
    return "closed"


__all__ = ["LiveNodeView", "hardware_view", "track_network_job"]

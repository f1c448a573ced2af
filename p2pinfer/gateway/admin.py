"""`/admin/*` JSON and `/metrics`: the node's state, read through its `NodeView`.

Every admin reply is the view's snapshot as JSON (dataclass fields as keys;
money in micro-credits, time in ms). `/metrics` refreshes the gauges that
describe the node's state (peers, catalog providers, balance) from the view on
each scrape, then renders the node's whole registry.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from p2pinfer import json_depth
from p2pinfer.backends.wire import dumps
from p2pinfer.errors import P2PInferError, UsageError, ValidationError
from p2pinfer.gateway.view import LedgerPoint, LedgerSummary, NodeView
from p2pinfer.gov.status import GovernanceView, ProposalDraft

log = logging.getLogger(__name__)

#: The most points of the ledger series an admin reply carries (the chart's resolution).
MAX_SERIES_POINTS = 500


def thin_series(points: Sequence[LedgerPoint], limit: int) -> tuple[LedgerPoint, ...]:
    """At most `limit` (>= 2) points of `points`, evenly spread, first and last kept."""
    if len(points) <= limit:
        return tuple(points)
    step = (len(points) - 1) / (limit - 1)
    return tuple(points[round(i * step)] for i in range(limit))


def _json(value: Any) -> Response:
    return Response(dumps(value), media_type="application/json; charset=utf-8",
                    headers={"cache-control": "no-store"})  # fmt: skip


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


Snapshot = Callable[[], Awaitable[Any]]


def _admin(snapshot: Snapshot) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        try:
            return _json(await snapshot())
        except P2PInferError as exc:
            log.warning("admin snapshot failed path=%s error=%s", request.url.path, exc)
            return Response(dumps({"error": str(exc)}), status_code=503,
                            media_type="application/json; charset=utf-8")  # fmt: skip

    return handler


class GatewayMetrics:
    """The gateway's own metrics, in the node's registry (once per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "p2pinfer_gateway_requests", "Gateway HTTP replies by API and status",
            ["api", "status"], registry=registry,
        )  # fmt: skip

    @classmethod
    def of(cls, registry: CollectorRegistry) -> GatewayMetrics:
        """The metrics registered in `registry`, created on first use."""
        found = _GATEWAY_METRICS.get(registry)
        if found is None:
            found = _GATEWAY_METRICS[registry] = cls(registry)
        return found

    def observe(self, path: str, status: int) -> None:
        """Count one reply (`api` is a path family, so the label set stays small)."""
        if path.startswith("/v1/"):
            api = "openai"
        elif path.startswith("/api/"):
            api = "ollama"
        elif path.startswith("/admin/"):
            api = "admin"
        elif path == "/metrics":
            api = "metrics"
        elif path == "/":
            api = "dashboard"
        else:
            api = "other"
        self.requests.labels(api=api, status=str(status)).inc()


# A registry refuses a second metric of the same name: one GatewayMetrics per registry,
# even when a node builds its gateway app more than once (tests do).
_GATEWAY_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, GatewayMetrics] = (
    weakref.WeakKeyDictionary()
)


def admin_routes(view: NodeView) -> list[Route]:
    """`/admin/{node,peers,catalog,jobs,ledger,reputation,kpis}` and `/metrics` over `view`."""

    async def node() -> Any:
        return _plain(await view.node_info())

    async def peers() -> Any:
        return {"peers": [_plain(p) for p in await view.peers()]}

    async def catalog() -> Any:
        return {"entries": [_plain(e) for e in await view.catalog()]}

    async def jobs() -> Any:
        return _plain(await view.jobs())

    async def ledger() -> Any:
        summary = await view.ledger()
        thinned = dataclasses.replace(summary, series=thin_series(summary.series,
                                                                  MAX_SERIES_POINTS))
        return _plain(thinned)

    async def reputation() -> Any:
        return {"peers": [_plain(r) for r in await view.reputation()]}

    async def kpis() -> Any:
        return _plain(await view.kpis())

    async def gov_status() -> Any:
        return _plain(await _governance(view).status())

    async def metrics(request: Request) -> Response:
        node_metrics = view.metrics
        try:
            await _refresh_gauges(view)
        except P2PInferError as exc:  # serve the counters even if one source is down
            log.warning("metrics refresh failed error=%s", exc)
        return Response(node_metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/admin/node", _admin(node), methods=["GET"]),
        Route("/admin/peers", _admin(peers), methods=["GET"]),
        Route("/admin/catalog", _admin(catalog), methods=["GET"]),
        Route("/admin/jobs", _admin(jobs), methods=["GET"]),
        Route("/admin/ledger", _admin(ledger), methods=["GET"]),
        Route("/admin/reputation", _admin(reputation), methods=["GET"]),
        Route("/admin/kpis", _admin(kpis), methods=["GET"]),
        Route("/admin/gov", _admin(gov_status), methods=["GET"]),
        Route("/admin/gov/propose", gov_action(view, "propose"), methods=["POST"]),
        Route("/admin/gov/vote", gov_action(view, "vote"), methods=["POST"]),
        Route("/admin/gov/sync", gov_action(view, "sync"), methods=["POST"]),
        Route("/admin/gov/stake", gov_action(view, "stake"), methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


def _governance(view: NodeView) -> GovernanceView:
    gov = view.governance
    if gov is None:
        raise UsageError("this node runs without governance")
    return gov


def gov_action(view: NodeView, action: str) -> Callable[[Request], Awaitable[Response]]:
    """POST /admin/gov/{propose,vote,sync,stake}: the node signs with its own key and
    publishes, or records a stake its operator accepts.

    propose: {"parameter", "value", "voting_deadline", "effective_at"} (ms);
    vote: {"proposal": hex id, "yes": bool}; sync: {};
    stake: {"declaration": hex of a signed stake declaration}. 400 with a reason if bad.
    """

    async def handler(request: Request) -> Response:
        try:
            body = json_depth.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                raise ValidationError("body must be a JSON object")
            gov = _governance(view)
            result: Any
            if action == "propose":
                result = _plain(await gov.propose(ProposalDraft(
                    body["parameter"], body["value"], int(body["voting_deadline"]),
                    int(body["effective_at"]))))
            elif action == "vote":
                result = _plain(await gov.vote(bytes.fromhex(body["proposal"]),
                                               bool(body["yes"])))
            elif action == "stake":
                result = {"weight": await gov.accept_stake(bytes.fromhex(body["declaration"]))}
            else:
                result = {"new_messages": await gov.sync()}
        except (KeyError, ValueError, TypeError, P2PInferError) as exc:
            return Response(dumps({"error": str(exc)}), status_code=400,
                            media_type="application/json; charset=utf-8")  # fmt: skip
        return _json(result)

    return handler


async def _refresh_gauges(view: NodeView) -> None:
    metrics = view.metrics
    metrics.peers.set(len(await view.peers()))
    metrics.catalog_providers.set(len({entry.provider for entry in await view.catalog()}))
    summary: LedgerSummary = await view.ledger()
    metrics.balance.set(summary.balance)

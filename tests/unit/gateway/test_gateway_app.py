"""The gateway over a FakeNodeView, served by hypercorn: admin shapes, metrics, API, headers."""

from __future__ import annotations

import dataclasses
import json
import re
import socket

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from p2pinfer.errors import (
    AllProvidersFailedError,
    InsufficientCreditError,
    JobTimeoutError,
    LedgerError,
    NoProvidersError,
    UsageError,
)
from p2pinfer.gateway.admin import MAX_SERIES_POINTS
from p2pinfer.gateway.config import GatewayConfig
from p2pinfer.gateway.serve import run_gateway
from p2pinfer.gateway.view import CatalogEntry, HardwareView, catalog_counts
from p2pinfer.market.kpis import CatalogCounts
from tests.support.gateway import (
    CHARGE,
    FAKE_KPIS,
    JOB_ID,
    MODEL,
    PRICE,
    PROVIDER_A,
    PROVIDER_B,
    RELAYED,
    SELF,
    FakeNetworkBackend,
    FakeNodeView,
    running_gateway,
)

CPU_VIEW = HardwareView("cpu", 4, 8192)
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


async def test_admin_node_describes_this_node() -> None:
    async with running_gateway(FakeNodeView()) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        reply = await c.get("/admin/node")
    assert reply.status_code == 200
    assert reply.json() == {
        "peer_id": SELF, "addrs": ["/ip4/127.0.0.1/tcp/4001"], "models": [],
        "hardware": {"cpu": "AMD EPYC", "cpu_cores": 16, "ram_mb": 65536, "gpus": []},
        "uptime_ms": 3_723_000, "version": "0.1.0", "engine": "llama.cpp",
        "reachability": "private",
        "relay": {"serving": False, "reservations": 0, "circuits": 0,
                  "refusals": {"per_ip": 2}, "slots": [RELAYED], "dcutr_upgrades": 1},
        "dht_mode": "client",
    }  # fmt: skip


async def test_admin_lists_peers_catalog_jobs_and_reputation() -> None:
    async with running_gateway(FakeNodeView()) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        peers = (await c.get("/admin/peers")).json()["peers"]
        catalog = (await c.get("/admin/catalog")).json()["entries"]
        jobs = (await c.get("/admin/jobs")).json()
        reputation = (await c.get("/admin/reputation")).json()["peers"]
    assert [p["peer_id"] for p in peers][:2] == [PROVIDER_A, PROVIDER_B]
    assert peers[1]["hardware"]["gpus"] == [{"name": "NVIDIA H100", "vram_mb": 81920}]
    assert peers[2]["hardware"] is None and peers[2]["models"] == []
    assert [p["reachability"] for p in peers] == ["public", "unknown", "unknown"]
    assert catalog[1] == {
        "model": MODEL, "provider": PROVIDER_B, "price_per_1k": 150, "tokens_per_s": 480.0,
        "hardware": peers[1]["hardware"], "reputation_pm": 420, "breaker": "open",
        "expires_at_ms": 1_700_000_060_000, "quantization": "Q4_1", "parameter_size": "135M",
        "context_length": 8192,
    }  # fmt: skip
    assert [j["state"] for j in jobs["live"]] == ["running"]
    done = jobs["recent"][0]
    assert (done["job_id"], done["role"], done["provider"], done["charged"]) == (
        JOB_ID, "consumer", PROVIDER_A, CHARGE)
    assert done["completion_tokens"] == 40 and done["tokens_per_s"] == 41.5
    assert {r["peer_id"]: (r["score_pm"], r["breaker"], r["probation"]) for r in reputation} == {
        PROVIDER_A: (910, "closed", False), PROVIDER_B: (420, "open", True)}


async def test_admin_ledger_thins_the_series_and_keeps_the_totals() -> None:
    view = FakeNodeView()
    full = await view.ledger()
    async with running_gateway(view) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        ledger = (await c.get("/admin/ledger")).json()
    assert (ledger["balance"], ledger["earned"], ledger["spent"]) == (
        full.balance, full.earned, full.spent)
    assert len(ledger["series"]) == MAX_SERIES_POINTS < len(full.series)
    assert ledger["series"][0]["at_ms"] == full.series[0].at_ms
    assert ledger["series"][-1] == {"at_ms": full.series[-1].at_ms, "balance": full.balance,
                                    "earned": full.earned, "spent": full.spent}  # fmt: skip
    times = [p["at_ms"] for p in ledger["series"]]
    assert times == sorted(times)


async def test_admin_says_503_with_a_reason_when_the_node_cannot_answer() -> None:
    view = FakeNodeView(failing=LedgerError("ledger is locked"))
    async with running_gateway(view) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        reply = await c.get("/admin/ledger")
        metrics = await c.get("/metrics")
    assert reply.status_code == 503 and reply.json() == {"error": "ledger is locked"}
    assert metrics.status_code == 200  # counters are still served


async def test_metrics_parse_and_gauges_are_refreshed_on_scrape() -> None:
    view = FakeNodeView()
    view.metrics.jobs.labels(role="consumer", outcome="ok").inc(3)
    async with running_gateway(view) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        await c.get("/admin/node")
        reply = await c.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }
    assert samples[("p2pinfer_peers", ())] == 3
    assert samples[("p2pinfer_catalog_providers", ())] == 2
    balance = (await view.ledger()).balance
    assert samples[("p2pinfer_balance_microcredits", ())] == balance
    assert samples[("p2pinfer_jobs_total", (("outcome", "ok"), ("role", "consumer")))] == 3
    assert samples[("p2pinfer_gateway_requests_total", (("api", "admin"), ("status", "200")))] == 1


async def test_chat_reply_names_provider_job_and_charge() -> None:
    async with running_gateway(FakeNodeView()) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        reply = await c.post("/api/chat", json={**CHAT, "stream": False})
        openai = await c.post("/v1/chat/completions", json=CHAT)
    for r in (reply, openai):
        assert r.status_code == 200
        assert r.headers["x-p2pinfer-provider"] == PROVIDER_A
        assert r.headers["x-p2pinfer-job-id"] == JOB_ID
        assert r.headers["x-p2pinfer-charged"] == str(CHARGE)
        assert r.headers["x-p2pinfer-price-per-1k"] == str(PRICE)
        assert r.headers["x-p2pinfer-path"] == "relayed"  # the fake job's connection
        assert r.json()["p2pinfer"] == {"provider": PROVIDER_A, "job_id": JOB_ID,
                                        "price_per_1k": PRICE, "charged": CHARGE,
                                        "path": "relayed"}
        assert "x-p2pinfer-failovers" not in r.headers  # none failed
    assert reply.json()["message"]["content"] == "Hello"
    assert openai.json()["choices"][0]["message"]["content"] == "Hello"
    assert openai.json()["usage"] == {"prompt_tokens": 5, "completion_tokens": 2,
                                      "total_tokens": 7}  # fmt: skip


async def test_streamed_reply_carries_the_charge_in_its_last_object() -> None:
    async with running_gateway(FakeNodeView()) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        async with c.stream("POST", "/api/generate", json={"model": MODEL, "prompt": "hi"}) as r:
            lines = [json.loads(line) async for line in r.aiter_lines() if line]
        async with c.stream("POST", "/v1/completions",
                            json={"model": MODEL, "prompt": "hi", "stream": True,
                                  "stream_options": {"include_usage": True}}) as sse:
            events = [line async for line in sse.aiter_lines() if line]
        async with c.stream("POST", "/v1/chat/completions",
                            json={**CHAT, "stream": True}) as chat:
            chat_events = [line async for line in chat.aiter_lines() if line]
    assert r.headers["content-type"] == "application/x-ndjson"
    assert r.headers["x-p2pinfer-provider"] == PROVIDER_A
    assert r.headers["x-p2pinfer-job-id"] == JOB_ID
    assert r.headers["x-p2pinfer-price-per-1k"] == str(PRICE)
    assert "x-p2pinfer-charged" not in r.headers  # the headers left before the charge
    assert "".join(line["response"] for line in lines) == "Hello" and lines[-1]["done"]
    charge = {"provider": PROVIDER_A, "job_id": JOB_ID, "price_per_1k": PRICE,
              "charged": CHARGE, "path": "relayed"}
    assert lines[-1]["p2pinfer"] == charge
    assert all("p2pinfer" not in line for line in lines[:-1])
    assert sse.headers["x-p2pinfer-provider"] == PROVIDER_A
    assert events[-1] == "data: [DONE]"
    finish, usage = (json.loads(e.removeprefix("data: ")) for e in events[-3:-1])
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["p2pinfer"] == charge
    assert usage["usage"]["total_tokens"] == 7 and usage["p2pinfer"] == charge
    assert json.loads(chat_events[-2].removeprefix("data: "))["p2pinfer"] == charge


async def test_unknown_model_is_404_in_each_apis_shape() -> None:
    async with running_gateway(FakeNodeView()) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        ollama = await c.post("/api/chat", json={**CHAT, "model": "nope"})
        openai = await c.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    assert ollama.status_code == 404 and ollama.json() == {"error": "model 'nope' not found"}
    assert openai.status_code == 404
    assert openai.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NoProvidersError("no provider serves it"), 404),
        (AllProvidersFailedError("every provider failed"), 503),
        (JobTimeoutError("the job did not finish in time"), 504),
        (InsufficientCreditError("balance too low for this job"), 402),
    ],
)
async def test_network_failures_map_to_http_statuses(error: Exception, status: int) -> None:
    view = FakeNodeView(backend=FakeNetworkBackend(open_error=error))  # type: ignore[arg-type]
    async with running_gateway(view) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        reply = await c.post("/api/chat", json=CHAT)
    assert reply.status_code == status
    assert reply.json() == {"error": "model 'smollm2:135m' not found" if status == 404
                            else str(error)}  # fmt: skip


async def test_models_come_from_the_network_backend() -> None:
    async with running_gateway(FakeNodeView()) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        tags = (await c.get("/api/tags")).json()
        models = (await c.get("/v1/models")).json()
        version = (await c.get("/api/version")).json()
    assert [m["name"] for m in tags["models"]] == [MODEL]
    assert [m["id"] for m in models["data"]] == [MODEL]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version["version"])


async def test_dashboard_is_a_self_contained_page() -> None:
    async with running_gateway(FakeNodeView()) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        page = await c.get("/", headers={"accept": "text/html,application/xhtml+xml"})
        probe = await c.get("/")
        icon = await c.get("/favicon.ico")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert "<canvas" in html and "/admin/jobs" in html and 'data-refresh-ms="1500"' in html
    # Nothing fetched from elsewhere: no external scripts, styles or images.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "{{" not in html
    assert probe.text == "Ollama is running"  # Ollama clients' liveness probe
    assert icon.status_code == 204


async def test_run_gateway_reports_the_port_and_frees_it_when_cancelled() -> None:
    async with running_gateway(FakeNodeView()) as gw:
        assert gw.port > 0 and gw.url == f"http://127.0.0.1:{gw.port}"
        async with httpx.AsyncClient(base_url=gw.url) as c:
            assert (await c.get("/api/version")).status_code == 200
    with trio.fail_after(5):
        sock = socket.socket()
        try:
            with pytest.raises(ConnectionRefusedError):
                sock.connect(("127.0.0.1", gw.port))
        finally:
            sock.close()


async def test_run_gateway_refuses_an_address_in_use_in_one_line() -> None:
    async with running_gateway(FakeNodeView()) as gw:
        taken = GatewayConfig(port=gw.port)
        async with trio.open_nursery() as nursery:
            with pytest.raises(UsageError) as refused:
                await nursery.start(run_gateway, FakeNodeView(), taken)
    assert str(refused.value) == (
        f"cannot serve the gateway on 127.0.0.1:{gw.port}: Address already in use")


async def test_admin_kpis_serves_the_nodes_live_kpis() -> None:
    view = FakeNodeView()
    async with running_gateway(view) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        kpis = (await c.get("/admin/kpis")).json()
    assert kpis == dataclasses.asdict(FAKE_KPIS)
    assert isinstance(kpis["revenue_ucr"], int)


def test_catalog_counts_take_each_providers_fastest_model_once() -> None:
    entries = [
        CatalogEntry("a", PROVIDER_A, 100, 30.0, CPU_VIEW, None, "closed", 0),
        CatalogEntry("b", PROVIDER_A, 100, 50.5, CPU_VIEW, None, "closed", 0),
        CatalogEntry("a", PROVIDER_B, 100, 20.0, CPU_VIEW, None, "closed", 0),
    ]
    assert catalog_counts(entries) == CatalogCounts(providers=2, capacity_tokens_per_s=70)
    assert catalog_counts([]) == CatalogCounts(0, 0)

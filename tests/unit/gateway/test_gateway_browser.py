"""Browser safety: the Origin allow-list, preflights, the Host check against DNS rebinding,
and admin writes that need a key even on loopback."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from p2pinfer.gateway.browser import DEFAULT_ORIGINS, host_allowed, origin_allowed
from p2pinfer.gateway.config import GatewayConfig
from p2pinfer.gateway.operator_key import load_or_create_operator_key, read_operator_key
from p2pinfer.gov.status import GovStatus, ProposalDraft, ProposalStatus
from tests.support.gateway import MODEL, FakeNodeView, running_gateway

EVIL = "https://evil.example"
OPERATOR = "operator-key-0123456789"
API_KEY = "api-key-0123456789"
GENERATE = b'{"model": "' + MODEL.encode() + b'", "prompt": "spend", "stream": false}'


class FakeGovernance:
    """Counts the governance actions the gateway let through (only sync is used here)."""

    def __init__(self) -> None:
        self.syncs = 0

    async def status(self) -> GovStatus:
        raise NotImplementedError

    async def propose(self, draft: ProposalDraft) -> ProposalStatus:
        raise NotImplementedError

    async def vote(self, proposal_id: bytes, yes: bool) -> ProposalStatus:
        raise NotImplementedError

    async def accept_stake(self, declaration: bytes) -> int:
        raise NotImplementedError

    async def sync(self) -> int:
        self.syncs += 1
        return 3


@pytest.mark.parametrize("origin", [
    "http://localhost", "http://localhost:3000", "https://127.0.0.1:8443", "http://0.0.0.0:1",
    "app://obsidian.md", "file://", "tauri://localhost", "HTTP://LOCALHOST:5173",
])  # fmt: skip
def test_ollamas_default_origins_are_allowed(origin: str) -> None:
    assert origin_allowed(origin, DEFAULT_ORIGINS)


@pytest.mark.parametrize("origin", [
    EVIL, "http://localhost.evil.example", "http://127.0.0.1.nip.io", "null",
    "http://192.168.1.5:3000", "chrome-extension://abc", "",
])  # fmt: skip
def test_other_origins_are_not(origin: str) -> None:
    assert not origin_allowed(origin, DEFAULT_ORIGINS)


def test_p2pinfer_origins_adds_to_the_defaults() -> None:
    config = GatewayConfig.resolve("127.0.0.1:0", env={
        "P2PINFER_ORIGINS": "https://chat.example.org, chrome-extension://*"})
    assert origin_allowed("https://chat.example.org", config.origins)
    assert origin_allowed("chrome-extension://abcdef", config.origins)
    assert origin_allowed("http://localhost:3000", config.origins)
    assert not origin_allowed("https://chat.example.org.evil.example", config.origins)


@pytest.mark.parametrize(("host", "allowed"), [
    ("localhost:11435", True), ("127.0.0.1:11435", True), ("[::1]:11435", True),
    ("app.localhost", True), ("printer.local:80", True), ("db.internal", True),
    ("192.168.1.20:11435", True), ("10.0.0.2", True), ("0.0.0.0:11435", True),
    ("thisbox", True), ("", True),
    ("evil.example", False), ("evil.example:11435", False), ("8.8.8.8", False),
    ("localhost.evil.example", False),
])  # fmt: skip
def test_host_check_follows_ollamas_allowed_host(host: str, allowed: bool) -> None:
    assert host_allowed(host, hostname="thisbox") is allowed


async def test_a_foreign_origin_is_refused_on_every_route_and_runs_no_job() -> None:
    view = FakeNodeView()
    async with running_gateway(view) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        # The request a page can send without a preflight: a text/plain POST.
        spend = await c.post("/api/generate", content=GENERATE,
                             headers={"origin": EVIL, "content-type": "text/plain"})
        others = [await c.request(method, path, headers={"origin": EVIL}) for method, path in [
            ("GET", "/"), ("GET", "/api/tags"), ("GET", "/v1/models"), ("GET", "/admin/node"),
            ("GET", "/metrics"), ("POST", "/v1/chat/completions"), ("GET", "/no/such/path"),
            ("OPTIONS", "/api/chat")]]  # fmt: skip
        same = await c.post("/api/generate", content=GENERATE,
                            headers={"content-type": "text/plain"})
    assert spend.status_code == 403
    assert "not allowed" in spend.json()["error"] and "P2PINFER_ORIGINS" in spend.json()["error"]
    assert "access-control-allow-origin" not in spend.headers
    assert [r.status_code for r in others] == [403] * len(others)
    assert others[5].json()["error"]["type"] == "invalid_request_error"  # OpenAI's shape
    assert same.status_code == 200  # no Origin: a native client, as before
    assert len(view.backend.calls) == 1  # only the request without an Origin ran a job


async def test_an_allowed_origin_gets_cors_headers_and_a_preflight() -> None:
    origin = "http://localhost:5173"
    async with running_gateway(FakeNodeView()) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        preflight = await c.options("/v1/chat/completions", headers={
            "origin": origin, "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, authorization, x-stainless-os"})
        reply = await c.post("/api/generate", content=GENERATE, headers={"origin": origin})
        foreign_preflight = await c.options("/api/chat", headers={
            "origin": EVIL, "access-control-request-method": "POST"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"]
    assert {"content-type", "authorization", "x-stainless-os"} <= set(allowed.split(", "))
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == origin
    assert "Origin" in reply.headers["vary"]
    assert "X-P2PInfer-Charged" in reply.headers["access-control-expose-headers"]
    assert foreign_preflight.status_code == 403


async def test_dns_rebinding_is_refused_on_a_loopback_bind() -> None:
    view = FakeNodeView()
    async with running_gateway(view) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        # evil.example now resolves to 127.0.0.1: the page's requests are "same-origin".
        rebound = {"host": f"evil.example:{gw.port}", "origin": f"http://evil.example:{gw.port}"}
        spend = await c.post("/api/generate", content=GENERATE, headers=rebound)
        admin = await c.get("/admin/ledger", headers={"host": "evil.example"})
        local = await c.get("/api/tags", headers={"host": f"localhost:{gw.port}"})
        # The dashboard page fetching from its own origin under a local name is fine.
        own = await c.get("/admin/node", headers={
            "host": f"box.local:{gw.port}", "origin": f"http://box.local:{gw.port}"})
    assert (spend.status_code, admin.status_code) == (403, 403)
    assert "host" in admin.json()["error"]
    assert (local.status_code, own.status_code) == (200, 200)
    assert view.backend.calls == []


async def test_a_non_loopback_bind_does_not_check_the_host() -> None:
    config = GatewayConfig(host="0.0.0.0", port=0, api_keys=(API_KEY,))
    async with (running_gateway(FakeNodeView(), config) as gw,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as c):
        reply = await c.get("/api/tags", headers={
            "host": "node.example.org", "authorization": f"Bearer {API_KEY}"})
    assert reply.status_code == 200


async def test_admin_writes_need_a_key_even_on_loopback() -> None:
    view = FakeNodeView(governance=FakeGovernance())
    async with running_gateway(view) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        no_key_at_all = await c.post("/admin/gov/sync", content=b"{}")
        reads = await c.get("/admin/node")
    assert no_key_at_all.status_code == 403
    message = no_key_at_all.json()["error"]
    assert "P2PINFER_API_KEY" in message and "gateway-operator.key" in message
    assert reads.status_code == 200  # reads stay open on loopback, as before
    config = GatewayConfig(port=0, operator_key=OPERATOR)
    async with running_gateway(view, config) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        missing = await c.post("/admin/gov/sync", content=b"{}")
        wrong = await c.post("/admin/gov/sync", content=b"{}",
                             headers={"authorization": "Bearer guess"})
        operator = await c.post("/admin/gov/sync", content=b"{}",
                                headers={"authorization": f"Bearer {OPERATOR}"})
        jobs = await c.post("/api/generate", content=GENERATE)  # the API stays keyless
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert operator.status_code == 200 and operator.json() == {"new_messages": 3}
    assert jobs.status_code == 200
    assert view.governance.syncs == 1  # type: ignore[union-attr]


async def test_api_keys_and_the_operator_key_both_open_admin_writes() -> None:
    view = FakeNodeView(governance=FakeGovernance())
    config = GatewayConfig(port=0, api_keys=(API_KEY,), operator_key=OPERATOR)
    async with running_gateway(view, config) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        replies = [await c.post("/admin/gov/sync", content=b"{}",
                                headers={"authorization": f"Bearer {key}"})
                   for key in (API_KEY, OPERATOR)]
        tags = await c.get("/api/tags", headers={"authorization": f"Bearer {OPERATOR}"})
    assert [r.status_code for r in replies] == [200, 200]
    assert tags.status_code == 200


def test_the_operator_key_is_created_once_and_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert read_operator_key(home) is None
    key = load_or_create_operator_key(home)
    assert len(key) >= 32 and load_or_create_operator_key(home) == key
    assert (home / "gateway-operator.key").stat().st_mode & 0o777 == 0o600
    assert OPERATOR not in repr(GatewayConfig(operator_key=OPERATOR))

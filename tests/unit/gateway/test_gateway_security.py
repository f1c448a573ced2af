"""The gateway's guard: API keys, rate limits, body limits, bad input never a 500."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send

from p2pinfer.addresses import is_loopback
from p2pinfer.bounded import RateLimiter
from p2pinfer.errors import UsageError
from p2pinfer.gateway.config import GatewayConfig, parse_bind, parse_rate_limit
from p2pinfer.gateway.security import FAILED_KEYS_PER_MIN, GatewayGuard
from tests.support.gateway import MODEL, FakeNodeView, running_gateway

KEY = "s3cret-key-0123456789"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_non_loopback_bind_without_a_key_is_refused_in_one_line() -> None:
    with pytest.raises(UsageError) as refused:
        GatewayConfig.resolve("0.0.0.0:8080", env={})
    assert "\n" not in str(refused.value)
    assert "--api-key" in str(refused.value) and "P2PINFER_API_KEY" in str(refused.value)
    assert GatewayConfig.resolve("0.0.0.0:8080", env={"P2PINFER_API_KEY": "k1, k2"}).api_keys == (
        "k1", "k2")
    assert GatewayConfig.resolve("[::]:8080", api_key="k").host == "::"
    assert GatewayConfig.resolve("localhost:0", env={}).api_keys == ()


def test_api_keys_stay_out_of_reprs() -> None:
    assert KEY not in repr(GatewayConfig(api_keys=(KEY,)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:0", ("::1", 0)), (":9", ("127.0.0.1", 9)),
     ("0.0.0.0:11435", ("0.0.0.0", 11435))],
)  # fmt: skip
def test_parse_bind_accepts_host_port_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "::1:80", "host:http", "1.2.3.4:70000", ""])
def test_parse_bind_refuses_what_is_not_host_port(text: str) -> None:
    with pytest.raises(UsageError):
        parse_bind(text)


def test_loopback_detection() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.org"]))


def test_rate_limit_text() -> None:
    assert parse_rate_limit("20/40") == (20.0, 40)
    assert parse_rate_limit("5") == (5.0, 10)
    assert parse_rate_limit("0") == (0.0, 1)
    for bad in ("x", "-1", "5/0", "nan"):
        with pytest.raises(UsageError):
            parse_rate_limit(bad)


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [100.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)
    assert limiter.acquire("b") == 0.0  # buckets are per key
    now[0] += 0.5
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    now[0] += 60
    assert [limiter.acquire("a") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # capped at burst


async def test_with_a_key_requests_need_a_valid_bearer() -> None:
    config = GatewayConfig(port=0, api_keys=(KEY, "other-key"))
    async with running_gateway(FakeNodeView(), config) as gw, httpx.AsyncClient(
        base_url=gw.url
    ) as c:
        missing = await c.get("/admin/node")
        wrong = await c.get("/admin/node", headers={"authorization": f"Bearer {KEY}x"})
        basic = await c.get("/admin/node", headers={"authorization": f"Basic {KEY}"})
        openai = await c.post("/v1/chat/completions", json=CHAT)
        good = await c.get("/admin/node", headers={"authorization": f"Bearer {KEY}"})
        second = await c.post("/api/chat", json=CHAT, headers={"authorization": "bearer other-key"})
        page = await c.get("/", headers={"accept": "text/html"})
    for refused in (missing, wrong, basic):
        assert refused.status_code == 401
        assert refused.json() == {"error": "missing or invalid API key"}
        assert refused.headers["www-authenticate"].startswith("Bearer")
    assert openai.status_code == 401
    assert openai.json()["error"]["code"] == "invalid_api_key"
    assert good.status_code == 200 and second.status_code == 200
    # The page is a static shell; it asks for the key before polling.
    assert page.status_code == 200 and 'data-auth-required="1"' in page.text


async def reply_ok(scope: Scope, receive: Receive, send: Send) -> None:
    """The app behind the guard in these tests: 200 to anything it is passed."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def test_api_keys_cannot_be_guessed_online_at_full_speed() -> None:
    """Attack 75: a wrong key was answered 401 as fast as it came, with no limit (the rate
    limit is per matched key), so a gateway on a public address was an oracle for
    guessing its key: 40 of 40 guesses answered on the code before. Now an address (an
    IPv4 address, an IPv6 /56) that sent FAILED_KEYS_PER_MIN wrong keys in the last
    minute is answered 429 without its key being compared, even the right one (else the
    refusal itself would tell a right guess from a wrong one); other addresses are not
    held up."""
    now = [100.0]
    guard = GatewayGuard(reply_ok, GatewayConfig(api_keys=(KEY,)), clock=lambda: now[0])

    def client_at(host: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url="http://gateway", transport=httpx.ASGITransport(
            app=guard, client=(host, 40_000)))

    def bearer(key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    async with client_at("198.51.100.7") as attacker, client_at("203.0.113.9") as user, \
            client_at("2001:db8:0:1::9") as v6, client_at("2001:db8:0:2::9") as v6_next:
        guesses = [(await attacker.get("/api/tags", headers=bearer(f"guess-{i}"))).status_code
                   for i in range(40)]
        right = await attacker.get("/v1/models", headers=bearer(KEY))
        other = await user.get("/api/tags", headers=bearer(KEY))
        for i in range(FAILED_KEYS_PER_MIN):
            await v6.get("/api/tags", headers=bearer(f"guess-{i}"))
        same_56 = await v6_next.get("/api/tags", headers=bearer(KEY))
        now[0] += 61
        later = await attacker.get("/api/tags", headers=bearer(KEY))
    assert guesses == [401] * FAILED_KEYS_PER_MIN + [429] * (40 - FAILED_KEYS_PER_MIN)
    assert right.status_code == 429  # not compared: a 200 here would confirm the guess
    assert right.json()["error"]["type"] == "rate_limit_error"
    assert int(right.headers["retry-after"]) >= 1
    assert same_56.status_code == 429  # one /56 is one address
    assert other.status_code == 200 and later.status_code == 200


async def test_rate_limit_answers_429_with_retry_after_per_key() -> None:
    config = GatewayConfig(port=0, api_keys=("key-a", "key-b"), rate_per_s=0.01, burst=2)
    async with running_gateway(FakeNodeView(), config) as gw, httpx.AsyncClient(
        base_url=gw.url
    ) as c:
        a = {"authorization": "Bearer key-a"}
        first = [(await c.post("/api/chat", json=CHAT, headers=a)).status_code for _ in range(2)]
        limited = await c.post("/api/chat", json=CHAT, headers=a)
        openai = await c.get("/v1/models", headers=a)
        other = await c.get("/api/tags", headers={"authorization": "Bearer key-b"})
    assert first == [200, 200]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json() == {"error": "rate limit exceeded, retry later"}
    assert openai.status_code == 429 and openai.json()["error"]["type"] == "rate_limit_error"
    assert other.status_code == 200


async def test_without_keys_the_limit_applies_per_client_address() -> None:
    config = GatewayConfig(port=0, rate_per_s=0.01, burst=1)
    async with running_gateway(FakeNodeView(), config) as gw, httpx.AsyncClient(
        base_url=gw.url
    ) as c:
        assert (await c.get("/api/tags")).status_code == 200
        assert (await c.get("/api/tags")).status_code == 429
        assert (await c.get("/", headers={"accept": "text/html"})).status_code == 200


async def test_oversized_bodies_get_413_with_or_without_a_length() -> None:
    config = GatewayConfig(port=0, max_body_bytes=2000)
    big = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 3000}]}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 500):
            yield big[start:start + 500]

    view = FakeNodeView()
    async with running_gateway(view, config) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        sized = await c.post("/api/chat", content=big)
        chunked = await c.post("/v1/chat/completions", content=chunks())
        small = await c.post("/api/chat", json=CHAT)
    assert sized.status_code == 413 and "2000-byte limit" in sized.json()["error"]
    assert chunked.status_code == 413
    assert "2000-byte limit" in chunked.json()["error"]["message"]
    assert small.status_code == 200
    assert len(view.backend.calls) == 1  # the oversized ones never reached the network


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", b"{"),
        ("/api/chat", b"not json"),
        ("/api/generate", b"[1, 2]"),
        ("/api/chat", b""),
        ("/v1/chat/completions", b'{"model": "m", "messages": '),
        ("/api/show", b"\xff\xfe"),
        ("/api/chat", b'{"model": "smollm2:135m", "options": {"temperature": NaN}}'),
        ("/v1/chat/completions", b'{"model": "smollm2:135m", "temperature": Infinity}'),
    ],
)
async def test_bad_json_is_400(path: str, body: bytes) -> None:
    async with running_gateway(FakeNodeView()) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        reply = await c.post(path, content=body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["message"] if path.startswith("/v1/") else error


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {"model": 5, "messages": []}),
        ("/api/chat", {**CHAT, "messages": "hi"}),
        ("/api/chat", {**CHAT, "messages": [{"role": "user", "content": 7}]}),
        ("/api/chat", {**CHAT, "stream": "yes"}),
        ("/api/chat", {**CHAT, "options": {"temperature": "hot"}}),
        ("/api/chat", {**CHAT, "options": {"stop": "x"}}),
        ("/api/generate", {"model": MODEL, "prompt": ["a"]}),
        ("/api/generate", {"model": MODEL, "prompt": "a", "keep_alive": []}),
        ("/v1/chat/completions", {**CHAT, "temperature": "hot"}),
        ("/v1/chat/completions", {**CHAT, "max_tokens": 1.5}),
        ("/v1/chat/completions", {**CHAT, "messages": [1]}),
        ("/v1/chat/completions", {**CHAT, "stop": [1]}),
        ("/v1/completions", {"model": MODEL, "prompt": {"a": 1}}),
    ],
)
async def test_wrong_field_types_are_400(path: str, body: dict[str, object]) -> None:
    view = FakeNodeView()
    async with running_gateway(view) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        reply = await c.post(path, json=body)
    assert reply.status_code == 400, reply.text
    assert view.backend.calls == []


async def test_unknown_fields_and_options_are_ignored() -> None:
    # Fields neither API defines; the ones they define but the network does not carry
    # are refused (test_gateway_compat.py).
    extra = {"mirostat_v9": 3, "future_option": {"x": 1}}
    view = FakeNodeView()
    async with running_gateway(view) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        ollama = await c.post("/api/chat", json={**CHAT, "options": extra, "brand_new": True})
        openai = await c.post("/v1/chat/completions",
                              json={**CHAT, "logit_bias": {}, "user": "u", "n": 1,
                                    "some_vendor_field": [1, 2]})  # fmt: skip
        generate = await c.post("/api/generate",
                                json={"model": MODEL, "prompt": "hi", "stream": False,
                                      "options": {"temperature": 0.1, **extra}, "x": None})
    assert [r.status_code for r in (ollama, openai, generate)] == [200, 200, 200]
    assert view.backend.calls[2][3].temperature == 0.1


_finite = st.floats(allow_nan=False, allow_infinity=False)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _finite | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)  # fmt: skip
_FIELDS = ["model", "messages", "prompt", "stream", "options", "keep_alive", "system", "raw",
           "max_tokens", "temperature", "stop", "stream_options", "seed", "name", "format"]
_PATHS = ["/api/chat", "/api/generate", "/api/show", "/v1/chat/completions", "/v1/completions"]


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from(_PATHS),
    body=st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=6),
    valid_model=st.booleans(),
)
async def test_no_body_makes_the_gateway_answer_500(
    path: str, body: dict[str, object], valid_model: bool
) -> None:
    if valid_model:
        body = {**body, "model": MODEL}
    async with running_gateway(FakeNodeView()) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        reply = await c.post(path, json=body)
    assert reply.status_code in (200, 400, 404), (reply.status_code, reply.text)

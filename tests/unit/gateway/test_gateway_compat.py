"""Endpoints the gateway does not offer and parameters the network does not carry answer
errors in the API's own shape, naming what is refused; nothing is silently dropped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import ollama
import openai
import pytest
import trio

from p2pinfer.gateway.compat import IGNORED, PARAMETERS, REFUSED_ENDPOINTS
from tests.support.gateway import MODEL, FakeNodeView, running_gateway

T = TypeVar("T")
MESSAGES = [{"role": "user", "content": "hi"}]
BODIES: dict[str, dict[str, Any]] = {
    "/api/generate": {"model": MODEL, "prompt": "hi", "stream": False},
    "/api/chat": {"model": MODEL, "messages": MESSAGES, "stream": False},
    "/v1/chat/completions": {"model": MODEL, "messages": MESSAGES},
    "/v1/completions": {"model": MODEL, "prompt": "hi"},
    "/api/embed": {"model": MODEL, "input": "hi"},
}


def _concrete(path: str) -> str:
    return path.replace("*", "/x").replace("//", "/")


def _with(body: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    body = {**body, "messages": [dict(m) for m in body.get("messages", [])]}
    if name.startswith("options."):
        body["options"] = {name.removeprefix("options."): value}
    elif name.startswith("messages[]."):
        body["messages"][0][name.removeprefix("messages[].")] = value
    else:
        body[name] = value
    return body


async def _in_thread(fn: Callable[[], T]) -> T:
    with trio.fail_after(30):
        return await trio.to_thread.run_sync(fn)


async def test_endpoints_not_offered_say_so_in_each_apis_shape() -> None:
    view = FakeNodeView()
    async with running_gateway(view) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        for entry in REFUSED_ENDPOINTS:
            path = _concrete(entry.path)
            reply = await c.request(entry.method, path, json={"model": MODEL})
            assert reply.status_code == 404, (path, reply.text)
            error = reply.json()["error"]
            if path.startswith("/v1/"):
                assert error["code"] == "unsupported_endpoint" and error["param"] is None
                assert error["type"] == "invalid_request_error"
                error = error["message"]
            assert "does not offer" in error and entry.reason in error, (path, error)
        openai_unknown = await c.post("/v1/no-such-thing", json={})
        ollama_unknown = await c.get("/api/no-such-thing")
        wrong_method = await c.get("/api/chat")
    assert openai_unknown.json()["error"]["message"] == "Invalid URL (POST /v1/no-such-thing)"
    assert ollama_unknown.json() == {"error": "404 page not found"}
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["allow"]
    assert "not allowed" in wrong_method.json()["error"]
    assert view.backend.calls == []


@pytest.mark.parametrize(("path", "name"), [
    (path, parameter.name) for path, table in PARAMETERS.items() for parameter in table])
async def test_every_parameter_not_carried_is_400_naming_it(path: str, name: str) -> None:
    view = FakeNodeView()
    async with running_gateway(view) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        reply = await c.post(path, json=_with(BODIES[path], name, [{"x": 1}]))
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    if path.startswith("/v1/"):
        assert (error["param"], error["code"]) == (name, "unsupported_parameter")
        assert error["type"] == "invalid_request_error"
        error = error["message"]
    assert f"parameter '{name}' is not supported by the p2pinfer network gateway" in error
    assert view.backend.calls == []  # refused before any provider was asked


async def test_neutral_values_ask_for_nothing_and_pass() -> None:
    neutral = {
        "/v1/chat/completions": {"logit_bias": {}, "tools": [], "tool_choice": "none",
                                 "store": False},
        "/api/chat": {"options": {"typical_p": 1.0, "mirostat": 0}, "think": False,
                      "tools": []},
    }
    view = FakeNodeView()
    async with running_gateway(view) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        replies = [await c.post(path, json={**BODIES[path], **extra})
                   for path, extra in neutral.items()]
        # True is not 1, nor a mirostat of 1 a neutral one.
        not_one = await c.post("/v1/completions", json={**BODIES["/v1/completions"],
                                                        "best_of": True})
        penalty = await c.post("/api/chat", json={**BODIES["/api/chat"],
                                                  "options": {"mirostat": 1}})
    assert [r.status_code for r in replies] == [200, 200], [r.text for r in replies]
    assert (not_one.status_code, penalty.status_code) == (400, 400)


async def test_ignored_parameters_are_named_in_a_header() -> None:
    view = FakeNodeView()
    async with running_gateway(view) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        ollama_reply = await c.post("/api/generate", json={
            **BODIES["/api/generate"], "options": {"num_gpu": 1, "num_thread": 4}})
        openai_reply = await c.post("/v1/chat/completions", json={
            **BODIES["/v1/chat/completions"], "user": "alice"})
        plain = await c.post("/v1/chat/completions", json=BODIES["/v1/chat/completions"])
    assert ollama_reply.status_code == 200
    assert ollama_reply.headers["x-p2pinfer-ignored"] == "options.num_gpu, options.num_thread"
    assert openai_reply.headers["x-p2pinfer-ignored"] == "user"
    assert "x-p2pinfer-ignored" not in plain.headers
    assert set(IGNORED) == set(PARAMETERS) - {"/api/embed"}


async def test_openai_errors_name_the_param_and_the_unknown_model() -> None:
    async with running_gateway(FakeNodeView()) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        unknown = await c.post("/v1/chat/completions", json={**BODIES["/v1/chat/completions"],
                                                             "model": "nope"})
        bad_type = await c.post("/v1/chat/completions", json={**BODIES["/v1/chat/completions"],
                                                              "temperature": "hot"})
        model_404 = await c.get("/v1/models/nope")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert model_404.json()["error"]["code"] == "model_not_found"
    assert bad_type.status_code == 400 and bad_type.json()["error"]["param"] == "temperature"


async def test_official_clients_raise_on_what_is_not_carried() -> None:
    async with running_gateway(FakeNodeView()) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as penalty:
            await _in_thread(lambda: client.chat.completions.create(
                model=MODEL, messages=MESSAGES, logit_bias={"1": 2}))  # type: ignore[arg-type]
        with pytest.raises(openai.NotFoundError) as embeddings:
            await _in_thread(lambda: client.images.generate(model=MODEL, prompt="hi"))
        with pytest.raises(openai.NotFoundError) as unknown:
            await _in_thread(lambda: client.chat.completions.create(
                model="nope", messages=MESSAGES))  # type: ignore[arg-type]
        local = ollama.Client(host=gw.url)
        with pytest.raises(ollama.ResponseError) as pull:
            await _in_thread(lambda: local.pull(MODEL))
        with pytest.raises(ollama.ResponseError) as options:
            await _in_thread(lambda: local.generate(model=MODEL, prompt="hi",
                                                    options={"mirostat": 1}))
    assert (penalty.value.param, penalty.value.code) == ("logit_bias",
                                                          "unsupported_parameter")
    assert embeddings.value.code == "unsupported_endpoint"
    assert unknown.value.code == "model_not_found"
    assert pull.value.status_code == 404 and "does not offer POST /api/pull" in pull.value.error
    assert options.value.status_code == 400 and "options.mirostat" in options.value.error

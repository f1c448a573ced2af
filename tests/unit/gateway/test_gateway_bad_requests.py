"""Client errors the wire cannot carry get a 400 in each API's own error shape, not a 500.

The gateway runs over the real `NetworkBackend` (a fake JobClient under it), because that
is where a request turns into wire messages with caps (a stop string over 256 characters,
a message over 262,144) and where a lone surrogate (`"\\ud800"`) cannot be encoded."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from p2pinfer.errors import NoProvidersError
from p2pinfer.jobs.network_backend import NetworkBackend
from p2pinfer.protocol import ChatTurn, JobParams, ModelOffer
from tests.support.gateway import MODEL, FakeNodeView, running_gateway


@dataclass
class FakeOffer:
    offer: ModelOffer


class FakeCatalog:
    def models(self) -> list[str]:
        return [MODEL]

    def providers(self, name: str) -> list[FakeOffer]:
        return [FakeOffer(ModelOffer(MODEL, "ab" * 32, "135M", "Q4_1", 8192, 0, 0, 100))]


@dataclass
class FakeNet:
    catalog: FakeCatalog = field(default_factory=FakeCatalog)


@dataclass
class FakeJobClient:
    """Records the jobs that reach the network; answers each with 'nobody serves it'."""

    net: FakeNet = field(default_factory=FakeNet)
    jobs: list[tuple[str, str | Sequence[ChatTurn], JobParams]] = field(default_factory=list)

    @asynccontextmanager
    async def job(self, model: str, input: str | Sequence[ChatTurn], params: JobParams
                  ) -> AsyncIterator[None]:  # fmt: skip
        self.jobs.append((model, input, params))
        raise NoProvidersError("fake network: nobody serves it")
        yield  # pragma: no cover


LONG_STOP = "s" * 257
LONG_TEXT = "x" * 262_145


def chat_with_escape(escape: str) -> bytes:
    """A chat body whose content holds the JSON escape `escape` as written (json.dumps
    would escape the backslash instead)."""
    body = json.dumps({"model": MODEL, "stream": False,
                       "messages": [{"role": "user", "content": "a@b"}]})
    return body.replace("@", escape).encode()


LONE_SURROGATE_BODY = chat_with_escape("\\ud800")

OPENAI_CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
OLLAMA_CHAT = {**OPENAI_CHAT, "stream": False}


def bad_bodies(base: dict[str, Any], openai: bool) -> list[tuple[str, dict[str, Any]]]:
    stop = {"stop": [LONG_STOP]} if openai else {"options": {"stop": [LONG_STOP]}}
    many = [f"s{i}" for i in range(17)]  # the wire carries 16: once cut silently
    stops = {"stop": many} if openai else {"options": {"stop": many}}
    return [
        ("stop over 256 chars", {**base, **stop}),
        ("17 stop strings", {**base, **stops}),
        ("content over 262,144 chars",
         {**base, "messages": [{"role": "user", "content": LONG_TEXT}]}),
    ]


def view() -> tuple[FakeNodeView, FakeJobClient]:
    client = FakeJobClient()
    return FakeNodeView(backend=NetworkBackend(client)), client  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
async def test_client_errors_the_wire_cannot_carry_are_400_in_the_apis_shape(path: str) -> None:
    openai = path.startswith("/v1")
    fake, client = view()
    async with running_gateway(fake) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        replies = {what: await c.post(path, json=body)
                   for what, body in bad_bodies(OPENAI_CHAT if openai else OLLAMA_CHAT, openai)}
        replies["lone surrogate"] = await c.post(
            path, content=LONE_SURROGATE_BODY,
            headers={"content-type": "application/json"})
        control = await c.post(path, json=OPENAI_CHAT if openai else OLLAMA_CHAT)
    for what, reply in replies.items():
        assert reply.status_code == 400, (what, reply.status_code, reply.text)
        body = reply.json()
        if openai:
            assert body["error"]["type"] == "invalid_request_error", what
            message = body["error"]["message"]
        else:
            message = body["error"]
        assert isinstance(message, str) and message, what
    assert "262144" in str(replies["content over 262,144 chars"].json()) or "262,144" in str(
        replies["content over 262,144 chars"].json())
    assert "surrogate" in str(replies["lone surrogate"].json())
    assert "stop" in str(replies["17 stop strings"].json())
    # Nothing bad reached the network; a good request still does (the fake answers 404).
    assert control.status_code == 404
    assert len(client.jobs) == 1


async def test_a_generate_prompt_over_the_cap_is_400() -> None:
    fake, client = view()
    async with running_gateway(fake) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        ollama = await c.post("/api/generate", json={
            "model": MODEL, "prompt": LONG_TEXT, "stream": False, "raw": True})
        openai = await c.post("/v1/completions", json={"model": MODEL, "prompt": LONG_TEXT})
    assert ollama.status_code == 400 and ollama.json()["error"]
    assert openai.status_code == 400
    assert openai.json()["error"]["type"] == "invalid_request_error"
    assert client.jobs == []


async def test_a_surrogate_pair_is_a_character_and_passes() -> None:
    fake, client = view()
    body = chat_with_escape("\\ud83d\\ude00")
    async with running_gateway(fake) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        reply = await c.post("/api/chat", content=body,
                             headers={"content-type": "application/json"})
    assert reply.status_code == 404  # reached the (fake) network
    [(_, turns, _)] = client.jobs
    assert isinstance(turns, list) and turns[0].content == "a\U0001F600b"

"""The official `openai` and `ollama` packages against the gateway's guard (FakeNodeView).

They must raise the errors they raise against the real services: a bad key is
openai.AuthenticationError, the rate limit openai.RateLimitError, an unknown
model ollama.ResponseError(404) / openai.NotFoundError; extra parameters pass.
The sync clients run in a worker thread while the gateway serves on trio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import ollama
import openai
import pytest
import trio

from p2pinfer.gateway.config import GatewayConfig
from tests.support.gateway import MODEL, PROVIDER_A, FakeNodeView, running_gateway

T = TypeVar("T")
KEY = "client-test-key"
MESSAGES = [{"role": "user", "content": "hi"}]


async def _in_thread(fn: Callable[[], T]) -> T:
    with trio.fail_after(30):
        return await trio.to_thread.run_sync(fn)


async def test_openai_client_with_the_key_chats_and_sees_headers() -> None:
    config = GatewayConfig(port=0, api_keys=(KEY,))
    async with running_gateway(FakeNodeView(), config) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)

        def chat() -> openai.types.chat.ChatCompletion:
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL, messages=MESSAGES, max_tokens=5,  # type: ignore[arg-type]
                extra_body={"some_vendor_option": True})  # fmt: skip
            assert raw.headers["x-p2pinfer-provider"] == PROVIDER_A
            return raw.parse()

        reply = await _in_thread(chat)
        models = await _in_thread(lambda: [m.id for m in client.models.list()])
    assert reply.choices[0].message.content == "Hello" and reply.usage is not None
    assert models == [MODEL]


async def test_official_clients_get_their_own_error_classes() -> None:
    config = GatewayConfig(port=0, api_keys=(KEY,))
    async with running_gateway(FakeNodeView(), config) as gw:
        bad_key = openai.OpenAI(base_url=gw.url + "/v1", api_key="wrong", max_retries=0)
        good = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
        keyless = ollama.Client(host=gw.url)
        keyed = ollama.Client(host=gw.url, headers={"Authorization": f"Bearer {KEY}"})
        with pytest.raises(openai.AuthenticationError):
            await _in_thread(lambda: bad_key.models.list())
        with pytest.raises(openai.NotFoundError):
            await _in_thread(lambda: good.chat.completions.create(
                model="nope", messages=MESSAGES))  # type: ignore[arg-type]  # fmt: skip
        with pytest.raises(ollama.ResponseError) as unauthorized:
            await _in_thread(lambda: keyless.list())
        with pytest.raises(ollama.ResponseError) as unknown:
            await _in_thread(lambda: keyed.chat(model="nope", messages=MESSAGES))
        chat = await _in_thread(lambda: keyed.chat(model=MODEL, messages=MESSAGES,
                                                   options={"made_up": 1}))  # fmt: skip
    assert unauthorized.value.status_code == 401
    assert unknown.value.status_code == 404 and unknown.value.error == "model 'nope' not found"
    assert chat.message.content == "Hello"


async def test_openai_client_sees_the_rate_limit() -> None:
    config = GatewayConfig(port=0, rate_per_s=0.01, burst=1)
    async with running_gateway(FakeNodeView(), config) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        await _in_thread(lambda: client.models.list())
        with pytest.raises(openai.RateLimitError) as limited:
            await _in_thread(lambda: client.models.list())
    assert int(limited.value.response.headers["retry-after"]) >= 1


async def test_ollama_client_sends_ollama_api_key_as_the_bearer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = GatewayConfig(port=0, api_keys=(KEY,))
    async with running_gateway(FakeNodeView(), config) as gw:
        monkeypatch.setenv("OLLAMA_HOST", gw.url)
        monkeypatch.setenv("OLLAMA_API_KEY", KEY)
        client = ollama.Client()  # everything from the environment, as `ollama` users do
        chat = await _in_thread(lambda: client.chat(model=MODEL, messages=MESSAGES))
        monkeypatch.setenv("OLLAMA_API_KEY", "wrong")
        with pytest.raises(ollama.ResponseError) as refused:
            await _in_thread(lambda: ollama.Client().list())
    assert chat.message.content == "Hello"
    assert refused.value.status_code == 401

"""The gateway when a job fails over mid-answer: the cheap provider drips (attack 33),
the consumer leaves it under its pace floor and the dear one answers anew.

A reply not yet sent (stream false) is the dear provider's answer alone, charged once;
a streamed reply already carries the first provider's tokens, which cannot be taken
back, so it ends short in the API's own way (Ollama's error line; OpenAI's stream cut
before `[DONE]`, as Ollama's /v1 does). Before, both answered an error
(500 for the whole reply), though the whole reply had sent nothing yet."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from p2pinfer.gateway import GatewayConfig, run_gateway
from p2pinfer.gateway.view import HardwareView
from p2pinfer.jobs import candidates
from p2pinfer.jobs.job_types import ClientConfig
from p2pinfer.jobs.served_job import ServedJob
from p2pinfer.node.view import LiveNodeView
from p2pinfer.protocol import JobParams
from tests.integration.job_helpers import (
    FAKE_MODEL,
    CheapAndDear,
    FakeBackend,
    charges,
    cheap_and_dear,
)

pytestmark = pytest.mark.network

DEAR_ANSWER = "".join(f"t{i} " for i in range(10))


@asynccontextmanager
async def dripper_and_gateway(tmp_path: Path) -> AsyncIterator[tuple[str, CheapAndDear]]:
    """A cheap provider that answers one job at once (paid: proven, first by price), then
    drips at 2 tokens a second; a dear fast one; a consumer whose floor is 4 a second
    after 1 s; and its gateway's URL."""
    dripping = FakeBackend(tokens=[f"d{i} " for i in range(10)])
    floor = ClientConfig(min_tokens_per_s=4.0, pace_grace_s=1.0)
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        two = await cheap_and_dear(stack, nursery, tmp_path, cheap=dripping, config=floor,
                                   via_cheap=True)
        view = LiveNodeView(net=two.net, client=two.client, metrics=two.client.metrics,
                            ledger=two.ledger, hardware=HardwareView("test cpu", 1, 1024))
        binding = await nursery.start(partial(run_gateway, view, GatewayConfig(port=0)))
        proving = await two.client.run(FAKE_MODEL, "go", JobParams(max_tokens=10))
        assert proving.provider == two.cheap.net.peer_id
        dripping.delay_s = 0.5
        yield binding.url, two
        nursery.cancel_scope.cancel()


async def test_a_whole_reply_is_the_next_providers_answer_and_a_streamed_one_ends_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # About the replies, not the ranking: the dripper is not ranked last after each drip
    # (jobs/candidates.py), nor does it refuse the key that left it under the floor with
    # its output unpaid (attack 66: ServedJob.left_unpaid), so every request meets it first.
    monkeypatch.setattr(candidates, "TOO_SLOW_LAST_S", 0.0)
    monkeypatch.setattr(ServedJob, "left_unpaid", property(lambda job: False))
    with trio.fail_after(90):
        async with dripper_and_gateway(tmp_path) as (url, two), \
                httpx.AsyncClient(timeout=60) as http:
            ollama = await http.post(f"{url}/api/generate", json={
                "model": FAKE_MODEL, "prompt": "go", "stream": False,
                "options": {"num_predict": 10}})
            assert ollama.status_code == 200, ollama.text
            assert ollama.json()["response"] == DEAR_ANSWER
            openai = await http.post(f"{url}/v1/chat/completions", json={
                "model": FAKE_MODEL, "messages": [{"role": "user", "content": "go"}],
                "max_tokens": 10})
            assert openai.status_code == 200, openai.text
            assert openai.json()["choices"][0]["message"]["content"] == DEAR_ANSWER
            assert len(charges(two.ledger)) == 3  # the proving job, then one a reply
            assert len(charges(two.cheap.ledger)) == 1  # the proving job only
            # Streamed: the cheap one is still tried first, and its tokens go out at once.
            ollama = await http.post(f"{url}/api/generate", json={
                "model": FAKE_MODEL, "prompt": "go", "options": {"num_predict": 10}})
            assert ollama.status_code == 200
            lines = [json.loads(line) for line in ollama.text.splitlines()]
            sent = "".join(line.get("response", "") for line in lines)
            assert sent.startswith("d0 ") and "t0" not in sent
            assert "answered differently" in lines[-1]["error"]  # Ollama's error line
            openai = await http.post(f"{url}/v1/chat/completions", json={
                "model": FAKE_MODEL, "messages": [{"role": "user", "content": "go"}],
                "max_tokens": 10, "stream": True})
            assert openai.status_code == 200
            data = [line.removeprefix("data: ") for line in openai.text.splitlines()
                    if line.startswith("data: ")]
            sent = "".join(json.loads(d)["choices"][0]["delta"].get("content") or ""
                           for d in data if d != "[DONE]")
            assert sent.startswith("d0 ") and "t0" not in sent
            assert "[DONE]" not in data  # as Ollama's /v1 does: the stream just ends

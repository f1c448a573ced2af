"""Provider faults as a consumer sees them, and the HTTP gateway over the network."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from p2pinfer.backends.base import ChatMessage, SamplingParams, TokenDelta
from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import ModelSource
from p2pinfer.gateway import GatewayConfig, run_gateway
from p2pinfer.gateway.view import HardwareView
from p2pinfer.jobs.job_server import JobServerConfig
from p2pinfer.node.view import LiveNodeView
from p2pinfer.protocol import ChatTurn, JobParams, JobResult, decode_as
from p2pinfer.testing.faults import parse_fault
from p2pinfer.testing.tiny_model import write_tiny_model
from tests.integration.job_helpers import (
    FAKE_DIGEST,
    FAKE_MODEL,
    FakeBackend,
    charges,
    start_consumer,
    start_provider,
    wait_for_providers,
)

pytestmark = pytest.mark.network

TOKENS = [f"t{i} " for i in range(20)]


async def run_with_fault(tmp_path: Path, fault: str, max_tokens: int) -> tuple[str, JobResult]:
    backend = FakeBackend(TOKENS)
    config = JobServerConfig(fault=parse_fault(fault))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, backend, tmp_path, config=config)
            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            outcome = await client.run(FAKE_MODEL, "go", JobParams(max_tokens=max_tokens))
            nursery.cancel_scope.cancel()
    return outcome.text, decode_as(outcome.result, JobResult).msg


async def test_garbage_keeps_the_protocol_but_not_the_text(tmp_path: Path) -> None:
    text, result = await run_with_fault(tmp_path, "garbage", 6)
    honest = "".join(TOKENS[:6])
    assert len(text) == len(honest) and text != honest
    assert result.completion_tokens == 6  # the consumer's checks pass: only a verifier sees it


async def test_truncate_cuts_the_answer_and_bills_the_whole_budget(tmp_path: Path) -> None:
    text, result = await run_with_fault(tmp_path, "truncate", 10)
    assert text == "".join(TOKENS[:5])
    assert (result.completion_tokens, result.finish_reason) == (10, "stop")


async def test_slow_holds_every_token_back(tmp_path: Path) -> None:
    started = trio.current_time()
    text, _ = await run_with_fault(tmp_path, "slow=60", 5)
    assert text == "".join(TOKENS[:5])
    assert trio.current_time() - started >= 5 * 0.060


async def test_substitute_model_serves_another_model_under_the_advertised_name(
    tmp_path: Path,
) -> None:
    advertised = write_tiny_model(tmp_path / "a.gguf", seed=0)
    other = write_tiny_model(tmp_path / "b.gguf", seed=1)
    engine = EmbeddedBackend([ModelSource("tiny:latest", advertised),
                              ModelSource("cheap:latest", other)])
    [info, _] = await engine.list_models()

    class OneModel:  # the node advertises only the model it claims to run
        name = "embedded"

        async def list_models(self) -> list[object]:
            return [info]

        def __getattr__(self, attr: str) -> object:
            return getattr(engine, attr)

    params = SamplingParams(max_tokens=12, temperature=0.0, seed=1)
    turns = [ChatMessage("user", "hi")]

    async def direct(model: str) -> str:
        async with engine.chat(model, turns, params) as events:
            return "".join([e.text async for e in events if isinstance(e, TokenDelta)])

    config = JobServerConfig(fault=parse_fault("substitute-model=cheap:latest"))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, OneModel(), tmp_path,  # type: ignore[arg-type]
                                            config=config)
            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, "tiny:latest", 1)
            outcome = await client.run("tiny", [ChatTurn("user", "hi")],
                                       JobParams(max_tokens=12, temperature=0.0, seed=1))
            nursery.cancel_scope.cancel()
    assert outcome.text == await direct("cheap:latest") != await direct("tiny:latest")
    assert decode_as(outcome.result, JobResult).msg.digest == info.digest  # the lie


# Over 60 lines by design: one network, then each client's requests against it in turn.
async def test_the_gateway_answers_ollama_and_openai_clients_through_the_network(
    tmp_path: Path,
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, FakeBackend(TOKENS), tmp_path)
            net, client, ledger = await start_consumer(stack, tmp_path,
                                                       (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            view = LiveNodeView(net=net, client=client, metrics=client.metrics, ledger=ledger,
                                hardware=HardwareView("test cpu", 1, 1024))
            binding = await nursery.start(partial(run_gateway, view, GatewayConfig(port=0)))
            url = binding.url
            async with httpx.AsyncClient(base_url=url, timeout=20) as http:
                tags = (await http.get("/api/tags")).json()
                assert [(m["name"], m["digest"]) for m in tags["models"]] == [
                    (FAKE_MODEL, FAKE_DIGEST)]

                reply = await http.post("/api/chat", json={
                    "model": FAKE_MODEL, "stream": False, "options": {"num_predict": 4},
                    "messages": [{"role": "user", "content": "go"}]})
                assert reply.status_code == 200
                assert reply.json()["message"]["content"] == "t0 t1 t2 t3 "
                assert reply.headers["x-p2pinfer-provider"] == provider.net.peer_id
                job_id = reply.headers["x-p2pinfer-job-id"]
                assert charges(ledger) == [bytes.fromhex(job_id)]
                assert int(reply.headers["x-p2pinfer-charged"]) > 0

                pieces = []
                async with http.stream("POST", "/v1/chat/completions", json={
                    "model": FAKE_MODEL, "stream": True, "max_tokens": 3,
                    "messages": [{"role": "user", "content": "go"}]}) as stream:
                    assert stream.headers["x-p2pinfer-provider"] == provider.net.peer_id
                    async for line in stream.aiter_lines():
                        if line.startswith("data: {"):
                            delta = json.loads(line[6:])["choices"][0]["delta"]
                            pieces.append(delta.get("content") or "")
                assert "".join(pieces) == "t0 t1 t2 "

                missing = await http.post("/api/chat", json={
                    "model": "nobody:1b", "messages": [{"role": "user", "content": "go"}]})
                assert missing.status_code == 404
                metrics = (await http.get("/metrics")).text
                assert 'p2pinfer_jobs_total{outcome="completed",role="consumer"} 2.0' in metrics

                # The node's admin view saw both jobs, and its ledger paid for them.
                jobs = (await http.get("/admin/jobs")).json()
                assert jobs["live"] == []
                done = {j["job_id"]: j for j in jobs["recent"]}
                first = done[job_id]
                assert (first["role"], first["state"], first["provider"]) == (
                    "consumer", "done", provider.net.peer_id)
                assert first["completion_tokens"] == 4
                assert first["charged"] == int(reply.headers["x-p2pinfer-charged"])
                assert len(done) == 2 and all(j["state"] == "done" for j in done.values())
                summary = (await http.get("/admin/ledger")).json()
                assert summary["spent"] == sum(j["charged"] for j in done.values()) > 0
                assert summary["earned"] == 0
                assert [p["spent"] for p in summary["series"]][-1] == summary["spent"]
                (entry,) = (await http.get("/admin/catalog")).json()["entries"]
                assert entry["provider"] == provider.net.peer_id
                assert entry["hardware"]["cpu"] == "test cpu"
            nursery.cancel_scope.cancel()

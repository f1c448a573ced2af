"""The gateway over a real network: a provider running the embedded engine on the tiny
GGUF model, a consumer node with its ledger, libp2p between them, the gateway on the
consumer. What a client sees of the provider's model and of each job's price and charge,
and every row of docs/gateway.md's compatibility table."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from p2pinfer.backends.base import ModelInfo
from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import ModelSource
from p2pinfer.gateway import GatewayConfig, run_gateway
from p2pinfer.gateway.compat import IGNORED, PARAMETERS, REFUSED_ENDPOINTS
from p2pinfer.gateway.view import HardwareView
from p2pinfer.market.ledger import Ledger
from p2pinfer.node.view import LiveNodeView
from p2pinfer.protocol import charge_for
from p2pinfer.testing.tiny_model import TINY_MODEL_NAME, write_tiny_model
from tests.integration.job_helpers import Provider, start_consumer, start_provider
from tests.support.backends import REPO_ROOT

pytestmark = pytest.mark.network


@dataclass
class NetworkGateway:
    url: str
    provider: Provider
    model: ModelInfo  # what the provider's engine says of its model
    ledger: Ledger  # the consumer's


@asynccontextmanager
async def network_gateway(tmp_path: Path, config: GatewayConfig | None = None
                          ) -> AsyncIterator[NetworkGateway]:  # fmt: skip
    """A provider (embedded engine, tiny model) and a consumer serving the gateway."""
    engine = EmbeddedBackend([ModelSource(TINY_MODEL_NAME,
                                          write_tiny_model(tmp_path / "tiny.gguf"))],
                             embedding=True)  # the embeddings endpoints are in the table
    [model] = await engine.list_models()
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        provider = await start_provider(stack, nursery, engine, tmp_path)
        net, client, ledger = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
        await net.catalog.wait_for(lambda c: len(c.providers(TINY_MODEL_NAME)) >= 1)
        view = LiveNodeView(net=net, client=client, metrics=client.metrics, ledger=ledger,
                            hardware=HardwareView("test cpu", 1, 1024))
        binding = await nursery.start(partial(run_gateway, view,
                                              config or GatewayConfig(port=0)))
        try:
            yield NetworkGateway(binding.url, provider, model, ledger)
        finally:
            nursery.cancel_scope.cancel()
            await engine.aclose()


def _charge_of(ledger: Ledger, job_id: str) -> tuple[int, int]:
    """The consumer's one charge for `job_id`: (amount, tokens)."""
    found = [(e.body.amount, e.body.tokens) for e in ledger.entries()  # type: ignore[attr-defined]
             if e.kind == "charge" and e.body.job_id == bytes.fromhex(job_id)]
    assert len(found) == 1, found
    return found[0]


async def test_tags_and_show_keep_the_providers_model_metadata(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with network_gateway(tmp_path) as gw, httpx.AsyncClient(base_url=gw.url) as c:
            [tag] = (await c.get("/api/tags")).json()["models"]
            show = (await c.post("/api/show", json={"model": TINY_MODEL_NAME})).json()
            [listed] = (await c.get("/v1/models")).json()["data"]
    model = gw.model
    assert model.family and model.size_bytes > 0 and model.modified_at_ms > 0  # the engine's
    assert (tag["name"], tag["digest"], tag["size"]) == (model.name, model.digest,
                                                         model.size_bytes)
    modified = datetime.fromisoformat(tag["modified_at"])
    assert int(modified.timestamp() * 1000) == model.modified_at_ms  # not 1970
    details = tag["details"]
    assert (details["family"], details["parameter_size"], details["quantization_level"]) == (
        model.family, model.parameter_size, model.quantization)
    assert show["details"] == details and show["modified_at"] == tag["modified_at"]
    assert model.embedding_length > 0  # this provider embeds: Ollama names the length too
    assert show["model_info"] == {"general.architecture": model.family,
                                  f"{model.family}.context_length": model.context_length,
                                  f"{model.family}.embedding_length": model.embedding_length}
    assert listed["created"] == model.modified_at_ms // 1000


async def test_every_job_reply_names_its_price_and_a_stream_its_charge(tmp_path: Path) -> None:
    body = {"model": TINY_MODEL_NAME, "prompt": "hi", "options": {"num_predict": 4}}
    with trio.fail_after(60):
        async with network_gateway(tmp_path) as gw, httpx.AsyncClient(base_url=gw.url) as c:
            price = gw.provider.server.advertised_price(TINY_MODEL_NAME)
            whole = await c.post("/api/generate", json={**body, "stream": False})
            async with c.stream("POST", "/api/generate", json=body) as streamed:
                lines = [json.loads(line) async for line in streamed.aiter_lines() if line]
            async with c.stream("POST", "/v1/chat/completions", json={
                    "model": TINY_MODEL_NAME, "max_tokens": 4, "stream": True,
                    "messages": [{"role": "user", "content": "hi"}]}) as sse:
                events = [line async for line in sse.aiter_lines() if line]
            charged = {job_id: _charge_of(gw.ledger, job_id) for job_id in (
                r.headers["x-p2pinfer-job-id"] for r in (whole, streamed, sse))}
    assert price > 0
    for reply in (whole, streamed, sse):
        assert reply.status_code == 200
        # The price the job was charged at: the provider's price moves with its load (up
        # or down), and the consumer takes the quote of the advert it holds, so a job may
        # be served at another advert's price than the one read above.
        amount, tokens = charged[reply.headers["x-p2pinfer-job-id"]]
        served_at = int(reply.headers["x-p2pinfer-price-per-1k"])
        assert served_at > 0 and charge_for(served_at, tokens) == amount > 0
        assert reply.headers["x-p2pinfer-path"] == "direct"  # no relay between the two
    job = whole.headers["x-p2pinfer-job-id"]
    assert int(whole.headers["x-p2pinfer-charged"]) == charged[job][0]
    assert "x-p2pinfer-charged" not in streamed.headers
    last = lines[-1]["p2pinfer"]
    assert last["job_id"] == streamed.headers["x-p2pinfer-job-id"]
    assert last["price_per_1k"] == int(streamed.headers["x-p2pinfer-price-per-1k"])
    assert last["charged"] == charged[last["job_id"]][0] and last["path"] == "direct"
    finish = json.loads(events[-2].removeprefix("data: "))
    assert finish["choices"][0]["finish_reason"] in ("stop", "length")
    assert finish["p2pinfer"]["charged"] == charged[sse.headers["x-p2pinfer-job-id"]][0]


@dataclass(frozen=True)
class TableRow:
    """One row of docs/gateway.md's compatibility table."""

    method: str
    path: str
    parameter: str  # "" for the endpoint itself
    example: object
    here: str  # supported | ignored | refused (400) | not offered (404)


def compatibility_table() -> list[TableRow]:
    """The rows of the `## Compatibility` table in docs/gateway.md."""
    text = (REPO_ROOT / "docs" / "gateway.md").read_text()
    section = text.split("\n## Compatibility\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("endpoint", "---"):
            continue
        method, _, path = cells[0].partition(" ")
        rows.append(TableRow(method, path, cells[1], json.loads(cells[2]) if cells[2] else None,
                             cells[3]))
    return rows


def _base(method: str, path: str) -> dict[str, object] | None:
    messages = [{"role": "user", "content": "hi"}]
    return {
        "/api/generate": {"model": TINY_MODEL_NAME, "prompt": "hi", "stream": False,
                          "options": {"num_predict": 2}},
        "/api/chat": {"model": TINY_MODEL_NAME, "messages": messages, "stream": False,
                      "options": {"num_predict": 2}},
        "/v1/chat/completions": {"model": TINY_MODEL_NAME, "messages": messages,
                                 "max_tokens": 2},
        "/v1/completions": {"model": TINY_MODEL_NAME, "prompt": "hi", "max_tokens": 2},
        "/api/show": {"model": TINY_MODEL_NAME},
        "/api/embed": {"model": TINY_MODEL_NAME, "input": "hi"},
        "/api/embeddings": {"model": TINY_MODEL_NAME, "prompt": "hi"},
        "/v1/embeddings": {"model": TINY_MODEL_NAME, "input": "hi"},
    }.get(path, {"model": TINY_MODEL_NAME} if method != "GET" and method != "HEAD" else None)


def _request(row: TableRow) -> tuple[str, str, dict[str, object] | None]:
    path = row.path.replace("{model}", TINY_MODEL_NAME).replace("*", "x")
    body = _base(row.method, row.path)
    if row.parameter and body is not None:
        body = json.loads(json.dumps(body))
        value = TINY_MODEL_NAME if row.example == "MODEL" else row.example
        name = row.parameter
        if name.startswith("options."):
            body.setdefault("options", {})[name.removeprefix("options.")] = value  # type: ignore[union-attr]
        elif name.startswith("messages[]."):
            message = body["messages"][0]  # type: ignore[index]
            field = name.removeprefix("messages[].")
            message[field] = value
            message["role"] = ROLE_OF.get(field, message["role"])
        else:
            body[name] = value
        body.update(COMPANIONS.get((row.path, name), {}))
    return row.method, path, body


#: What a parameter needs beside it to be valid, as in OpenAI's API.
COMPANIONS: dict[tuple[str, str], dict[str, object]] = {
    ("/v1/chat/completions", "top_logprobs"): {"logprobs": True},
    ("/v1/chat/completions", "tool_choice"): {
        "tools": [{"type": "function", "function": {"name": "f"}}]},
}
#: The role of the message a message field belongs to (a user message has no tool calls).
ROLE_OF = {"tool_calls": "assistant", "tool_name": "tool", "tool_call_id": "tool"}


def test_the_table_lists_exactly_what_the_gateway_refuses_and_ignores() -> None:
    rows = compatibility_table()
    refused = {(r.path, r.parameter) for r in rows if r.here == "refused (400)"}
    assert refused == {(path, p.name) for path, table in PARAMETERS.items() for p in table}
    ignored = {(r.path, r.parameter) for r in rows if r.here == "ignored"}
    assert ignored == {(path, name) for path, names in IGNORED.items() for name in names}
    not_offered = {(r.method, r.path) for r in rows if r.here == "not offered (404)"}
    assert not_offered == {(e.method, e.path) for e in REFUSED_ENDPOINTS}
    assert {r.here for r in rows} == {"supported", "ignored", "refused (400)",
                                      "not offered (404)"}


async def test_every_row_of_the_compatibility_table_holds(tmp_path: Path) -> None:
    rows = compatibility_table()
    assert len(rows) > 150
    failures = []
    config = GatewayConfig(port=0, rate_per_s=0)  # ~180 requests at once
    with trio.fail_after(240):
        async with network_gateway(tmp_path, config) as gw, httpx.AsyncClient(
                base_url=gw.url, timeout=30) as c:
            for row in rows:
                method, path, body = _request(row)
                reply = await c.request(method, path, json=body)
                if not _holds(row, reply):
                    failures.append(f"{row}: {reply.status_code} {reply.text[:200]}")
    assert failures == [], "\n".join(failures)


def _holds(row: TableRow, reply: httpx.Response) -> bool:
    if row.here == "supported":
        return reply.status_code < 400
    if row.here == "ignored":
        return reply.status_code < 400 and row.parameter in reply.headers.get(
            "x-p2pinfer-ignored", "")
    error = reply.json().get("error")
    message = error["message"] if isinstance(error, dict) else error
    if row.here == "refused (400)":
        named = error.get("param") == row.parameter if isinstance(error, dict) else True
        return reply.status_code == 400 and named and f"'{row.parameter}'" in message
    return reply.status_code == 404 and "does not offer" in message

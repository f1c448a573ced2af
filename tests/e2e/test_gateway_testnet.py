"""The gateway of a real 3-node testnet (`p2pinfer testnet up`, SmolLM2 on every node,
embeddings on), driven by the official `openai` and `ollama` packages, LangChain's
`langchain-openai`/`langchain-ollama`, and headless Chromium.

Every job goes through node 0's gateway into the network, so it is served by one
of the nodes over libp2p and paid for in node 0's ledger.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from langchain_core.messages import HumanMessage
from langchain_ollama import ChatOllama, OllamaEmbeddings
from langchain_openai import OpenAIEmbeddings
from pydantic import SecretStr

from tests.e2e.gateway_helpers import (
    CALL_FORMAT,
    FORCE,
    GREEDY,
    JSON_PROMPT,
    MODEL,
    PARIS,
    TEXTS,
    TOOLS,
    WEATHER_ASK,
    City,
    RunningTestnet,
    check_logprobs,
    consumer_jobs,
    json_object_of,
    ledger_spent,
    metric_families,
    openai_chat_model,
    openai_client,
    refuse_the_internet,
    run_readme_curl,
    started_testnet,
    vectors_close,
    wait_until,
    weather_city,
)
from tests.support.backends import needs_engine
from tests.support.browser import (
    console_errors,
    full_page_screenshot,
    headless_chromium,
    text_of,
    wait_for,
)

pytestmark = [pytest.mark.network, pytest.mark.engine, needs_engine]

SCREENSHOT_ENV = "P2PINFER_SCREENSHOT"  # a file for the dashboard's, else the test's folder

@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTestnet]:
    with started_testnet(tmp_path_factory.mktemp("testnet")) as running:
        yield running


def test_the_readme_curl_example_answers_on_a_process_testnet(net: RunningTestnet) -> None:
    """README's `curl` line for `testnet up`, run as written (the directory swapped in)."""
    run = run_readme_curl(net.dir)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["done"] is True and answer["response"].strip(), answer
    assert answer["model"] == MODEL


def test_openai_client_lists_chats_streams_and_completes(net: RunningTestnet) -> None:
    client = openai.OpenAI(base_url=f"{net.url}/v1", api_key="unused", timeout=120,
                           max_retries=0)  # fmt: skip
    assert [m.id for m in client.models.list()] == [MODEL]
    messages: Any = [{"role": "user", "content": "Name three colours."}]
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, max_tokens=16, **GREEDY)
    whole = raw.parse()
    text = whole.choices[0].message.content
    assert text and whole.usage is not None and whole.usage.completion_tokens > 0
    assert raw.headers["x-p2pinfer-provider"] in net.peer_ids()
    assert int(raw.headers["x-p2pinfer-charged"]) > 0
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=16, stream=True, **GREEDY))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # greedy: the same answer, whichever node served it
    completion = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=8,
                                           **GREEDY)  # fmt: skip
    assert completion.choices[0].text and completion.usage is not None


def test_ollama_client_lists_chats_streams_and_generates(net: RunningTestnet) -> None:
    client = ollama.Client(host=net.url, timeout=120)
    assert [m.model for m in client.list().models] == [MODEL]
    options = {"num_predict": 12, **GREEDY}
    messages = [{"role": "user", "content": "Say hello."}]
    whole = client.chat(model="smollm2", messages=messages, options=options)
    assert whole.done and whole.message.content and whole.eval_count
    streamed = list(client.chat(model="smollm2", messages=messages, options=options,
                                stream=True))  # fmt: skip
    assert "".join(c.message.content or "" for c in streamed) == whole.message.content
    assert streamed[-1].done and not any(c.done for c in streamed[:-1])
    generated = client.generate(model=MODEL, prompt="Once upon a time", raw=True,
                                options=options)  # fmt: skip
    assert generated.response and generated.done
    pieces = list(client.generate(model=MODEL, prompt="Once upon a time", raw=True,
                                  options=options, stream=True))  # fmt: skip
    assert "".join(p.response for p in pieces) == generated.response
    assert MODEL in [m.model for m in client.ps().models]
    assert client.show("smollm2").details is not None


def test_unknown_models_raise_what_the_real_services_raise(net: RunningTestnet) -> None:
    with pytest.raises(ollama.ResponseError) as from_ollama:
        ollama.Client(host=net.url).chat(model="nope:1b", messages=[
            {"role": "user", "content": "hi"}])  # fmt: skip
    assert from_ollama.value.status_code == 404
    assert from_ollama.value.error == "model 'nope:1b' not found"
    client = openai.OpenAI(base_url=f"{net.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope:1b", messages=[
            {"role": "user", "content": "hi"}])  # fmt: skip


def test_both_ends_of_a_job_show_it_with_the_same_id_and_charge(net: RunningTestnet) -> None:
    before = httpx.get(f"{net.url}/admin/ledger").json()
    reply = httpx.post(f"{net.url}/api/generate", timeout=120, json={
        "model": MODEL, "prompt": "Count to five.", "stream": False,
        "options": {"num_predict": 10, **GREEDY}})  # fmt: skip
    assert reply.status_code == 200
    job_id, provider = reply.headers["x-p2pinfer-job-id"], reply.headers["x-p2pinfer-provider"]
    charged = int(reply.headers["x-p2pinfer-charged"])
    consumer_side = {j["job_id"]: j for j in httpx.get(f"{net.url}/admin/jobs").json()["recent"]}
    assert consumer_side[job_id]["role"] == "consumer"
    assert consumer_side[job_id]["charged"] == charged
    after = httpx.get(f"{net.url}/admin/ledger").json()
    assert after["spent"] - before["spent"] == charged
    provider_url = net.gateway_of(provider)

    def provider_recorded() -> bool:
        jobs = httpx.get(f"{provider_url}/admin/jobs").json()["recent"]
        return any(j["job_id"] == job_id and j["charged"] == charged for j in jobs)

    wait_until(provider_recorded, 30, "the provider's own record of the job")
    assert httpx.get(f"{provider_url}/admin/ledger").json()["earned"] > 0
    families = metric_families(net.url)
    assert families["p2pinfer_peers"].samples[0].value == 2
    assert families["p2pinfer_catalog_providers"].samples[0].value >= 2
    assert families["p2pinfer_balance_microcredits"].samples[0].value == after["balance"]


def test_dashboard_shows_peers_and_a_completed_job(net: RunningTestnet, tmp_path: Path) -> None:
    others = net.peer_ids() - {str(net.nodes[0].peer_id)}
    with headless_chromium(1440, 1000) as driver:
        driver.get(net.url + "/")
        wait_for(driver, lambda d: all(p[-6:] in text_of(d, "peers-body") for p in others), 30,
                 "both other peers in the peers table")  # fmt: skip
        peers = text_of(driver, "peers-body")
        assert MODEL in peers and "µcr" in peers and "cores" in peers
        reply = httpx.post(f"{net.url}/v1/chat/completions", timeout=120, json={
            "model": MODEL, "max_tokens": 24, "messages": [
                {"role": "user", "content": "Write a haiku about peers."}]})  # fmt: skip
        job = reply.headers["x-p2pinfer-job-id"][:8]

        def job_done(d: Any) -> bool:
            rows = text_of(d, "jobs-body").splitlines()
            return any(job in row and "done" in row for row in rows)

        wait_for(driver, job_done, 30, f"job {job} done in the jobs table")
        wait_for(driver, lambda d: text_of(d, "kpi-spent").split()[0] != "0", 10,
                 "the spending to show")  # fmt: skip
        time.sleep(2)  # one more refresh, so the chart holds the new charge
        shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "dashboard.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        full_page_screenshot(driver, str(shot))
        assert shot.stat().st_size > 10_000
        errors = console_errors(driver)
    assert errors == [], json.dumps(errors, indent=2)


# Issue 17's parity features through node 0's gateway, each from the official clients and
# from LangChain. LangChain must not reach the internet: `offline` refuses every
# non-loopback connection and any use of tiktoken (whose BPE files it would download).

@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_the_internet(monkeypatch)


@pytest.mark.usefixtures("offline")
def test_embeddings_agree_across_clients_and_langchain_and_are_charged(
    net: RunningTestnet,
) -> None:
    width = ollama.Client(host=net.url).show(MODEL).modelinfo["llama.embedding_length"]
    assert width == 576  # SmolLM2-135M's hidden size, as the providers advertise it
    spent = ledger_spent(net)
    raw = openai_client(net).embeddings.with_raw_response.create(model=MODEL, input=TEXTS)
    reference = [d.embedding for d in raw.parse().data]  # base64 on the wire, the default
    charged = int(raw.headers["x-p2pinfer-charged"])
    assert charged > 0 and ledger_spent(net) - spent == charged
    assert all(len(v) == width for v in reference) and not vectors_close(*reference)
    client = ollama.Client(host=net.url, timeout=120)
    assert all(map(vectors_close, client.embed(model=MODEL, input=TEXTS).embeddings, reference))
    assert vectors_close(client.embeddings(model=MODEL, prompt=TEXTS[1]).embedding, reference[1])
    spent = ledger_spent(net)
    langchain_openai = OpenAIEmbeddings(model=MODEL, base_url=f"{net.url}/v1",
                                        api_key=SecretStr("unused"), max_retries=0,
                                        check_embedding_ctx_length=False)  # fmt: skip
    assert all(map(vectors_close, langchain_openai.embed_documents(TEXTS), reference))
    assert vectors_close(langchain_openai.embed_query(TEXTS[0]), reference[0])
    langchain_ollama = OllamaEmbeddings(model=MODEL, base_url=net.url)
    assert all(map(vectors_close, langchain_ollama.embed_documents(TEXTS), reference))
    assert ledger_spent(net) > spent  # LangChain's calls were paid jobs too


@pytest.mark.usefixtures("offline")
def test_json_mode_answers_parse_from_every_client(net: RunningTestnet) -> None:
    messages: Any = [{"role": "user", "content": JSON_PROMPT}]
    reply = openai_client(net).chat.completions.create(
        model=MODEL, messages=messages, max_tokens=48, response_format={"type": "json_object"},
        **GREEDY)  # fmt: skip
    json_object_of(reply.choices[0].message.content)
    json_object_of(ollama.Client(host=net.url, timeout=120).chat(
        model=MODEL, messages=messages, format="json",
        options={"num_predict": 48, **GREEDY}).message.content)  # fmt: skip
    chat_ollama = ChatOllama(model=MODEL, base_url=net.url, format="json", num_predict=48,
                             **GREEDY)  # fmt: skip
    json_object_of(str(chat_ollama.invoke(JSON_PROMPT).content))
    json_openai = openai_chat_model(net, max_completion_tokens=48, **GREEDY).bind(
        response_format={"type": "json_object"})
    json_object_of(str(json_openai.invoke(JSON_PROMPT).content))


@pytest.mark.usefixtures("offline")
def test_json_schema_answers_validate_from_every_client(net: RunningTestnet) -> None:
    schema = City.model_json_schema()
    messages: Any = [{"role": "user", "content": PARIS}]
    reply = openai_client(net).chat.completions.create(
        model=MODEL, messages=messages, max_tokens=48, **GREEDY, response_format={
            "type": "json_schema", "json_schema": {"name": "City", "schema": schema}})
    City.model_validate_json(reply.choices[0].message.content or "")
    City.model_validate_json(ollama.Client(host=net.url, timeout=120).chat(
        model=MODEL, messages=messages, format=schema,
        options={"num_predict": 48, **GREEDY}).message.content or "")  # fmt: skip
    # method="json_schema": the schema goes in response_format/format, not as a tool.
    for chat in (openai_chat_model(net, max_completion_tokens=48, **GREEDY),
                 ChatOllama(model=MODEL, base_url=net.url, num_predict=48, **GREEDY)):
        answer = chat.with_structured_output(City, method="json_schema",
                                             include_raw=True).invoke(PARIS)  # fmt: skip
        assert isinstance(answer, dict) and answer["parsing_error"] is None, answer
        assert isinstance(answer["parsed"], City)
        assert not answer["raw"].tool_calls


@pytest.mark.usefixtures("offline")
def test_two_choices_are_two_jobs_charged_together(net: RunningTestnet) -> None:
    sampled = {"temperature": 1.0, "seed": 11}  # seed + i for choice i: the choices differ
    before, spent = consumer_jobs(net), ledger_spent(net)
    raw = openai_client(net).chat.completions.with_raw_response.create(
        model=MODEL, n=2, max_tokens=16, messages=[{"role": "user", "content": "Name a colour."}],
        **sampled)  # fmt: skip
    reply, charged = raw.parse(), int(raw.headers["x-p2pinfer-charged"])
    texts = [c.message.content for c in reply.choices]
    assert [c.index for c in reply.choices] == [0, 1] and all(texts) and texts[0] != texts[1]
    new = {k: v for k, v in consumer_jobs(net).items() if k not in before}
    assert len(new) == 2 and raw.headers["x-p2pinfer-job-id"] in new
    assert charged == sum(new.values()) == ledger_spent(net) - spent > 0
    generations = openai_chat_model(net, n=2, max_completion_tokens=16, **sampled).generate(
        [[HumanMessage("Name a colour.")]]).generations[0]
    assert [g.text for g in generations] == texts  # same seeds, same answers


@pytest.mark.usefixtures("offline")
def test_log_probabilities_have_their_shapes_from_every_client(net: RunningTestnet) -> None:
    messages: Any = [{"role": "user", "content": "Say hello."}]
    reply = openai_client(net).chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, logprobs=True, top_logprobs=2, **GREEDY)
    assert reply.choices[0].logprobs and reply.choices[0].logprobs.content and reply.usage
    openai_tokens = [(t.token, t.logprob, [(r.token, r.logprob) for r in t.top_logprobs])
                     for t in reply.choices[0].logprobs.content]  # fmt: skip
    check_logprobs(openai_tokens)
    assert len(openai_tokens) == reply.usage.completion_tokens
    assert "".join(t for t, _, _ in openai_tokens) == reply.choices[0].message.content
    legacy = openai_client(net).completions.create(model=MODEL, prompt="The sky is", max_tokens=4,
                                                   logprobs=2, **GREEDY).choices[0].logprobs
    assert legacy and legacy.tokens and legacy.token_logprobs and legacy.top_logprobs
    assert len(legacy.tokens) == len(legacy.token_logprobs) == len(legacy.top_logprobs)
    assert all(p <= 0 for p in legacy.token_logprobs)
    answer = ollama.Client(host=net.url, timeout=120).chat(
        model=MODEL, messages=messages, logprobs=True, top_logprobs=2,
        options={"num_predict": 8, **GREEDY})  # fmt: skip
    ollama_tokens = [(t.token, t.logprob, [(r.token, r.logprob) for r in t.top_logprobs or []])
                     for t in answer.logprobs or []]  # fmt: skip
    assert len(ollama_tokens) == answer.eval_count
    via_langchain = openai_chat_model(net, max_completion_tokens=8, logprobs=True, top_logprobs=2,
                                      **GREEDY).invoke("Say hello.")  # fmt: skip
    langchain_tokens = [(t["token"], t["logprob"], [(r["token"], r["logprob"])
                                                    for r in t["top_logprobs"]])
                        for t in via_langchain.response_metadata["logprobs"]["content"]]
    from_chat_ollama = ChatOllama(model=MODEL, base_url=net.url, num_predict=8, logprobs=True,
                                  top_logprobs=2, **GREEDY).invoke("Say hello.")  # fmt: skip
    chat_ollama_tokens = [(t.token, t.logprob, [(r.token, r.logprob) for r in t.top_logprobs])
                          for t in from_chat_ollama.response_metadata["logprobs"]]
    for tokens in (ollama_tokens, langchain_tokens, chat_ollama_tokens):
        check_logprobs(tokens)
        assert [t for t, _, _ in tokens] == [t for t, _, _ in openai_tokens]  # greedy: same


@pytest.mark.usefixtures("offline")
def test_openai_tool_calls_forced_streamed_and_answered(net: RunningTestnet) -> None:
    client, asked = openai_client(net), [{"role": "user", "content": WEATHER_ASK}]
    forced = client.chat.completions.create(
        model=MODEL, messages=asked, max_tokens=60, tools=TOOLS, tool_choice=FORCE, **GREEDY)
    choice = forced.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or ()
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather" and weather_city(call.function.arguments) == "Paris"
    # Streamed: OpenAI's deltas by index (id and name first, arguments in pieces).
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=asked, max_tokens=60, tools=TOOLS, tool_choice="required",
        stream=True, **GREEDY))  # fmt: skip
    calls: dict[int, dict[str, str]] = {}
    for delta in (c.choices[0].delta for c in chunks if c.choices):
        for piece in delta.tool_calls or ():
            into = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            into["id"] += piece.id or ""
            into["name"] += piece.function.name or "" if piece.function else ""
            into["arguments"] += piece.function.arguments or "" if piece.function else ""
    assert list(calls) == [0] and calls[0]["id"].startswith("call_")
    assert calls[0]["name"] == "get_weather" and weather_city(calls[0]["arguments"])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    # The tool's result goes back as a `tool` message and is answered in words.
    answered = client.chat.completions.create(
        model=MODEL, max_tokens=30, tools=TOOLS, **GREEDY, messages=[
            *asked, choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"}])
    assert answered.choices[0].message.content and not answered.choices[0].message.tool_calls
    assert answered.choices[0].finish_reason == "stop"


@pytest.mark.usefixtures("offline")
def test_ollama_client_tools_auto_answers_and_a_call_schema_forces_a_call(
    net: RunningTestnet,
) -> None:
    # Ollama's API has no tool_choice. In "auto" SmolLM2-135M answers prose (it writes no
    # calls of its own, even shown the tools as it was trained: docs/gateway.md); sending
    # the call's schema as `format` forces a call, whole and streamed.
    client = ollama.Client(host=net.url, timeout=120)
    options = {"num_predict": 60, **GREEDY}
    messages: Any = [{"role": "user", "content": WEATHER_ASK}]
    auto = client.chat(model=MODEL, messages=messages, tools=TOOLS, options=options)
    assert auto.done and auto.message.role == "assistant" and auto.message.content
    assert not auto.message.tool_calls
    forced = client.chat(model=MODEL, messages=messages, tools=TOOLS, options=options,
                         format=CALL_FORMAT)  # fmt: skip
    (call,) = forced.message.tool_calls or ()
    assert call.function.name == "get_weather" and weather_city(call.function.arguments) == "Paris"
    streamed = list(client.chat(model=MODEL, messages=messages, tools=TOOLS, options=options,
                                format=CALL_FORMAT, stream=True))  # fmt: skip
    calls = [c for part in streamed for c in part.message.tool_calls or ()]
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        (call.function.name, call.function.arguments)]
    assert streamed[-1].done and not "".join(p.message.content or "" for p in streamed)
    messages.extend([forced.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_name": "get_weather", "content": "18 C and sunny"}])
    answered = client.chat(model=MODEL, messages=messages, tools=TOOLS, options=options)
    assert answered.done and answered.message.content and not answered.message.tool_calls


@pytest.mark.usefixtures("offline")
def test_langchain_binds_tools_and_reads_the_calls(net: RunningTestnet) -> None:
    chat_openai = openai_chat_model(net, max_completion_tokens=60, **GREEDY)
    for tool_choice in ("get_weather", "required"):
        message = chat_openai.bind_tools(TOOLS, tool_choice=tool_choice).invoke(WEATHER_ASK)
        (call,) = message.tool_calls  # type: ignore[attr-defined]
        assert call["name"] == "get_weather" and weather_city(call["args"]), message
    streamed = [chunk for chunk in chat_openai.bind_tools(TOOLS, tool_choice="get_weather")
                .stream(WEATHER_ASK)]  # fmt: skip
    whole = streamed[0]
    for chunk in streamed[1:]:
        whole += chunk  # LangChain puts the streamed call's pieces together
    (call,) = whole.tool_calls  # type: ignore[attr-defined]
    assert call["name"] == "get_weather" and weather_city(call["args"]) == "Paris"
    # ChatOllama: no tool_choice in Ollama's API, so the call's schema as `format`.
    chat_ollama = ChatOllama(model=MODEL, base_url=net.url, num_predict=60,
                             format=CALL_FORMAT, **GREEDY)  # fmt: skip
    message = chat_ollama.bind_tools(TOOLS).invoke(WEATHER_ASK)
    (call,) = message.tool_calls  # type: ignore[attr-defined]
    assert call["name"] == "get_weather" and weather_city(call["args"]) == "Paris", message

"""The gateway of a real 3-node testnet (`p2pinfer testnet up`, SmolLM2 on every node),
driven by the official `openai` and `ollama` packages and by headless Chromium.

Every job goes through node 0's gateway into the network, so it is served by one
of the nodes over libp2p and paid for in node 0's ledger.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from p2pinfer import testnet
from tests.support.backends import REPO_ROOT, needs_engine
from tests.support.browser import (
    console_errors,
    full_page_screenshot,
    headless_chromium,
    text_of,
    wait_for,
)

pytestmark = [pytest.mark.network, pytest.mark.engine, needs_engine]

MODEL = "smollm2:135m"
GREEDY = {"temperature": 0.0, "seed": 7}
SCREENSHOT = REPO_ROOT / "bench" / "results" / "dashboard.png"


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "p2pinfer", *args], capture_output=True,
                          text=True, env=env, cwd=REPO_ROOT, timeout=timeout, check=False)


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)


class RunningTestnet:
    """The running testnet: node statuses, and node 0's gateway as the entry point."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.nodes = testnet.status(directory)
        urls = [n.gateway_url for n in self.nodes]
        assert all(urls), urls
        self.urls: list[str] = [str(u) for u in urls]
        self.url = self.urls[0]

    def peer_ids(self) -> set[str]:
        return {str(n.peer_id) for n in self.nodes}

    def gateway_of(self, peer_id: str) -> str:
        return next(u for n, u in zip(self.nodes, self.urls, strict=True) if n.peer_id == peer_id)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTestnet]:
    directory = tmp_path_factory.mktemp("testnet")
    up = _cli("testnet", "up", "--nodes", "3", "--dir", str(directory), "--models", MODEL,
              "--no-benchmark")  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr
        running = RunningTestnet(directory)

        def catalog_full() -> bool:
            entries = httpx.get(f"{running.url}/admin/catalog", timeout=5).json()["entries"]
            return len({e["provider"] for e in entries}) >= 2

        _wait(catalog_full, 60, "node 0 to hear both other providers' adverts")
        yield running
    finally:
        _cli("testnet", "down", "--dir", str(directory), timeout=60)


def test_the_readme_curl_example_answers_on_a_process_testnet(net: RunningTestnet) -> None:
    """README's `curl` line for `testnet up`, run as written (the directory swapped in)."""
    readme = (REPO_ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines()
                if x.startswith("curl ") and "--gateway-url" in x)
    command = line.replace("/tmp/tn", str(net.dir))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env,
                         cwd=REPO_ROOT, timeout=240, check=False)
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

    _wait(provider_recorded, 30, "the provider's own record of the job")
    assert httpx.get(f"{provider_url}/admin/ledger").json()["earned"] > 0
    families = {f.name: f for f in text_string_to_metric_families(
        httpx.get(f"{net.url}/metrics").text)}  # fmt: skip
    assert families["p2pinfer_peers"].samples[0].value == 2
    assert families["p2pinfer_catalog_providers"].samples[0].value >= 2
    assert families["p2pinfer_balance_microcredits"].samples[0].value == after["balance"]


def test_dashboard_shows_peers_and_a_completed_job(net: RunningTestnet) -> None:
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
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        full_page_screenshot(driver, str(SCREENSHOT))
        errors = console_errors(driver)
    assert errors == [], json.dumps(errors, indent=2)

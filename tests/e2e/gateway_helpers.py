"""What tests/e2e/test_gateway_testnet.py shares between its tests: running `p2pinfer`,
the running testnet's view, clients pointed at node 0's gateway, the prompts and tool
schemas the parity tests send, and the checks their answers must pass.

Kept apart from the test module so that it stays one module (one testnet fixture, started
once for all its tests).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import tiktoken
from langchain_openai import ChatOpenAI
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field, SecretStr

from p2pinfer.protocol.tools import call_schema
from p2pinfer.testnet import processes as testnet
from tests.support.backends import REPO_ROOT

MODEL = "smollm2:135m"
GREEDY = {"temperature": 0.0, "seed": 7}


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`python -m p2pinfer ARGS` from the repository root, output captured."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "p2pinfer", *args], capture_output=True,
                          text=True, env=env, cwd=REPO_ROOT, timeout=timeout, check=False)


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    """Poll `predicate` every 0.1 s; fail the test naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)



def run_readme_curl(directory: Path) -> subprocess.CompletedProcess[str]:
    """README's `curl` line for `testnet up`, run as written in bash with the testnet's
    `directory` in place of /tmp/tn (and this Python's `p2pinfer` first on PATH)."""
    readme = (REPO_ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines()
                if x.startswith("curl ") and "--gateway-url" in x)
    command = line.replace("/tmp/tn", str(directory))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=240, check=False)

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


@contextmanager
def started_testnet(directory: Path) -> Iterator[RunningTestnet]:
    """`testnet up` with 3 SmolLM2 nodes (embeddings on) in `directory`, once node 0 has
    heard both other providers' adverts; `testnet down` on the way out."""
    up = run_cli("testnet", "up", "--nodes", "3", "--dir", str(directory), "--models", MODEL,
                 "--no-benchmark", "--engine-option", "embedding=true")  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr
        running = RunningTestnet(directory)

        def catalog_full() -> bool:
            entries = httpx.get(f"{running.url}/admin/catalog", timeout=5).json()["entries"]
            return len({e["provider"] for e in entries}) >= 2

        wait_until(catalog_full, 60, "node 0 to hear both other providers' adverts")
        yield running
    finally:
        run_cli("testnet", "down", "--dir", str(directory), timeout=60)


def refuse_the_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any non-loopback connection and any use of tiktoken (whose BPE files LangChain
    would download) fail the test; turn LangSmith tracing off."""
    connect = socket.socket.connect


    def loopback_only(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and str(address[0]) not in (
                "127.0.0.1", "::1", "localhost"):  # fmt: skip
            raise AssertionError(f"a test tried to reach {address}")
        return connect(sock, address)

    def no_tiktoken(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("tiktoken was used (it downloads its BPE files)")

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    monkeypatch.setattr(tiktoken, "get_encoding", no_tiktoken)
    monkeypatch.setattr(tiktoken, "encoding_for_model", no_tiktoken)
    for variable in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2"):
        monkeypatch.delenv(variable, raising=False)


# What the parity tests send.

TEXTS = ["The cat sat on the mat.", "Stock markets fell sharply today."]
PARIS = "Describe Paris as JSON with its city and country."
JSON_PROMPT = "Describe Paris as JSON."  # greedy SmolLM2 answers it in a few tokens


class City(BaseModel):
    """The JSON schema the structured-output tests ask for."""

    city: str = Field(min_length=1, max_length=40)
    country: str = Field(min_length=1, max_length=40)


WEATHER = {"name": "get_weather", "description": "Get the current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}  # fmt: skip
TOOLS: Any = [{"type": "function", "function": WEATHER}]
FORCE: Any = {"type": "function", "function": {"name": "get_weather"}}
WEATHER_ASK = "What is the weather in Paris?"
CALL_FORMAT = call_schema([WEATHER], "required")  # the answer: a get_weather call


# Clients on node 0's gateway, and what they read back.

def openai_client(net: RunningTestnet) -> openai.OpenAI:
    """The official OpenAI client on node 0's gateway, no retries."""
    return openai.OpenAI(base_url=f"{net.url}/v1", api_key="unused", timeout=120, max_retries=0)


def openai_chat_model(net: RunningTestnet, **settings: Any) -> ChatOpenAI:
    """LangChain's ChatOpenAI on node 0's gateway, with `settings`."""
    return ChatOpenAI(model=MODEL, base_url=f"{net.url}/v1", api_key=SecretStr("unused"),
                      max_retries=0, timeout=120, **settings)  # fmt: skip


def ledger_spent(net: RunningTestnet) -> int:
    """What node 0's ledger says it has spent."""
    return int(httpx.get(f"{net.url}/admin/ledger").json()["spent"])


def consumer_jobs(net: RunningTestnet) -> dict[str, int]:
    """Node 0's recent jobs as a consumer: job id -> charge."""
    recent = httpx.get(f"{net.url}/admin/jobs").json()["recent"]
    return {j["job_id"]: j["charged"] for j in recent if j["role"] == "consumer"}


def metric_families(url: str) -> dict[str, Metric]:
    """The Prometheus metric families at `url`/metrics, by name."""
    return {f.name: f for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)}


# Checks on the answers.

def vectors_close(a: Sequence[float], b: Sequence[float]) -> bool:
    """Two embeddings equal to within 1e-5 in every component."""
    return len(a) == len(b) and all(abs(x - y) < 1e-5 for x, y in zip(a, b, strict=True))


def json_object_of(text: str | None) -> dict[str, Any]:
    """`text` parsed as JSON, asserted to be an object."""
    value = json.loads(text or "")
    assert isinstance(value, dict), text
    return value


def check_logprobs(tokens: list[tuple[str, float, list[tuple[str, float]]]]) -> None:
    """Each (token, logprob, top-2) is a greedy pick with its log probabilities."""
    assert tokens
    for token, logprob, top in tokens:
        assert logprob <= 0 and len(top) == 2 and all(p <= 0 for _, p in top)
        assert top[0] == (token, logprob) and top[0][1] >= top[1][1]  # greedy: the likeliest


def weather_city(arguments: Any) -> str:
    """The arguments of a get_weather call, checked against its parameter schema."""
    value = json.loads(arguments) if isinstance(arguments, str) else arguments
    assert isinstance(value, dict) and set(value) == {"city"}, arguments
    assert isinstance(value["city"], str) and value["city"].strip(), arguments
    return str(value["city"])

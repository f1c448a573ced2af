"""Start a `DevChain`: deploy, fund, write the deployment file, serve JSON-RPC on trio.

The deployment file is what `Deployment.to_json` writes plus `"rpc"` (the URL
served) and `"faucet"` (the account that deployed and funds); `p2pinfer wallet
--deployment FILE` and the process testnet read it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from p2pinfer.errors import UsageError
from p2pinfer.settle.devchain import DevChain
from p2pinfer.settle.jsonrpc import MAX_BODY_BYTES, asgi_app

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ChainServeOptions:
    """What `p2pinfer chain serve` was asked for."""

    deployment_file: Path
    host: str = "127.0.0.1"
    port: int = 8545
    preset: str = "seed"
    fund: tuple[tuple[str, int], ...] = ()  # (address, credit units)
    block_time_s: float = 0.0
    max_body: int = MAX_BODY_BYTES


def deploy_and_fund(chain: DevChain, preset: str,
                    fund: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """Deploy the contracts from the faucet and fund `fund`; the deployment as JSON data
    (without "rpc", which the caller adds once it listens)."""
    from p2pinfer.settle.artifacts import load_artifacts
    from p2pinfer.settle.deploy import deploy_all

    deployment = deploy_all(chain.w3, chain.faucet, preset=preset)
    chain.use_credit(deployment.credit, list(load_artifacts()["Credit"].abi))
    for address, units in fund:
        chain.fund(address, units)
    raw: Any = deployment.to_json()
    data: dict[str, Any] = dict(json.loads(raw) if isinstance(raw, str) else raw)
    data["faucet"] = chain.faucet
    return data


def write_deployment(path: Path, data: dict[str, Any]) -> None:
    """Write the deployment file atomically (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot serve the chain on {host}:{port}: {exc.strerror}") from None
    return sock


async def _mine_every(chain: DevChain, seconds: float) -> None:
    while True:
        await trio.sleep(seconds)
        chain.mine(1)


async def serve_chain(
    options: ChainServeOptions,
    chain: DevChain | None = None,
    *,
    task_status: TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the local chain (a new one unless `chain` is given) until cancelled;
    `task_status.started` gets the deployment."""
    from hypercorn.config import Config

    from p2pinfer.http.asgi_server import serve_asgi

    chain = chain or DevChain()
    data = deploy_and_fund(chain, options.preset, options.fund)
    chain.set_block_time(options.block_time_s)
    sock = _listen(options.host, options.port)
    if sock.getsockname()[0] not in ("127.0.0.1", "::1"):
        log.warning("chain serving off loopback host=%s: anyone who reaches it can call "
                    "the faucet p2pinfer_fund", options.host)
    try:
        host, port = sock.getsockname()[:2]
        data["rpc"] = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        config = Config()
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        config.graceful_timeout = 1.0
        async with trio.open_nursery() as nursery:
            if options.block_time_s > 0:
                nursery.start_soon(_mine_every, chain, options.block_time_s)
            await nursery.start(serve_asgi, asgi_app(chain.dispatch, options.max_body),
                                config, [sock])
            # Written once the server answers: its existence means "ready".
            write_deployment(options.deployment_file, data)
            log.info("chain ready rpc=%s channels=%s", data["rpc"], data.get("channels"))
            task_status.started(data)
    finally:
        sock.close()

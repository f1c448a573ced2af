"""The gateway's settings: where it binds, who may call it, how much.

`GatewayConfig.resolve()` builds one from the node's flags and the environment
and refuses (UsageError, one line) a non-loopback bind without an API key:
the API spends the node's credits, so it is never open to a network by default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from p2pinfer.addresses import is_loopback
from p2pinfer.errors import UsageError
from p2pinfer.gateway.browser import DEFAULT_ORIGINS, parse_origins

DEFAULT_HOST = "127.0.0.1"
#: Next to Ollama's 11434, which a provider's own Ollama backend may be using.
DEFAULT_PORT = 11435
API_KEY_ENV = "P2PINFER_API_KEY"
RATE_LIMIT_ENV = "P2PINFER_GATEWAY_RATE_LIMIT"
DEFAULT_RATE_PER_S = 20.0
DEFAULT_BURST = 40
DEFAULT_MAX_BODY_BYTES = 1 << 20  # a job request frame is at most 1 MiB anyway


def parse_bind(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `:PORT` (loopback) to (host, port); UsageError if bad."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or ("[" not in text and ":" in host):
        raise UsageError(f"--gateway must be HOST:PORT (e.g. 127.0.0.1:11435), not {text!r}")
    port = int(port_text)
    if port > 65535:
        raise UsageError(f"--gateway port must be 0..65535, not {port}")
    return host or DEFAULT_HOST, port


def parse_rate_limit(text: str) -> tuple[float, int]:
    """`RATE[/BURST]` requests per second per key (`0` turns limiting off); UsageError if bad."""
    rate_text, _, burst_text = text.strip().partition("/")
    try:
        rate = float(rate_text)
        burst = int(burst_text) if burst_text else max(1, int(rate * 2))
    except ValueError:
        raise UsageError(f"rate limit must be RATE[/BURST], e.g. 20/40, not {text!r}") from None
    if rate < 0 or burst < 1 or rate != rate:
        raise UsageError(f"rate limit must be RATE[/BURST] with RATE >= 0, BURST >= 1: {text!r}")
    return rate, burst


@dataclass(frozen=True)
class GatewayConfig:
    """How the gateway serves. `rate_per_s` 0 turns rate limiting off."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # Any of these, as `Authorization: Bearer KEY`; empty: no authentication (loopback only).
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    rate_per_s: float = DEFAULT_RATE_PER_S  # per key, or per client address without keys
    burst: int = DEFAULT_BURST
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    refresh_ms: int = 1500  # how often the dashboard polls /admin/*
    #: Browser origins whose pages may call the gateway (`*` wildcards; see gateway.browser).
    origins: tuple[str, ...] = DEFAULT_ORIGINS
    #: The node's own key for admin/governance POSTs (gateway.operator_key); also an API key.
    operator_key: str | None = field(default=None, repr=False)
    #: Connections held at once (None: a quarter of the process's open-files limit, within
    #: 64..1024) and from one client address (an IPv6 /64; loopback is held to the total
    #: only); more are answered 503 and closed (http/conn_gate.py).
    max_connections: int | None = None
    max_connections_per_ip: int = 64

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and not self.api_keys:
            raise UsageError(
                f"the gateway binds to {self.host}, which is not loopback: set an API key "
                f"with --api-key or {API_KEY_ENV}"
            )
        if any(not key or key != key.strip() for key in self.api_keys):
            raise UsageError("an API key must be non-empty and have no surrounding spaces")

    @property
    def bind(self) -> str:
        """The address in hypercorn's form (`[v6]:port` for IPv6)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def resolve(
        cls,
        gateway: str = f"{DEFAULT_HOST}:{DEFAULT_PORT}",
        *,
        api_key: str | None = None,
        rate_limit: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> GatewayConfig:
        """From `--gateway HOST:PORT`, `--api-key` and a `RATE[/BURST]` limit, or the env.

        Flags win over the environment (`P2PINFER_API_KEY`, comma-separated for
        several keys; `P2PINFER_GATEWAY_RATE_LIMIT`); `P2PINFER_ORIGINS` adds browser
        origins to the default allow-list.
        """
        env = os.environ if env is None else env
        host, port = parse_bind(gateway)
        keys_text = api_key if api_key is not None else env.get(API_KEY_ENV, "")
        keys = tuple(k.strip() for k in keys_text.split(",") if k.strip())
        rate_text = rate_limit if rate_limit is not None else env.get(RATE_LIMIT_ENV)
        rate, burst = (DEFAULT_RATE_PER_S, DEFAULT_BURST)
        if rate_text:
            rate, burst = parse_rate_limit(rate_text)
        return cls(host=host, port=port, api_keys=keys, rate_per_s=rate, burst=burst,
                   origins=parse_origins(env))

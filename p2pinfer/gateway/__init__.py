"""The node's HTTP gateway: Ollama + OpenAI APIs into the network, admin, metrics, dashboard.

The node builds a `GatewayConfig` (`GatewayConfig.resolve(--gateway, api_key=...)`),
implements `NodeView` over its parts and starts
`binding = await nursery.start(run_gateway, view, config)`. See docs/gateway.md.
"""

from p2pinfer.addresses import is_loopback
from p2pinfer.gateway.app import create_gateway_app
from p2pinfer.gateway.config import GatewayConfig, parse_bind
from p2pinfer.gateway.serve import GatewayBinding, run_gateway
from p2pinfer.gateway.view import JobMeta, NodeView

__all__ = [
    "GatewayBinding",
    "GatewayConfig",
    "JobMeta",
    "NodeView",
    "create_gateway_app",
    "is_loopback",
    "parse_bind",
    "run_gateway",
]

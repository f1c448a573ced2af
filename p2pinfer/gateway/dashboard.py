"""The dashboard page at `/`: one self-contained HTML file (inline CSS and JS, no CDN).

The page is a static shell that polls `/admin/*` with `fetch`; it holds no node
data and no secret, so it is served without authentication. When the gateway
has API keys, the page asks for one and sends it as `Authorization: Bearer`.
The Content-Security-Policy lets it talk to its own origin only.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from p2pinfer.gateway.config import GatewayConfig

#: Inline script and style only; fetches to this origin; images only as data: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


@cache
def _template() -> str:
    return resources.files("p2pinfer.gateway").joinpath("dashboard.html").read_text("utf-8")


def render_dashboard(config: GatewayConfig) -> str:
    """The page, told how often to poll and whether it needs a key."""
    return (
        _template()
        .replace("{{REFRESH_MS}}", str(int(config.refresh_ms)))
        .replace("{{AUTH_REQUIRED}}", "1" if config.api_keys else "0")
    )


def wants_html(request: Request) -> bool:
    """Whether the client is a browser asking for a page (not an Ollama client's probe)."""
    return "text/html" in request.headers.get("accept", "")


def dashboard_response(request: Request, config: GatewayConfig) -> Response:
    """`GET /`: the dashboard for browsers, `Ollama is running` for API clients' probes."""
    if not wants_html(request):
        return PlainTextResponse("Ollama is running")
    return Response(
        render_dashboard(config),
        media_type="text/html; charset=utf-8",
        headers={
            "content-security-policy": CONTENT_SECURITY_POLICY,
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "cache-control": "no-store",
        },
    )

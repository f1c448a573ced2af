"""A real browser (headless Chromium) against the gateway's Origin and Host checks.

A page from another origin runs a script that POSTs a job to the gateway as
`text/plain` (the request a page may send without a preflight) and writes what it
got into the page. Chromium maps the made-up names `foreign.example` and
`localhost.evil.example` to 127.0.0.1, so the pages are served locally but their
origins are foreign; `localhost` is on the default allow-list.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trio

from tests.support.browser import headless_chromium, text_of, wait_for
from tests.support.gateway import MODEL, FakeNodeView, running_gateway

RESOLVE = "--host-resolver-rules=MAP foreign.example 127.0.0.1, MAP *.evil.example 127.0.0.1"

PAGE = """<!doctype html><html><body><pre id="result">pending</pre><script>
fetch(GATEWAY + "/api/generate", {method: "POST", headers: {"content-type": "text/plain"},
  body: JSON.stringify({model: MODEL, prompt: "spend", stream: false})})
  .then(r => r.json().then(j => "status " + r.status + " " + (j.response || j.error)))
  .catch(e => "blocked " + e.name)
  .then(t => { document.getElementById("result").textContent = t; });
</script></body></html>"""


@contextmanager
def page_server(gateway: str) -> Iterator[int]:
    """Serves PAGE (calling `gateway`) on a free loopback port, in a thread."""
    html = PAGE.replace("GATEWAY", repr(gateway)).replace("MODEL", repr(MODEL)).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _results(gateway_port: int) -> dict[str, str]:
    """What the page shows when served from each origin."""
    gateway = f"http://127.0.0.1:{gateway_port}"
    shown = {}
    with page_server(gateway) as port, headless_chromium(800, 600, (RESOLVE,)) as driver:
        for name in ("localhost", "foreign.example", "localhost.evil.example"):
            driver.get(f"http://{name}:{port}/")
            wait_for(driver, lambda d: text_of(d, "result") != "pending", 15,
                     f"the page from {name} to finish")  # fmt: skip
            shown[name] = text_of(driver, "result")
        # DNS rebinding: the attacker's name now points at the gateway itself, so the
        # page and the gateway share an origin; the Host header still names the attacker.
        driver.get(f"http://foreign.example:{gateway_port}/")
        shown["rebound"] = str(driver.execute_script("return document.body.innerText"))
    return shown


async def test_only_pages_from_allowed_origins_can_run_jobs() -> None:
    view = FakeNodeView()
    async with running_gateway(view) as gw:
        with trio.fail_after(90):
            shown = await trio.to_thread.run_sync(partial(_results, gw.port))
    assert shown["localhost"] == "status 200 Hello"
    # The browser hides the 403 from the foreign page (no CORS header): a network error.
    assert shown["foreign.example"] == "blocked TypeError"
    assert shown["localhost.evil.example"] == "blocked TypeError"
    assert "is not allowed" in shown["rebound"] and "host" in shown["rebound"]
    # The simple POSTs reached the gateway, but only the allowed page's ran a job.
    assert len(view.backend.calls) == 1

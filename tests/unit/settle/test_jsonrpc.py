"""The JSON-RPC 2.0 envelope: single and batch requests, notifications, error objects,
and the HTTP side (POST only, a capped body)."""

from __future__ import annotations

import json
from typing import Any

import trio

from p2pinfer.settle.jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RpcError,
    asgi_app,
    handle_body,
)


def echo(method: str, params: list[Any]) -> Any:
    if method == "echo":
        return params
    if method == "fail":
        raise RpcError(3, "execution reverted: no", "0x08c379a0")
    raise RpcError(METHOD_NOT_FOUND, f"the method {method} does not exist/is not available")


def call(body: Any) -> Any:
    raw = handle_body(json.dumps(body).encode() if not isinstance(body, bytes) else body, echo)
    return None if raw is None else json.loads(raw)


def test_a_request_gets_its_result_under_its_id() -> None:
    assert call({"jsonrpc": "2.0", "id": 7, "method": "echo", "params": [1, "a"]}) == {
        "jsonrpc": "2.0", "id": 7, "result": [1, "a"]}


def test_an_error_keeps_code_message_and_data() -> None:
    reply = call({"jsonrpc": "2.0", "id": "x", "method": "fail", "params": []})
    assert reply["error"] == {"code": 3, "message": "execution reverted: no",
                              "data": "0x08c379a0"}
    assert reply["id"] == "x"


def test_unknown_method_is_32601() -> None:
    assert call({"jsonrpc": "2.0", "id": 1, "method": "nope"})["error"]["code"] == \
        METHOD_NOT_FOUND


def test_bad_json_is_a_parse_error_with_null_id() -> None:
    reply = call(b"{not json")
    assert reply["error"]["code"] == PARSE_ERROR and reply["id"] is None


def test_malformed_requests_are_invalid() -> None:
    for bad in ({"id": 1, "method": "echo"}, {"jsonrpc": "2.0", "id": 1, "method": 5},
                {"jsonrpc": "2.0", "id": [1], "method": "echo"}, 42):
        assert call(bad)["error"]["code"] == INVALID_REQUEST, bad


def test_params_by_name_are_refused() -> None:
    reply = call({"jsonrpc": "2.0", "id": 1, "method": "echo", "params": {"a": 1}})
    assert reply["error"]["code"] == INVALID_PARAMS


def test_a_batch_answers_each_request_and_skips_notifications() -> None:
    replies = call([
        {"jsonrpc": "2.0", "id": 1, "method": "echo", "params": [1]},
        {"jsonrpc": "2.0", "method": "echo", "params": [2]},  # notification
        {"jsonrpc": "2.0", "id": 3, "method": "nope"},
        "garbage",
    ])
    assert [r["id"] for r in replies] == [1, 3, None]
    assert replies[0]["result"] == [1]
    assert replies[1]["error"]["code"] == METHOD_NOT_FOUND
    assert replies[2]["error"]["code"] == INVALID_REQUEST


def test_an_empty_batch_is_invalid_and_notifications_alone_get_no_body() -> None:
    assert call([])["error"]["code"] == INVALID_REQUEST
    assert call({"jsonrpc": "2.0", "method": "echo"}) is None
    assert call([{"jsonrpc": "2.0", "method": "echo"}]) is None


async def _asgi(method: str, chunks: list[bytes], max_body: int = 64) -> tuple[int, bytes]:
    app = asgi_app(echo, max_body=max_body)
    incoming = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "http", "method": method, "path": "/"}, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_http_post_answers_and_other_methods_get_405() -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "echo", "params": []}).encode()
    status, reply = await _asgi("POST", [body[:10], body[10:]])
    assert status == 200 and json.loads(reply)["result"] == []
    assert (await _asgi("GET", [b""]))[0] == 405


async def test_a_body_over_the_cap_is_413() -> None:
    status, reply = await _asgi("POST", [b"x" * 40, b"y" * 40], max_body=64)
    assert status == 413
    assert json.loads(reply)["error"]["code"] == INVALID_REQUEST

"""Attack "small ones" on the shared testnet's real gateway: requests the wire cannot
carry (a stop string over 256 characters, content over 262,144, a lone surrogate, a body
nested 200,000 deep) get a 400 in each API's own error shape, never a 500 (nor a dead
node), and honest jobs go on."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.attack_net import MODEL, AttackNet, honest_load
from tests.support.backends import needs_engine

pytestmark = [pytest.mark.network, pytest.mark.engine, needs_engine]


def bodies(openai: bool) -> dict[str, bytes]:
    chat = {"model": MODEL, "stream": False, "messages": [{"role": "user", "content": "@"}]}
    stop = {"stop": ["s" * 257]} if openai else {"options": {"stop": ["s" * 257]}}
    lone = json.dumps(chat).replace("@", "a\\ud800b")
    return {
        "stop over 256 chars": json.dumps({**chat, **stop}).replace("@", "hi").encode(),
        "content over 262,144 chars": json.dumps(chat).replace("@", "x" * 262_145).encode(),
        "lone surrogate": lone.encode(),
        # Attack 39: json.loads recursed 200,000 deep, past the C stack (the node's
        # recursion limit is raised by py_ecc): the node process died.
        "nested 200,000 deep": json.dumps(chat).replace(
            '"@"', "[" * 200_000 + "]" * 200_000).encode(),
    }


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_small_ones_are_400_in_the_apis_shape_on_a_real_gateway(
    attack_net: AttackNet, path: str,
) -> None:
    openai = path.startswith("/v1")
    gateway = attack_net.gateway()
    with honest_load(gateway) as load, httpx.Client(base_url=gateway, timeout=60) as client:
        replies = {what: client.post(path, content=body,
                                     headers={"content-type": "application/json"})
                   for what, body in bodies(openai).items()}
    for what, reply in replies.items():
        assert reply.status_code == 400, (what, reply.status_code, reply.text[:300])
        error = reply.json()["error"]
        if openai:
            assert error["type"] == "invalid_request_error" and error["message"], what
        else:
            assert isinstance(error, str) and error, what
    assert load.jobs >= 3 and load.failures == []

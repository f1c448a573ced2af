"""`http.asgi_body.read_body`: a request body read whole, within a limit."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest

from p2pinfer.http.asgi_body import BodyTooLarge, read_body


def messages(*items: dict[str, Any]) -> Any:
    queue = list(items)

    async def receive() -> MutableMapping[str, Any]:
        return queue.pop(0)

    return receive


async def test_chunks_are_joined_up_to_the_last() -> None:
    receive = messages({"type": "http.request", "body": b"ab", "more_body": True},
                       {"type": "http.request", "body": b"cd"})
    assert await read_body(receive, 4) == b"abcd"


async def test_a_body_one_byte_over_the_limit_is_refused_before_the_rest_is_read() -> None:
    receive = messages({"type": "http.request", "body": b"abc", "more_body": True},
                       {"type": "http.request", "body": b"de", "more_body": True})
    with pytest.raises(BodyTooLarge):
        await read_body(receive, 4)


async def test_a_client_gone_mid_body_gives_none() -> None:
    receive = messages({"type": "http.request", "body": b"ab", "more_body": True},
                       {"type": "http.disconnect"})
    assert await read_body(receive, 100) is None

"""Pubsub: in stock py-libp2p 0.8.1 a malformed RPC (protobuf DecodeError) escapes the
stream handler and ends the host; RobustPubsub resets that peer's stream only. With real
hosts: tests/integration/test_net_pubsub_robust.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from libp2p.pubsub.pubsub import Pubsub

from p2pinfer.net.compat import pubsub_decode
from p2pinfer.net.compat.pubsub_decode import RobustPubsub
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

PEER = "peer-a"


class FakeStream:
    """A pubsub stream from PEER; records a reset."""

    def __init__(self) -> None:
        self.muxed_conn = SimpleNamespace(peer_id=PEER)
        self.was_reset = False

    async def reset(self) -> None:
        self.was_reset = True


def reading_garbage(cls: type[Pubsub]) -> Any:
    """An instance of `cls` (not started) whose stream reader meets a garbled RPC."""
    pubsub: Any = cls.__new__(cls)
    pubsub.dead = []

    async def read(stream: Any) -> None:
        raise DecodeError("Error parsing message")

    pubsub.continuously_read_stream = read
    pubsub._handle_dead_peer = pubsub.dead.append
    return pubsub


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(pubsub_decode)


async def test_defect_stock_libp2p_lets_a_decode_error_escape() -> None:
    # If this fails, upstream catches it: build a plain Pubsub and drop RobustPubsub.
    with pytest.raises(DecodeError):
        await reading_garbage(Pubsub).stream_handler(FakeStream())


async def test_a_malformed_rpc_resets_that_peers_stream_only() -> None:
    pubsub = reading_garbage(RobustPubsub)
    stream = FakeStream()
    await pubsub.stream_handler(stream)
    assert stream.was_reset
    assert pubsub.dead == [PEER]

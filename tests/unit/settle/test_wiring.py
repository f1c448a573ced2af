"""A node with settlement on reaches its chain at start, or exits 15 with one line."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from p2pinfer.errors import ChainError, ChainUnreachableError
from p2pinfer.identity import NodeIdentity
from p2pinfer.settle.wiring import Settlement, connect_chain
from tests.support.fake_chain import FakeChainForTests


@dataclass(frozen=True)
class Flags:
    chain_rpc: str | None
    chain_contract: str | None


def test_an_unreachable_chain_is_chain_unreachable_exit_15() -> None:
    # Port 9 (discard) on localhost: nothing answers JSON-RPC there.
    with pytest.raises(ChainUnreachableError) as failed:
        connect_chain(Flags("http://127.0.0.1:9", "0x" + "c0" * 20), NodeIdentity.generate())
    assert failed.value.exit_code == 15


def test_settlement_refuses_a_chain_client_of_another_account() -> None:
    identity = NodeIdentity.generate()
    with pytest.raises(ChainError, match="not this node's account"):
        Settlement.build(FakeChainForTests("0x" + "11" * 20), identity, None)

"""What a chain testnet funds each account with, and the flags its nodes get."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pinfer import testnet_chain
from p2pinfer.errors import UsageError
from p2pinfer.session import session_config
from p2pinfer.testnet_chain import (
    CHANNEL_DEPOSIT,
    CONSUMER_CREDITS,
    PROVIDER_STAKE,
    ChainSpec,
    grants,
)


def test_each_account_is_granted_what_it_spends_plus_its_free_credits() -> None:
    a, b, c, consumer = Path("n0"), Path("n1"), Path("n2"), Path("consumer")
    providers = [a, b, c]
    got = grants([a, b, c, consumer], stakers=[a, b], providers=providers)
    assert got == [CONSUMER_CREDITS + PROVIDER_STAKE + 2 * CHANNEL_DEPOSIT,
                   CONSUMER_CREDITS + PROVIDER_STAKE + 2 * CHANNEL_DEPOSIT,
                   CONSUMER_CREDITS + 2 * CHANNEL_DEPOSIT,
                   CONSUMER_CREDITS + 3 * CHANNEL_DEPOSIT]


def test_nodes_redeem_often_on_a_testnet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testnet_chain, "node_accepts_chain_flags", lambda: True)
    args = testnet_chain.chain_node_args(ChainSpec(1, "d", "http://127.0.0.1:1", "0xC"))
    assert args[args.index("--redeem-max-interval") + 1] == "20"
    assert args[args.index("--redeem-gas-multiple") + 1] == "0"


def test_chain_flags_go_together(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="go together"):
        session_config(tmp_path, ["/ip4/127.0.0.1/tcp/1/p2p/"
                                  "12D3KooWBsVJgWTNzEkphUhBTreqg3ZmQ588yNVXgdQXKujPwbUc"],
                       None, chain_rpc="http://127.0.0.1:1")


def test_unstaked_indexes_must_name_nodes(tmp_path: Path) -> None:
    from p2pinfer import testnet

    with pytest.raises(UsageError, match="--unstaked"):
        testnet.up(tmp_path, 2, chain=True, unstaked=frozenset({2}))
    assert not (tmp_path / "testnet.json").exists()

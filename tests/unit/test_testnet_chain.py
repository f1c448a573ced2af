"""What a chain testnet funds each account with, and the flags its nodes get."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from p2pinfer.errors import UsageError
from p2pinfer.node.session import session_config
from p2pinfer.testnet import chain as testnet_chain
from p2pinfer.testnet.chain import (
    CHANNEL_DEPOSIT,
    CONSUMER_CREDITS,
    PROVIDER_STAKE,
    VALIDATOR_STAKE,
    ChainSpec,
    grants,
)


def test_each_account_is_granted_what_it_spends_plus_its_free_credits() -> None:
    a, b, c, consumer = Path("n0"), Path("n1"), Path("n2"), Path("consumer")
    providers = [a, b, c]
    got = grants([a, b, c, consumer], {a: PROVIDER_STAKE, b: VALIDATOR_STAKE}, providers)
    assert got == [CONSUMER_CREDITS + PROVIDER_STAKE + 2 * CHANNEL_DEPOSIT,
                   CONSUMER_CREDITS + VALIDATOR_STAKE + 2 * CHANNEL_DEPOSIT,
                   CONSUMER_CREDITS + 2 * CHANNEL_DEPOSIT,
                   CONSUMER_CREDITS + 3 * CHANNEL_DEPOSIT]


def test_the_node_command_takes_the_chain_flags_the_testnet_passes() -> None:
    from p2pinfer.cli import node_cmds

    params = inspect.signature(node_cmds.node).parameters
    assert testnet_chain.node_accepts_chain_flags()
    assert "chain_rpc" in params and "chain_contract" in params


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
    from p2pinfer.testnet import processes as testnet

    with pytest.raises(UsageError, match="--unstaked"):
        testnet.up(tmp_path, 2, chain=True, unstaked=frozenset({2}))
    assert not (tmp_path / "testnet.json").exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"validators": frozenset({3})}, "--validator takes node indexes"),
    ({"chain": True, "validators": frozenset({1}), "unstaked": frozenset({1})},
     "cannot be --unstaked"),
    ({"validators": frozenset({0}), "backend": "none"}, "not with --backend none"),
])
def test_validator_indexes_are_checked_before_anything_starts(
        tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    from p2pinfer.testnet import processes as testnet

    with pytest.raises(UsageError, match=message):
        testnet.up(tmp_path, 3, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "testnet.json").exists()


def test_a_validator_node_runs_with_its_check_interval_and_short_votes() -> None:
    from p2pinfer.testnet import processes as testnet

    options = testnet.NodeOptions(check_interval_s=2.0, gov_min_voting_s=20)
    validator = testnet._node_command(Path("h"), None, "fake-stream=50", [], None, False,
                                      options, [], validator=True)
    provider = testnet._node_command(Path("h"), None, "fake-stream=50", [], None, False,
                                     options, [])
    assert validator[validator.index("--check-interval") + 1] == "2"
    assert "--validator" not in provider and "--check-interval" not in provider
    assert provider[provider.index("--gov-min-voting-s") + 1] == "20"

"""The chain account derived from the node key, and the binding of it to the PeerID."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pinfer.identity import NodeIdentity, peer_id_to_bytes
from p2pinfer.settle.account import (
    ChainAccount,
    account_of,
    bind_signature,
    check_binding,
    derive_private_key,
)

SEED = bytes(range(32))
# Computed once with hashlib + eth_keys alone: sha256(domain ++ seed) mod n.
SEED_ADDRESS = "0xaAc26Bae3AEaa6826773c5b870d9d3ca40A393bb"


def test_known_vector() -> None:
    assert account_of(NodeIdentity.from_seed(SEED)).address == SEED_ADDRESS


def test_derivation_is_deterministic() -> None:
    node = NodeIdentity.generate()
    assert account_of(node) == account_of(NodeIdentity.from_seed(node.seed))


@settings(max_examples=20, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_different_keys_give_different_addresses(a: bytes, b: bytes) -> None:
    if a != b:
        assert derive_private_key(a) != derive_private_key(b)
        assert (account_of(NodeIdentity.from_seed(a)).address
                != account_of(NodeIdentity.from_seed(b)).address)


def test_repr_never_shows_the_private_key() -> None:
    acct = account_of(NodeIdentity.from_seed(SEED))
    assert acct.private_key.hex() not in repr(acct)
    assert acct.address in repr(acct)


def test_a_binding_verifies_for_str_and_bytes_peer_ids() -> None:
    node = NodeIdentity.generate()
    acct = account_of(node)
    sig = bind_signature(acct, node.peer_id)
    assert len(sig) == 65
    assert check_binding(acct.address, node.peer_id, sig)
    assert check_binding(acct.address.lower(), peer_id_to_bytes(node.peer_id), sig)


def test_a_binding_by_another_key_is_refused() -> None:
    node, other = NodeIdentity.generate(), NodeIdentity.generate()
    forged = bind_signature(account_of(other), node.peer_id)
    assert not check_binding(account_of(node).address, node.peer_id, forged)


def test_a_binding_for_another_peer_is_refused() -> None:
    node, other = NodeIdentity.generate(), NodeIdentity.generate()
    acct = account_of(node)
    assert not check_binding(acct.address, other.peer_id, bind_signature(acct, node.peer_id))


@pytest.mark.parametrize("sig", [
    b"", b"\x00" * 65, b"\xff" * 65, b"\x01" * 64, b"\x01" * 66, bytes(64) + b"\x1b",
])
def test_malformed_signatures_are_refused(sig: bytes) -> None:
    acct = account_of(NodeIdentity.from_seed(SEED))
    assert not check_binding(acct.address, NodeIdentity.from_seed(SEED).peer_id, sig)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=80), st.text(max_size=60), st.text(max_size=50))
def test_attacker_bytes_never_raise(sig: bytes, address: str, peer_id: str) -> None:
    assert check_binding(address, peer_id, sig) in (True, False)


def test_account_from_private_key_round_trips() -> None:
    key = derive_private_key(SEED)
    assert ChainAccount.from_private_key(key).address == SEED_ADDRESS

"""p2pinfer.settle.vouchers agrees with the contracts, with ecrecover, and with eth_account."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pinfer.settle.vouchers import (
    SECP256K1_N,
    address_of,
    personal_hash,
    recover_signer,
    sign_digest,
    slash_digest,
    voucher_digest,
)
from tests.unit.settle.conftest import Chain

KEY = (7).to_bytes(32, "big")
DIGEST = bytes(range(32))
ECRECOVER = "0x0000000000000000000000000000000000000001"


def onchain_ecrecover(chain: Chain, digest: bytes, sig: bytes) -> str | None:
    """The ecrecover precompile's answer for an EIP-191 signature of `digest`."""
    data = personal_hash(digest) + bytes(31) + sig[64:65] + sig[0:64]
    out = bytes(chain.w3.eth.call({"to": ECRECOVER, "data": "0x" + data.hex()}))
    if not out or out == bytes(32):
        return None
    return chain.w3.to_checksum_address(out[12:])


def test_digests_match_the_contracts_views(chain: Chain) -> None:
    consumer, provider, chain_id = chain.accounts[2], chain.accounts[1], chain.deployment.chain_id
    assert voucher_digest(chain.channels.address, chain_id, consumer, provider, 12_345) == bytes(
        chain.channels.functions.voucher_digest(consumer, provider, 12_345).call()
    )
    evidence = bytes.fromhex("5a" * 32)
    assert slash_digest(chain.stake.address, chain_id, provider, 99, evidence) == bytes(
        chain.stake.functions.slash_digest(provider, 99, evidence).call()
    )


def test_signature_is_the_eip191_personal_signature_eth_account_makes() -> None:
    ours = sign_digest(KEY, DIGEST)
    theirs = Account.sign_message(encode_defunct(primitive=DIGEST), KEY).signature
    assert ours == bytes(theirs)
    assert ours[64] in (27, 28)
    assert recover_signer(DIGEST, ours) == address_of(KEY) == Account.from_key(KEY).address


@settings(max_examples=25, deadline=None)
@given(key=st.integers(1, SECP256K1_N - 1), digest=st.binary(min_size=32, max_size=32))
def test_sign_then_recover_round_trips(key: int, digest: bytes) -> None:
    private_key = key.to_bytes(32, "big")
    assert recover_signer(digest, sign_digest(private_key, digest)) == address_of(private_key)


def test_recover_agrees_with_ecrecover_on_good_high_s_and_junk_signatures(chain: Chain) -> None:
    good = sign_digest(KEY, DIGEST)
    s = int.from_bytes(good[32:64], "big")
    high_s = good[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - good[64]])
    cases = [good, high_s, bytes(65), b"\xff" * 65, good[:64] + b"\x00", good[:64] + b"\x1d"]
    cases += [r.to_bytes(32, "big") + (5).to_bytes(32, "big") + b"\x1b" for r in range(2, 12)]
    cases.append(SECP256K1_N.to_bytes(32, "big") + good[32:])
    for sig in cases:
        assert recover_signer(DIGEST, sig) == onchain_ecrecover(chain, DIGEST, sig), sig.hex()
    assert recover_signer(DIGEST, high_s) == address_of(KEY)


@pytest.mark.parametrize("sig", [b"", b"\x1b", bytes(64), bytes(66), b"\x00" * 64 + b"\x1b"])
def test_malformed_signatures_recover_none(sig: bytes) -> None:
    assert recover_signer(DIGEST, sig) is None


def test_a_python_signed_voucher_redeems_on_chain(chain: Chain) -> None:
    consumer, provider = chain.accounts[2], chain.accounts[1]
    chain.deposit(consumer, provider, 100)
    digest = voucher_digest(chain.channels.address, chain.deployment.chain_id, consumer,
                            provider, 100)
    sig = sign_digest(chain.keys[consumer], digest)
    assert recover_signer(digest, sig) == consumer
    chain.tx(provider, chain.channels.functions.redeem(consumer, 100, sig))
    assert chain.balance(provider) == 60


def test_evidence_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32-byte"):
        slash_digest(address_of(KEY), 1, address_of(KEY), 1, b"short")

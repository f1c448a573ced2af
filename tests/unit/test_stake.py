"""Stake declarations: signing, encoding, verification, minimums, slashing."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pinfer.errors import DecodeError, SignatureError, ValidationError
from p2pinfer.market.stake import (
    DEFAULT_MINIMUM_STAKE,
    STAKE_DOMAIN,
    StakeDeclaration,
    StakeStatus,
    meets_minimum,
    sign_stake,
    slash_amount,
    verify_stake,
)
from p2pinfer.protocol import canonical
from p2pinfer.protocol.records import sign_record
from tests.market_support import fixed_identity

PROVIDER = fixed_identity(1)


def test_minimum_stake_default_is_ten_thousand_credits() -> None:
    assert DEFAULT_MINIMUM_STAKE == 10_000 * 1_000_000


@given(amount=st.integers(0, 2**63 - 1), issued_at=st.integers(0, 2**63 - 1))
def test_a_signed_declaration_round_trips_and_verifies(amount: int, issued_at: int) -> None:
    decl = sign_stake(PROVIDER, amount, issued_at)
    again = StakeDeclaration.decode(decl.encode())
    assert again == decl
    verify_stake(again)


def test_changing_any_field_breaks_the_signature() -> None:
    decl = sign_stake(PROVIDER, 10**10, 5)
    for forged in (dataclasses.replace(decl, amount=decl.amount + 1),
                   dataclasses.replace(decl, issued_at=6),
                   dataclasses.replace(decl, provider=fixed_identity(2).public_key)):
        with pytest.raises(SignatureError):
            verify_stake(forged)


def test_signature_is_bound_to_the_stake_domain() -> None:
    decl = sign_stake(PROVIDER, 10**10, 5)
    unsigned = decl.signing_bytes()[len(STAKE_DOMAIN):]
    assert decl.signing_bytes().startswith(b"p2pinfer/v1/stake")
    # A signature over the same map without the domain (e.g. another message type) is useless.
    other = dataclasses.replace(decl, signature=PROVIDER.sign(unsigned))
    with pytest.raises(SignatureError):
        verify_stake(other)


def test_malformed_declarations_are_refused() -> None:
    decl = sign_stake(PROVIDER, 1, 1)
    with pytest.raises(DecodeError):
        StakeDeclaration.decode(b"\x93\x01")
    with pytest.raises(DecodeError):
        StakeDeclaration.decode(canonical.encode({"t": "stake"}))
    bad = canonical.encode({**canonical.decode(decl.encode()), "amount": -5})
    with pytest.raises(ValidationError):
        StakeDeclaration.decode(bad)


def test_a_record_is_signed_only_by_the_key_it_names() -> None:
    # A declaration for another provider, signed with this key, would never verify: refuse
    # to make it rather than hand out a useless signature.
    draft = StakeDeclaration(fixed_identity(2).public_key, 1, 1, bytes(64))
    with pytest.raises(ValidationError, match="another key"):
        sign_record(draft, PROVIDER)


def test_consumers_skip_providers_below_the_minimum() -> None:
    decl = sign_stake(PROVIDER, DEFAULT_MINIMUM_STAKE, 1)
    assert meets_minimum(decl, DEFAULT_MINIMUM_STAKE)
    assert not meets_minimum(decl, DEFAULT_MINIMUM_STAKE + 1)
    assert not meets_minimum(decl, DEFAULT_MINIMUM_STAKE, slashed=1)
    assert not meets_minimum(None, 1)
    assert meets_minimum(None, 0)
    forged = dataclasses.replace(decl, amount=10 * DEFAULT_MINIMUM_STAKE)
    assert not meets_minimum(forged, DEFAULT_MINIMUM_STAKE)


def test_slashing_reduces_the_effective_stake() -> None:
    status = StakeStatus(declared=1000, slashed=300, issued_at=1)
    assert status.effective == 700
    assert slash_amount(status) == 700
    assert slash_amount(status, fraction_bp=5000) == 350
    assert StakeStatus(100, 500, 1).effective == 0
    assert not meets_minimum(status, 701)
    assert meets_minimum(status, 700)

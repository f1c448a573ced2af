"""Canonical msgpack: one value, one encoding."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pinfer.errors import DecodeError
from p2pinfer.market import canonical

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(values)
def test_encode_then_decode_is_identity(value: object) -> None:
    assert canonical.decode(canonical.encode(value)) == value


def test_map_keys_are_sorted_whatever_the_insertion_order() -> None:
    assert canonical.encode({"b": 1, "a": 2}) == canonical.encode({"a": 2, "b": 1})


def test_floats_are_refused() -> None:
    with pytest.raises(ValueError, match="floats"):
        canonical.encode({"amount": 1.5})
    with pytest.raises(DecodeError):
        canonical.decode(msgpack.packb({"amount": 1.5}))


def test_non_canonical_bytes_are_refused() -> None:
    unsorted = b"\x82\xa1b\x01\xa1a\x02"  # {"b": 1, "a": 2}
    with pytest.raises(DecodeError, match="canonical"):
        canonical.decode(unsorted)
    wide_int = b"\xcd\x00\x01"  # 1 as uint16 instead of a fixint
    with pytest.raises(DecodeError, match="canonical"):
        canonical.decode(wide_int)
    with pytest.raises(DecodeError):
        canonical.decode(b"\x01\x02")  # trailing bytes

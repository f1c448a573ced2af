"""Canonical msgpack (protocol/canonical.py): one value, one encoding, under both profiles."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pinfer.errors import DecodeError, ValidationError
from p2pinfer.protocol import canonical

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


def test_floats_are_refused_in_records_and_allowed_on_the_wire_as_float64() -> None:
    with pytest.raises(ValidationError, match="floats"):
        canonical.encode({"amount": 1.5})
    with pytest.raises(DecodeError):
        canonical.decode(msgpack.packb({"amount": 1.5}))
    wire = canonical.encode({"temperature": 0.5}, canonical.WIRE)
    assert wire == msgpack.packb({"temperature": 0.5}) and wire[-9] == 0xCB  # float64
    assert canonical.decode(wire, canonical.WIRE) == {"temperature": 0.5}
    single = msgpack.packb({"temperature": 0.5}, use_single_float=True)
    with pytest.raises(DecodeError, match="canonical"):
        canonical.decode(single, canonical.WIRE)


def test_integers_beyond_64_bits_and_non_str_keys_are_refused_in_both_profiles() -> None:
    for profile in (canonical.RECORD, canonical.WIRE):
        with pytest.raises(ValidationError, match="64 bits"):
            canonical.encode([2**63], profile)
        with pytest.raises(ValidationError, match="not a str"):
            canonical.encode({b"k": 1}, profile)
        with pytest.raises(DecodeError, match="canonical"):
            canonical.decode(msgpack.packb(2**64 - 1), profile)  # uint64
        with pytest.raises(DecodeError, match="canonical"):
            canonical.decode(msgpack.packb({b"k": 1}, use_bin_type=True), profile)


def test_non_canonical_bytes_are_refused() -> None:
    unsorted = b"\x82\xa1b\x01\xa1a\x02"  # {"b": 1, "a": 2}
    with pytest.raises(DecodeError, match="canonical"):
        canonical.decode(unsorted)
    wide_int = b"\xcd\x00\x01"  # 1 as uint16 instead of a fixint
    with pytest.raises(DecodeError, match="canonical"):
        canonical.decode(wide_int)
    with pytest.raises(DecodeError):
        canonical.decode(b"\x01\x02")  # trailing bytes


@given(st.dictionaries(st.text(), st.integers(0, 9), max_size=8))
def test_map_keys_come_in_utf8_byte_order(value: dict[str, int]) -> None:
    keys = list(msgpack.unpackb(canonical.encode(value), object_pairs_hook=list))
    assert [k for k, _ in keys] == sorted(value, key=lambda k: k.encode("utf-8", "surrogatepass"))

"""Canonical msgpack: the one encoding of everything p2pinfer signs, hashes or journals.

One set of rules for protocol messages, ledger bodies, stake declarations and
governance messages: maps with `str` keys sorted by their UTF-8 bytes, the
shortest msgpack form for every value, `str` as msgpack str and `bytes` as bin,
integers within 64 signed bits, tuples as arrays. A `Profile` says whether
floats (as float64) are allowed: `WIRE` for protocol messages (scores,
temperatures), `RECORD` for ledger, stake and governance records, where money
is integer micro-credits and time integer milliseconds. `decode` accepts only
bytes that `encode` would produce, so a value has exactly one encoding and a
hash over the encoding is a hash over the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from p2pinfer.errors import DecodeError, ValidationError

MIN_INT = -(2**63)
MAX_INT = 2**63 - 1


@dataclass(frozen=True)
class Profile:
    """What one family of encodings allows beyond the shared rules."""

    floats: bool


WIRE = Profile(floats=True)
"""Protocol messages (protocol/codec.py): float64 allowed."""
RECORD = Profile(floats=False)
"""Ledger bodies, stake declarations, governance messages: no floats anywhere."""


_PLAIN = frozenset({type(None), bool, str, bytes})


def _check(value: Any, profile: Profile) -> Any:
    """`value` with every map's keys sorted; ValueError on a value the rules refuse."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        for key in value:
            if type(key) is not str:
                raise ValueError(f"map key {key!r} is not a str")
        # Code point order is UTF-8 byte order (a str with no UTF-8 form fails to pack).
        return {k: _check(value[k], profile) for k in sorted(value)}
    if kind is list or kind is tuple:
        return [_check(v, profile) for v in value]
    if kind is int:
        if not MIN_INT <= value <= MAX_INT:
            raise ValueError(f"integer {value} does not fit in 64 bits")
        return value
    if kind is float and profile.floats:
        return value
    # A subclass (e.g. a StrEnum, an IntEnum) encodes as its base.
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, int):
        return _check(int(value), profile)
    raise ValueError(f"cannot encode {kind.__name__} canonically (floats are not allowed)")


def encode(value: Any, profile: Profile = RECORD) -> bytes:
    """The canonical encoding of `value`; ValidationError if the rules refuse a part of it
    (a float under RECORD, an integer beyond 64 bits, a non-str key, a lone surrogate)."""
    try:
        packed: bytes = msgpack.packb(_check(value, profile), use_bin_type=True)
    except (UnicodeEncodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ValidationError(f"cannot encode canonically: {exc}") from exc
    return packed


def parse(data: bytes) -> Any:
    """The value in `data`, not yet checked to be canonical; DecodeError unless it is one
    well-formed msgpack value (maps keyed by str or bytes, nothing after it)."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # msgpack's errors (ExtraData, FormatError, StackError, bad UTF-8...) are ValueErrors.
        raise DecodeError(f"not valid msgpack: {type(exc).__name__}") from exc


def decode(data: bytes, profile: Profile = RECORD) -> Any:
    """The value in `data`; DecodeError unless `data` is exactly its canonical encoding."""
    value = parse(data)
    try:
        again = encode(value, profile)
    except ValidationError as exc:
        raise DecodeError(f"not canonical msgpack: {exc}") from exc
    if again != data:
        raise DecodeError("not canonical msgpack: re-encoding differs")
    return value

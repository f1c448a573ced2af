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


def _check(value: Any, profile: Profile) -> Any:
    """`value` with every map's keys sorted; ValueError on a value the rules refuse."""
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes):
        return value
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise ValueError(f"integer {value} does not fit in 64 bits")
        return value
    if isinstance(value, float) and profile.floats:
        return value
    if isinstance(value, list | tuple):
        return [_check(v, profile) for v in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"map key {key!r} is not a str")
        return {k: _check(value[k], profile) for k in sorted(value, key=_utf8)}
    raise ValueError(f"cannot encode {type(value).__name__} canonically (floats are not allowed)")


def _utf8(key: str) -> bytes:
    return key.encode()


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

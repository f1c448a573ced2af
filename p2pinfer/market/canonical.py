"""Canonical msgpack for ledger bodies and stake declarations.

Same rules as the wire protocol (docs/market.md): maps with `str` keys sorted
by their UTF-8 bytes, `bytes` as msgpack bin, no floats anywhere (money is
integer micro-credits, time integer milliseconds). `decode` accepts only bytes
that `encode` would produce, so one value has exactly one encoding and a hash
over the encoding is a hash over the value.
"""

from __future__ import annotations

from typing import Any

import msgpack

from p2pinfer.errors import DecodeError

_MAX_INT = 2**63 - 1
_MIN_INT = -(2**63)


def _check(value: Any) -> Any:
    """Return `value` with every map's keys sorted; ValueError on a type we do not encode."""
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes):
        return value
    if isinstance(value, int):
        if not _MIN_INT <= value <= _MAX_INT:
            raise ValueError(f"integer {value} does not fit in 64 bits")
        return value
    if isinstance(value, list | tuple):
        return [_check(v) for v in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"map key {key!r} is not a str")
        return {k: _check(value[k]) for k in sorted(value, key=lambda k: k.encode())}
    raise ValueError(f"cannot encode {type(value).__name__} canonically (floats are not allowed)")


def encode(value: Any) -> bytes:
    """The canonical msgpack encoding of `value` (ValueError if it holds a float or odd type)."""
    packed: bytes = msgpack.packb(_check(value), use_bin_type=True)
    return packed


def decode(data: bytes) -> Any:
    """Decode `data`; DecodeError unless it is well-formed and exactly canonical."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise DecodeError(f"not msgpack: {exc}") from exc
    except TypeError as exc:  # a non-str map key
        raise DecodeError(f"not canonical msgpack: {exc}") from exc
    try:
        again = encode(value)
    except ValueError as exc:
        raise DecodeError(f"not canonical msgpack: {exc}") from exc
    if again != data:
        raise DecodeError("not canonical msgpack: re-encoding differs")
    return value

"""Typed conversion between message dataclasses and plain msgpack values.

Message fields are annotated with their wire type and bounds, e.g.
`Annotated[str, Size(1, 128)]`; this module compiles those annotations once per
class into converters that check every value in both directions, so an
oversize or wrongly typed field is refused before it is signed and before a
received one reaches any caller. Maps come out with their keys sorted, which is
half of the canonical encoding (codec.py does the rest).

Supported annotations: int, float, bool, str, bytes, Literal[str, ...],
X | None, a union of distinct plain kinds (`Annotated[int, Range] |
Annotated[str, Size]`), tuple[X, ...], a nested frozen dataclass, each
optionally wrapped in Annotated[..., Size(...) | Range(...)]. bool is not an
int here. A field annotated `Annotated[X | None, OMIT_NONE]` is left out of the
map when None and reads as None when absent: how a field is added to a message
without changing (or invalidating the signatures of) the messages of older peers.
`Wire(key="from")` names a field's map key when it is not the attribute's name;
a nested dataclass annotated `POSITIONAL` is an array of its fields in order;
one annotated `Wire(encoded=Size(...))` is carried as the bytes of its own
`encode()` and read back with its `decode(bytes)` (a signed record inside
another keeps the exact bytes its signer signed).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from p2pinfer.errors import ProtocolError, ValidationError

T = TypeVar("T")

# (to_wire, from_wire): both take (value, path) and raise ValidationError.
_Conv = tuple[Callable[[Any, str], Any], Callable[[Any, str], Any]]


@dataclass(frozen=True)
class Size:
    """Length bounds: characters of a str, bytes of a bytes, items of a tuple."""

    min: int
    max: int


@dataclass(frozen=True)
class Printable:
    """A str shown to people (in logs, tables, terminals): no control characters (C0,
    DEL, C1) and no bidirectional overrides, so it cannot move a cursor, set a clipboard,
    hide or forge the lines around it (docs/security.md, attack 62)."""


#: What a `Printable` str may not hold.
CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class Range:
    """Inclusive value bounds of an int or float (NaN and infinities never pass)."""

    min: int | float
    max: int | float


@dataclass(frozen=True)
class Wire:
    """How a field is carried when not plainly as its attribute (at most one per field).

    `key`: its map key, where that is not the attribute's name. `omit_none`: absent
    from the map when None (see above). `positional`: a nested dataclass carried as an
    array of its fields in declaration order. `encoded`: a nested record carried as the
    bytes of its own `encode()` (at most this Size), read back with its `decode(bytes)`.
    """

    key: str | None = None
    omit_none: bool = False
    positional: bool = False
    encoded: Size | None = None


OMIT_NONE = Wire(omit_none=True)
POSITIONAL = Wire(positional=True)


def to_wire(obj: Any) -> dict[str, Any]:
    """The plain, key-sorted map for message dataclass `obj`; ValidationError if a field is bad."""
    result: dict[str, Any] = _converter(type(obj))[0](obj, type(obj).__name__)
    return result


def from_wire(cls: type[T], value: Any) -> T:
    """Build a `cls` from a decoded msgpack map; ValidationError on any bad field."""
    result: T = _converter(cls)[1](value, cls.__name__)
    return result


_CONVERTERS: dict[type[Any], _Conv] = {}


def _converter(cls: type[Any]) -> _Conv:
    conv = _CONVERTERS.get(cls)
    if conv is None:
        conv = _CONVERTERS[cls] = _compile(cls)
    return conv


def _exactly(v: Any, kind: type) -> bool:
    # bool is an int subclass and an int is not a float: both would change the encoding.
    return type(v) is kind


def _compile(annotation: Any) -> _Conv:
    bounds, extras = None, []
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *extras = typing.get_args(annotation)
        bounds = next((e for e in extras if isinstance(e, Size | Range)), None)
    printable = any(isinstance(e, Printable) for e in extras)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        arms = typing.get_args(annotation)
        args = [a for a in arms if a is not type(None)]
        if len(args) == 1:
            return _optional(_compile(typing.Annotated[(args[0], *extras)] if extras else args[0]))
        if len(args) != len(arms):
            raise TypeError(f"only X | None and unions of plain kinds are supported: {annotation}")
        return _either(args)
    if origin is typing.Literal:
        return _literal(typing.get_args(annotation))
    if origin is tuple:
        item, ellipsis = typing.get_args(annotation)
        if ellipsis is not Ellipsis or not isinstance(bounds, Size):
            raise TypeError(f"tuples must be tuple[X, ...] with a Size: {annotation}")
        return _sequence(_compile(item), bounds)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        wire = _wire(extras)
        if wire.encoded is not None:
            return _encoded(annotation, wire.encoded)
        return _record(annotation, wire.positional)
    if annotation in (int, float):
        if not isinstance(bounds, Range):
            raise TypeError(f"numbers need a Range: {annotation}")
        return _number(annotation, bounds)
    if annotation in (str, bytes):
        if not isinstance(bounds, Size):
            raise TypeError(f"str and bytes need a Size: {annotation}")
        return _blob(annotation, bounds, printable and annotation is str)
    if annotation is bool:
        return _boolean()
    raise TypeError(f"unsupported wire annotation: {annotation!r}")


def _optional(inner: _Conv) -> _Conv:
    enc, dec = inner

    def to(v: Any, path: str) -> Any:
        return None if v is None else enc(v, path)

    def back(v: Any, path: str) -> Any:
        return None if v is None else dec(v, path)

    return to, back


def _either(arms: list[Any]) -> _Conv:
    # A value of one of several plain kinds, told apart by its exact type.
    table: dict[type, _Conv] = {}
    for arm in arms:
        kind = typing.get_args(arm)[0] if typing.get_origin(arm) is typing.Annotated else arm
        if kind not in (int, float, bool, str, bytes) or kind in table:
            raise TypeError(f"a union's arms must be distinct plain kinds: {arms}")
        table[kind] = _compile(arm)
    names = " or ".join(k.__name__ for k in table)

    def pick(v: Any, path: str) -> _Conv:
        conv = table.get(type(v))
        if conv is None:
            raise ValidationError(f"{path}: expected {names}, got {type(v).__name__}")
        return conv

    return (lambda v, path: pick(v, path)[0](v, path)), (lambda v, path: pick(v, path)[1](v, path))


def _literal(choices: tuple[Any, ...]) -> _Conv:
    allowed = frozenset(choices)

    def check(v: Any, path: str) -> Any:
        if not isinstance(v, str) or v not in allowed:
            raise ValidationError(f"{path}: {_show(v)} is not one of {sorted(allowed)}")
        return v

    return check, check


def _sequence(item: _Conv, size: Size) -> _Conv:
    enc, dec = item

    def count(v: Any, path: str, kind: type) -> None:
        if not _exactly(v, kind):
            raise ValidationError(f"{path}: expected a {kind.__name__}, got {type(v).__name__}")
        if not size.min <= len(v) <= size.max:
            raise ValidationError(f"{path}: {len(v)} items, allowed {size.min}..{size.max}")

    def to(v: Any, path: str) -> list[Any]:
        count(v, path, tuple)
        return [enc(x, f"{path}[{i}]") for i, x in enumerate(v)]

    def back(v: Any, path: str) -> tuple[Any, ...]:
        count(v, path, list)
        return tuple(dec(x, f"{path}[{i}]") for i, x in enumerate(v))

    return to, back


def _record(cls: type[Any], positional: bool) -> _Conv:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = [(f.name, _options(hints[f.name]).key or f.name) for f in dataclasses.fields(cls)]
    if positional:
        return _array(cls, [(n, *_compile(hints[n])) for n, _ in fields])
    fields.sort(key=lambda field: field[1].encode())
    convs = [(n, k, *_compile(hints[n])) for n, k in fields]
    keys = frozenset(k for _, k in fields)
    omittable = frozenset(k for n, k in fields if _options(hints[n]).omit_none)
    required = keys - omittable

    def to(v: Any, path: str) -> dict[str, Any]:
        _expect(v, cls, path)
        return {k: enc(getattr(v, n), f"{path}.{n}") for n, k, enc, _ in convs
                if k not in omittable or getattr(v, n) is not None}

    def back(v: Any, path: str) -> Any:
        if not isinstance(v, dict):
            raise ValidationError(f"{path}: expected a map, got {type(v).__name__}")
        if not required <= v.keys() <= keys:
            missing = sorted(required - v.keys())
            extra = sorted(str(k) for k in v.keys() - keys)
            raise ValidationError(f"{path}: missing fields {missing}, unknown fields {extra}")
        return _build(cls, {n: dec(v[k], f"{path}.{n}") for n, k, _, dec in convs if k in v},
                      path)

    return to, back


def _array(cls: type[Any], convs: list[tuple[str, Any, Any]]) -> _Conv:
    def to(v: Any, path: str) -> list[Any]:
        _expect(v, cls, path)
        return [enc(getattr(v, n), f"{path}.{n}") for n, enc, _ in convs]

    def back(v: Any, path: str) -> Any:
        if not isinstance(v, list) or len(v) != len(convs):
            raise ValidationError(f"{path}: expected an array of {len(convs)} items")
        items = zip(convs, v, strict=True)  # the length is checked above
        return _build(cls, {n: dec(x, f"{path}.{n}") for (n, _, dec), x in items}, path)

    return to, back


def _encoded(cls: type[Any], size: Size) -> _Conv:
    to_blob, from_blob = _blob(bytes, size)

    def to(v: Any, path: str) -> bytes:
        _expect(v, cls, path)
        return to_blob(v.encode(), path)  # type: ignore[no-any-return]  # a blob: bytes

    def back(v: Any, path: str) -> Any:
        return cls.decode(from_blob(v, path))  # Encoded: the class has decode(bytes)

    return to, back


def _expect(v: Any, cls: type[Any], path: str) -> None:
    if type(v) is not cls:
        raise ValidationError(f"{path}: expected {cls.__name__}, got {type(v).__name__}")


def _build(cls: type[Any], kwargs: dict[str, Any], path: str) -> Any:
    try:
        return cls(**kwargs)
    except ProtocolError:
        raise
    except (ValueError, TypeError) as exc:  # a __post_init__ check written loosely
        raise ValidationError(f"{path}: {exc}") from exc


def _wire(extras: Any) -> Wire:
    options = [e for e in extras if isinstance(e, Wire)]
    if len(options) > 1:
        raise TypeError(f"one Wire(...) per field, not {options}")
    return options[0] if options else Wire()


def _options(annotation: Any) -> Wire:
    if typing.get_origin(annotation) is typing.Annotated:
        return _wire(typing.get_args(annotation)[1:])
    return Wire()


def _number(kind: type, bounds: Range) -> _Conv:
    def check(v: Any, path: str) -> Any:
        if not _exactly(v, kind):
            raise ValidationError(f"{path}: expected {kind.__name__}, got {type(v).__name__}")
        if kind is float and not math.isfinite(v):
            raise ValidationError(f"{path}: {v} is not a finite number")
        if not bounds.min <= v <= bounds.max:
            raise ValidationError(f"{path}: {v} is outside {bounds.min}..{bounds.max}")
        return v

    return check, check


def _blob(kind: type, size: Size, printable: bool = False) -> _Conv:
    unit = "characters" if kind is str else "bytes"

    def check(v: Any, path: str) -> Any:
        if not _exactly(v, kind):
            raise ValidationError(f"{path}: expected {kind.__name__}, got {type(v).__name__}")
        if not size.min <= len(v) <= size.max:
            raise ValidationError(f"{path}: {len(v)} {unit}, allowed {size.min}..{size.max}")
        if printable and (bad := CONTROLS.search(v)) is not None:
            raise ValidationError(f"{path}: a control character (U+{ord(bad.group()):04X})")
        return v

    return check, check


def _boolean() -> _Conv:
    def check(v: Any, path: str) -> Any:
        if not _exactly(v, bool):
            raise ValidationError(f"{path}: expected bool, got {type(v).__name__}")
        return v

    return check, check


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."

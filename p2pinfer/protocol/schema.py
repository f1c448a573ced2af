"""Typed conversion between message dataclasses and plain msgpack values.

Message fields are annotated with their wire type and bounds, e.g.
`Annotated[str, Size(1, 128)]`; this module compiles those annotations once per
class into converters that check every value in both directions, so an
oversize or wrongly typed field is refused before it is signed and before a
received one reaches any caller. Maps come out with their keys sorted, which is
half of the canonical encoding (codec.py does the rest).

Supported annotations: int, float, str, bytes, Literal[str, ...], X | None,
tuple[X, ...], a nested frozen dataclass, each optionally wrapped in
Annotated[..., Size(...) | Range(...)]. bool is not an int here.
A field annotated `Annotated[X | None, OMIT_NONE]` is left out of the map when
None and reads as None when absent: how a field is added to a message without
changing (or invalidating the signatures of) the messages of older peers.
"""

from __future__ import annotations

import dataclasses
import math
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
class Range:
    """Inclusive value bounds of an int or float (NaN and infinities never pass)."""

    min: int | float
    max: int | float


@dataclass(frozen=True)
class OmitNone:
    """Marks an optional field that is absent from the wire map when None (see above)."""


OMIT_NONE = OmitNone()


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
    bounds = None
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *extras = typing.get_args(annotation)
        bounds = next((e for e in extras if isinstance(e, Size | Range)), None)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only X | None unions are supported: {annotation}")
        return _optional(_compile(_annotated(args[0], bounds)))
    if origin is typing.Literal:
        return _literal(typing.get_args(annotation))
    if origin is tuple:
        item, ellipsis = typing.get_args(annotation)
        if ellipsis is not Ellipsis or not isinstance(bounds, Size):
            raise TypeError(f"tuples must be tuple[X, ...] with a Size: {annotation}")
        return _sequence(_compile(item), bounds)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return _record(annotation)
    if annotation in (int, float):
        if not isinstance(bounds, Range):
            raise TypeError(f"numbers need a Range: {annotation}")
        return _number(annotation, bounds)
    if annotation in (str, bytes):
        if not isinstance(bounds, Size):
            raise TypeError(f"str and bytes need a Size: {annotation}")
        return _blob(annotation, bounds)
    raise TypeError(f"unsupported wire annotation: {annotation!r}")


def _annotated(annotation: Any, bounds: Size | Range | None) -> Any:
    return annotation if bounds is None else typing.Annotated[annotation, bounds]


def _optional(inner: _Conv) -> _Conv:
    enc, dec = inner

    def to(v: Any, path: str) -> Any:
        return None if v is None else enc(v, path)

    def back(v: Any, path: str) -> Any:
        return None if v is None else dec(v, path)

    return to, back


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


def _record(cls: type[Any]) -> _Conv:
    hints = typing.get_type_hints(cls, include_extras=True)
    names = sorted(f.name for f in dataclasses.fields(cls))
    convs = [(n, *_compile(hints[n])) for n in names]
    name_set = frozenset(names)
    omittable = frozenset(n for n in names if _omits_none(hints[n]))
    required = name_set - omittable

    def to(v: Any, path: str) -> dict[str, Any]:
        if type(v) is not cls:
            raise ValidationError(f"{path}: expected {cls.__name__}, got {type(v).__name__}")
        return {n: enc(getattr(v, n), f"{path}.{n}") for n, enc, _ in convs
                if n not in omittable or getattr(v, n) is not None}

    def back(v: Any, path: str) -> Any:
        if not isinstance(v, dict):
            raise ValidationError(f"{path}: expected a map, got {type(v).__name__}")
        if not required <= v.keys() <= name_set:
            missing = sorted(required - v.keys())
            extra = sorted(str(k) for k in v.keys() - name_set)
            raise ValidationError(f"{path}: missing fields {missing}, unknown fields {extra}")
        kwargs = {n: dec(v[n], f"{path}.{n}") for n, _, dec in convs if n in v}
        try:
            return cls(**kwargs)
        except ProtocolError:
            raise
        except (ValueError, TypeError) as exc:  # a __post_init__ check written loosely
            raise ValidationError(f"{path}: {exc}") from exc

    return to, back


def _omits_none(annotation: Any) -> bool:
    return typing.get_origin(annotation) is typing.Annotated and any(
        isinstance(e, OmitNone) for e in typing.get_args(annotation)[1:])


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


def _blob(kind: type, size: Size) -> _Conv:
    unit = "characters" if kind is str else "bytes"

    def check(v: Any, path: str) -> Any:
        if not _exactly(v, kind):
            raise ValidationError(f"{path}: expected {kind.__name__}, got {type(v).__name__}")
        if not size.min <= len(v) <= size.max:
            raise ValidationError(f"{path}: {len(v)} {unit}, allowed {size.min}..{size.max}")
        return v

    return check, check


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."

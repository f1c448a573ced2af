"""What the Ollama- and OpenAI-shaped HTTP APIs share: request errors, JSON, timestamps.

The shaping modules (`ollama_wire`, `openai_wire`) are pure: they turn request
bodies into backend arguments and backend events into response bytes, so the
engine server and the network gateway serve the same shapes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from p2pinfer import json_depth

Clock = Callable[[], datetime]
#: Extra fields a host adds to a reply's last object (the gateway: what the job cost).
FinalFields = Callable[[], dict[str, Any]]


def utc_now() -> datetime:
    """The wall clock in UTC (the default `Clock`)."""
    return datetime.now(UTC)


class ApiError(Exception):
    """A request the API refuses, with the HTTP status and the message to send back
    (`param`: the request parameter at fault, which OpenAI's error shape names)."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


def dumps(obj: object) -> bytes:
    """Compact JSON, as Go's encoder writes it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339(moment: datetime) -> str:
    """RFC 3339 with fractional seconds and no trailing zeros, as Go's RFC3339Nano."""
    moment = moment.astimezone(UTC)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return f"{base}.{fraction}Z" if fraction else f"{base}Z"


def parse_json_body(body: bytes) -> dict[str, Any]:
    """The request's JSON object; ApiError(400) with Go-like messages otherwise."""
    if not body.strip():
        raise ApiError(400, "missing request body")
    try:
        value = json_depth.loads(body, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid character in request body (not UTF-8)") from None
    except json_depth.TooDeepError as exc:
        raise ApiError(400, f"request body: {exc}") from None
    except json.JSONDecodeError as exc:
        if exc.pos >= len(exc.doc.rstrip()):
            raise ApiError(400, "unexpected EOF") from None
        char = exc.doc[exc.pos]
        if exc.msg.startswith("Expecting value"):
            message = f"invalid character '{char}' looking for beginning of value"
            raise ApiError(400, message) from None
        raise ApiError(400, f"invalid character '{char}' in JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        kind = _json_kind(value)
        raise ApiError(400, f"json: cannot unmarshal {kind} into Go value of type api.Request")
    if _SURROGATE_ESCAPE.search(body) and not _encodable(value):
        raise ApiError(400, "invalid Unicode in request body: a lone surrogate (\\ud800-\\udfff)"
                       " is not a character")
    return value


# A \uD800-\uDFFF escape: a surrogate pair is fine, a lone one decodes to a str that no
# engine or wire can encode (UTF-8 refuses it), so the request is refused up front.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _encodable(value: object) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_encodable(k) and _encodable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_encodable(v) for v in value)
    return True


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity; JSON (and Go's decoder) does not.
    raise ApiError(400, f"invalid character '{name[0]}' looking for beginning of value")


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "object"


def field(body: dict[str, Any], name: str, kind: type, where: str, default: Any = None) -> Any:
    """`body[name]` checked against a JSON type (null or absent gives `default`)."""
    value = body.get(name)
    if value is None:
        return default
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        go_type = {str: "string", bool: "bool", int: "int", float: "float64", list: "[]"}
        raise ApiError(
            400,
            f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
            f"{where}.{name} of type {go_type.get(kind, kind.__name__)}",
        )
    return value

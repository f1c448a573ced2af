"""JSON from others, parsed only when it nests within a bound.

`json.loads` recurses in C, one level per array or object, guarded only by the
interpreter's recursion limit. py_ecc (imported with the settlement code, so by every
node) raises that limit to 100,000 and py-evm to 12,288: with 100,000, a text some
60,000 to 100,000 arrays deep (a 200 KB request body) overflows the C stack before the
limit is reached, and the process dies (SIGSEGV) instead of raising RecursionError
(attack 39). So:

- `loads` measures a text's nesting before `json.loads` sees it (`TooDeepError`, a
  ValueError, past `MAX_DEPTH`), for every JSON text that comes from outside the
  process: HTTP bodies, answers from providers and engines, JSON-RPC;
- `cap_recursion_limit` puts the limit back to py-evm's need once those imports ran
  (a node and the CLI call it at start), for the JSON that libraries parse themselves
  (web3's RPC answers) and any other C recursion.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

MAX_DEPTH = 128
"""Arrays and objects inside each other that a JSON text from outside may hold. A
structured-output schema is bounded at 24 (protocol/output_format.py), a request nests
it ~6 deep; nothing a client, provider or engine sends honestly comes near."""

RECURSION_LIMIT = 12_288
"""py-evm's (`eth.EVM_RECURSION_LIMIT`: 1,024 EVM call frames), well under the C stack:
`json.loads` of 60,000 levels returned normally here, in a thread too."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


class TooDeepError(ValueError):
    """A JSON text nested deeper than allowed; not parsed."""


def nesting(data: str | bytes) -> int:
    """An upper bound of how deep `data`, a JSON text, nests arrays and objects: the most
    brackets open at once outside strings (an unterminated string runs to the end;
    brackets that do not match count as if they did, so json.loads, which stops at the
    first mismatch, never goes deeper). Linear and in C: ~7 ms for 1 MB of brackets,
    where json.loads itself takes ~180 ms."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    opens = raw.count(b"[") + raw.count(b"{")
    if opens <= MAX_DEPTH:
        return opens  # cannot nest deeper than it opens: most texts stop here
    import numpy as np  # here: a node parses few texts this large, and numpy loads slowly

    outside = _STRING.sub(b"", raw)
    quote = outside.find(b'"')
    if quote >= 0:
        outside = outside[:quote]
    steps = np.zeros(256, dtype=np.int8)
    steps[list(b"[{")] = 1
    steps[list(b"]}")] = -1
    depth = np.cumsum(steps[np.frombuffer(outside, dtype=np.uint8)], dtype=np.int64)
    return int(depth.max(initial=0))


def loads(data: str | bytes, *, limit: int = MAX_DEPTH, **kwargs: Any) -> Any:
    """`json.loads(data, **kwargs)` if `data` nests at most `limit` deep, else
    TooDeepError."""
    if nesting(data) > limit:
        raise TooDeepError(f"JSON nested deeper than {limit} arrays or objects")
    return json.loads(data, **kwargs)


def cap_recursion_limit() -> None:
    """Lower the interpreter's recursion limit to RECURSION_LIMIT if imports raised it."""
    if sys.getrecursionlimit() > RECURSION_LIMIT:
        sys.setrecursionlimit(RECURSION_LIMIT)

"""Attack 39: JSON nested deep enough to overflow the C stack (p2pinfer/json_depth.py).

py_ecc, imported with the settlement code by every node, raises the interpreter's
recursion limit to 100,000; json.loads recurses in C, so a request body 200,000 arrays
deep killed the node process (SIGSEGV) instead of raising RecursionError."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pinfer import json_depth
from p2pinfer.json_depth import MAX_DEPTH, TooDeepError, nesting

CRASH = """
import sys
import p2pinfer.node.run  # what a node imports: the settlement code, py_ecc with it
sys.setrecursionlimit(max(100_000, sys.getrecursionlimit()))  # py_ecc's (imported above)
from p2pinfer.backends.wire import ApiError, parse_json_body
try:
    parse_json_body(b'{"model": "m", "messages": ' + b"[" * 200_000 + b"]" * 200_000 + b"}")
except ApiError as exc:
    print(exc.status, exc)
"""


def test_a_deep_request_body_is_a_400_not_a_dead_process() -> None:
    done = subprocess.run([sys.executable, "-c", CRASH], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.startswith("400 ") and "nested deeper than" in done.stdout


def test_the_cli_puts_the_recursion_limit_back_before_any_command_runs() -> None:
    code = ("import sys\nfrom p2pinfer.cli.main import main\nsys.argv = ['p2pinfer', 'node', "
            "'--help']\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('limit', sys.getrecursionlimit())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.splitlines()[-1] == f"limit {json_depth.RECURSION_LIMIT}"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(alphabet='[]{}"\\x', max_size=4), inner, max_size=4),
    max_leaves=200)


def depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@given(_json)
def test_the_measure_never_says_less_than_the_real_depth(value: object) -> None:
    text = json.dumps(value)
    assert nesting(text) >= depth(value)
    assert nesting(text.encode()) == nesting(text)


@pytest.mark.parametrize(("text", "deep"), [
    ("[" * 200 + "]" * 200, 200),
    ("[" * 150, 150),  # unterminated: json.loads would still recurse that far
    ('["' + "[" * 300 + '"]', 1),  # brackets in a string do not count
    ('["\\"' + "[" * 300 + '"]', 1),  # nor after an escaped quote
    ('["' + "[" * 300, 1),  # an unterminated string runs to the end
    ("[{" * 100 + "}]" * 100, 200),
    ("]" * 500 + "[" * 10, 10),
])
def test_deep_texts_are_measured_outside_strings(text: str, deep: int) -> None:
    assert nesting(text) == deep


def test_loads_refuses_past_the_bound_and_parses_within_it() -> None:
    assert json_depth.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(TooDeepError):
        json_depth.loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(ValueError):  # a TooDeepError is a ValueError: callers catch it so
        json_depth.loads("[" * 300_000)

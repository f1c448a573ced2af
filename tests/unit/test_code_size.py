"""House rules on size (docs/architecture.md): no Python module over 400 lines, and no
function over 60 lines without a comment within the five lines above it that gives its
reason ("Over 60 lines by design: ..."). Walks p2pinfer/, tests/, bench/ and scripts/."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.backends import REPO_ROOT

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
ROOTS = ("p2pinfer", "tests", "bench", "scripts")


def python_files() -> list[Path]:
    return sorted(f for root in ROOTS for f in (REPO_ROOT / root).rglob("*.py")
                  if ".venv" not in f.parts)


def long_functions(source: str) -> list[tuple[str, int, int]]:
    """(name, first line, length) of each function over the limit with no reason above."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            length = (node.end_lineno or start) - start + 1
            above = " ".join(lines[max(0, start - 6):start - 1])
            if length > MAX_FUNCTION_LINES and "60 lines" not in above:
                found.append((node.name, start, length))
    return found


def test_no_module_is_over_400_lines() -> None:
    files = python_files()
    assert len(files) > 300  # the walk found the tree
    over = {str(f.relative_to(REPO_ROOT)): n for f in files
            if (n := len(f.read_text().splitlines())) > MAX_MODULE_LINES}
    assert over == {}


def test_no_function_is_over_60_lines_without_a_reason() -> None:
    over = {f"{f.relative_to(REPO_ROOT)}:{line} {name}": n for f in python_files()
            for name, line, n in long_functions(f.read_text())}
    assert over == {}


def test_the_check_sees_a_long_function_and_its_reason() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(61))
    assert long_functions(f"def f():\n{body}") == [("f", 1, 62)]
    assert long_functions(f"# Over 60 lines by design: a test.\ndef f():\n{body}") == []
    assert long_functions("def f():\n" + "".join(f"    x{i} = {i}\n" for i in range(59))) == []

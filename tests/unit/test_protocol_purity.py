"""protocol/ stays sans-IO: no networking, no event loop, no clock, no randomness."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "trio",
    "anyio",
    "asyncio",
    "libp2p",
    "multiaddr",
    "socket",
    "time",
    "datetime",
    "random",
    "secrets",
    "threading",
}


def test_protocol_modules_import_nothing_that_does_io_or_reads_a_clock() -> None:
    for path in sorted((REPO / "p2pinfer" / "protocol").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_importing_the_protocol_loads_neither_trio_nor_libp2p() -> None:
    code = (
        "import sys, p2pinfer.protocol;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'libp2p'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr

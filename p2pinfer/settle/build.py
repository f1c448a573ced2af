"""Compile the settlement contracts into the checked-in `artifacts.json`.

`python -m p2pinfer.settle.build` re-writes the file; `--check` only says
whether it is current (exit 1 if not). Needs the `vyper` compiler (a dev
dependency); nodes only read the artifacts and never import it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

CONTRACTS_DIR = Path(__file__).parent / "contracts"
ARTIFACTS_PATH = Path(__file__).parent / "artifacts.json"
#: The contracts, in deployment order.
CONTRACT_NAMES: tuple[str, ...] = ("Credit", "Stake", "Channels")


def compile_all() -> dict[str, Any]:
    """{name: {abi, bytecode}} for every contract, plus `vyper_version`."""
    import vyper  # the compiler is a dev dependency: imported only when compiling

    out: dict[str, Any] = {"vyper_version": vyper.__version__}
    for name in CONTRACT_NAMES:
        source = (CONTRACTS_DIR / f"{name}.vy").read_text(encoding="utf-8")
        # A fixed contract_path keeps the output independent of where the checkout lives.
        compiled = vyper.compile_code(
            source, contract_path=f"{name}.vy", output_formats=["abi", "bytecode"]
        )
        out[name] = {"abi": compiled["abi"], "bytecode": compiled["bytecode"]}
    return out


def render(artifacts: dict[str, Any]) -> str:
    """The file's exact text: sorted keys, so equal artifacts give equal bytes."""
    return json.dumps(artifacts, sort_keys=True, indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write artifacts.json (or with --check, compare); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m p2pinfer.settle.build", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    text = render(compile_all())
    if args.check:
        current = ARTIFACTS_PATH.read_text(encoding="utf-8") if ARTIFACTS_PATH.exists() else ""
        if current != text:
            print(f"{ARTIFACTS_PATH} is stale: run python -m p2pinfer.settle.build")
            return 1
        print(f"{ARTIFACTS_PATH} is current")
        return 0
    ARTIFACTS_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {ARTIFACTS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The compiled settlement contracts, read from the packaged `artifacts.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class ContractArtifact:
    """One compiled contract: its ABI (JSON entries) and creation bytecode ("0x..." hex)."""

    name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: str


@cache
def _read() -> dict[str, Any]:
    text = resources.files("p2pinfer.settle").joinpath("artifacts.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def vyper_version() -> str:
    """The Vyper version the artifacts were compiled with."""
    return str(_read()["vyper_version"])


def load_artifacts() -> dict[str, ContractArtifact]:
    """{"Credit" | "Stake" | "Channels": artifact}, from the package's artifacts.json."""
    return {
        name: ContractArtifact(name, tuple(entry["abi"]), str(entry["bytecode"]))
        for name, entry in _read().items()
        if name != "vyper_version"
    }

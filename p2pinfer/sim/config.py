"""Simulation parameters from a TOML file (tomllib), on top of a preset.

    preset = "bme"                       # used when the command line names none
    split = "providers=7000,burn=3000"   # optional: a custom split instead of the preset's
    [network]    initial_providers = 2000, cheater_fraction = 0.1, ...
    [demand]     growth_per_year = 1.5, ...
    [costs]      electricity_usd_per_kwh = 0.10, include_depreciation = false
    [token]      initial_price_usd = 0.2, emission_credits_per_day = 0, ...
    [stabilizer] enabled = true, ...
    [pricing]    supply_reference = 0, ...
    [reputation] check_rate_pm = 20, probation_check_rate_pm = 200, probation_days = 30,
                 probation_jobs = 50
    [[hardware]] name = "7b-q4", share = 0.6, ... (the list replaces the default profiles)

Every key is a field of the dataclass of its table (see params.py for meaning and
default); an unknown key, a wrong type or an impossible value is a UsageError
naming it. docs/sim-defaults.toml spells out every default.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from p2pinfer.errors import UsageError
from p2pinfer.market.split import parse_shares
from p2pinfer.sim import params as P
from p2pinfer.verify.reputation import DAY_MS

T = TypeVar("T")

_SECTIONS: dict[str, type[Any]] = {
    "network": P.NetworkParams,
    "demand": P.DemandParams,
    "costs": P.CostParams,
    "token": P.TokenParams,
    "stabilizer": P.StabilizerParams,
    "pricing": P.PricingSimParams,
}
_REPUTATION_KEYS = ("check_rate_pm", "probation_check_rate_pm", "probation_days",
                    "probation_jobs")
_TOP_KEYS = {"preset", "split", "reputation", "hardware", *_SECTIONS}


def _coerce(where: str, value: Any, kind: Any) -> Any:
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is str:
        ok = isinstance(value, str)
    else:
        raise UsageError(f"sim config: {where} cannot be set from a file")
    if not ok:
        raise UsageError(f"sim config: {where} must be {kind.__name__}, got {value!r}")
    return value


def _apply(where: str, obj: T, table: Any) -> T:
    """`obj` (a dataclass) with the keys of `table` replaced, each checked against its type."""
    if not isinstance(table, dict):
        raise UsageError(f"sim config: [{where}] must be a table")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}  # type: ignore[arg-type]
    changes = {}
    for key, value in table.items():
        if key not in names:
            raise UsageError(
                f"sim config: unknown key {where}.{key} (known: {', '.join(sorted(names))})"
            )
        changes[key] = _coerce(f"{where}.{key}", value, hints[key])
    return replace(obj, **changes)  # type: ignore[type-var]


def _hardware(items: Any) -> tuple[P.MachineClass, ...]:
    if not isinstance(items, list) or not items:
        raise UsageError("sim config: [[hardware]] must be a non-empty list of tables")
    template = P.DEFAULT_HARDWARE[0]
    required = {f.name for f in dataclasses.fields(P.MachineClass)}
    profiles = []
    for i, item in enumerate(items):
        missing = required - set(item) if isinstance(item, dict) else required
        if missing:
            raise UsageError(f"sim config: hardware[{i}] lacks {', '.join(sorted(missing))}")
        profiles.append(_apply(f"hardware[{i}]", template, item))
    if len({p.name for p in profiles}) != len(profiles):
        raise UsageError("sim config: hardware profile names must be unique")
    return tuple(profiles)


def params_from_table(data: dict[str, Any], preset: str | None = None) -> P.SimParams:
    """SimParams from parsed TOML: preset (argument, else the file's, else "seed"), then the
    file's values over it. UsageError on anything unknown, mistyped or impossible."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise UsageError(f"sim config: unknown key {sorted(unknown)[0]!r} "
                         f"(known: {', '.join(sorted(_TOP_KEYS))})")
    name = preset or data.get("preset", "seed")
    if not isinstance(name, str):
        raise UsageError("sim config: preset must be a string")
    params = P.preset_params(name)
    changes: dict[str, Any] = {}
    for section, _cls in _SECTIONS.items():
        if section in data:
            changes[section] = _apply(section, getattr(params, section), data[section])
    if "split" in data:
        if not isinstance(data["split"], str):
            raise UsageError("sim config: split must be a string such as 'providers=6000,...'")
        changes["split"] = parse_shares(name, data["split"])
    if "reputation" in data:
        rep = data["reputation"]
        current = params.reputation
        values = {"check_rate_pm": current.check_rate_pm,
                  "probation_check_rate_pm": current.probation_check_rate_pm,
                  "probation_days": current.probation_ms // DAY_MS,
                  "probation_jobs": current.probation_jobs}
        if not isinstance(rep, dict):
            raise UsageError("sim config: [reputation] must be a table")
        for key, value in rep.items():
            if key not in _REPUTATION_KEYS:
                raise UsageError(f"sim config: unknown key reputation.{key} "
                                 f"(known: {', '.join(_REPUTATION_KEYS)})")
            values[key] = _coerce(f"reputation.{key}", value, int)
            if values[key] < 0:
                raise UsageError(f"sim config: reputation.{key} must be >= 0")
        if max(values["check_rate_pm"], values["probation_check_rate_pm"]) > 1000:
            raise UsageError("sim config: check rates are per mille, 0..1000")
        changes["reputation"] = P.reputation_params(**values)
    if "hardware" in data:
        changes["hardware"] = _hardware(data["hardware"])
    return replace(params, **changes).validate()


def load_params(path: Path | None, preset: str | None = None) -> P.SimParams:
    """SimParams from the TOML file at `path` (None: the preset's defaults)."""
    if path is None:
        return P.preset_params(preset or "seed").validate()
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"cannot read sim config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"sim config {path} is not valid TOML: {exc}") from None
    return params_from_table(data, preset)

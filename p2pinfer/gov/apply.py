"""Make passed proposals change the running node.

Every node tallies the same messages to the same result (`gov.tally`); this
module turns the parameters in effect into the node's live settings, so a
passed proposal changes pricing, the revenue split, the spot-check rate and
the consumer's stake minimum from its `effective_at` on every node. The
parts keep frozen configs; a change replaces the config object. A value outside
its bounds (`gov.messages.PARAMETERS`) is never applied.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from p2pinfer.errors import ValidationError
from p2pinfer.gov.messages import check_value
from p2pinfer.gov.status import ParameterInEffect
from p2pinfer.market.split import preset_named

log = logging.getLogger(__name__)


class _Configured(Protocol):
    config: Any


@dataclass
class GovernedParts:
    """The parts whose settings governance may change (None where the node lacks one)."""

    job_server: _Configured | None
    client: _Configured | None
    verifier: _Configured | None


def apply_parameters(parts: GovernedParts, in_effect: Iterable[ParameterInEffect]) -> list[str]:
    """Set each parameter in effect on the parts it governs; returns the names changed now."""
    changed: list[str] = []
    for p in in_effect:
        try:
            check_value(p.parameter, p.value)  # checked at the door too: never apply one out
        except ValidationError as exc:
            log.warning("governance parameter refused param=%s value=%r proposal=%s reason=%s",
                        p.parameter, p.value, p.proposal, exc)
            continue
        if _apply_one(parts, p.parameter, p.value):
            changed.append(p.parameter)
            log.info("governance parameter in effect param=%s value=%s proposal=%s",
                     p.parameter, p.value, p.proposal)
    return changed


def _apply_one(parts: GovernedParts, name: str, value: int | str) -> bool:
    server, client, verifier = parts.job_server, parts.client, parts.verifier
    if name == "base_rate" and server is not None and isinstance(value, int):
        pricing = server.config.pricing
        if pricing.base_rate_per_1k == value:
            return False
        server.config = replace(server.config, pricing=replace(pricing, base_rate_per_1k=value))
        return True
    if name == "split_preset" and server is not None and isinstance(value, str):
        if server.config.preset.name == value:
            return False
        server.config = replace(server.config, preset=preset_named(value))
        return True
    if name == "min_stake" and client is not None and isinstance(value, int):
        if client.config.min_stake == value:
            return False
        client.config = replace(client.config, min_stake=value)
        return True
    if name == "check_rate_pm" and verifier is not None and isinstance(value, int):
        if verifier.config.recheck_rate_pm == value:
            return False
        verifier.config = replace(verifier.config, recheck_rate_pm=value)
        return True
    return False

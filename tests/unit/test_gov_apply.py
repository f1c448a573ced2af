"""Passed proposals change the running node's live settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2pinfer.gov.apply import GovernedParts, apply_parameters
from p2pinfer.gov.status import ParameterInEffect
from p2pinfer.jobs.job_types import ClientConfig, JobServerConfig
from p2pinfer.verify.config import VerifyConfig


@dataclass
class Part:
    config: Any


def _parts() -> tuple[Part, Part, Part]:
    return Part(JobServerConfig()), Part(ClientConfig()), Part(VerifyConfig())


def test_each_parameter_in_effect_changes_the_part_it_governs() -> None:
    server, client, verifier = _parts()
    effect = [
        ParameterInEffect("base_rate", 2_500, "aa"),
        ParameterInEffect("split_preset", "bme", "bb"),
        ParameterInEffect("min_stake", 10_000_000_000, "cc"),
        ParameterInEffect("check_rate_pm", 50, "dd"),
    ]
    changed = apply_parameters(GovernedParts(server, client, verifier), effect)
    assert sorted(changed) == ["base_rate", "check_rate_pm", "min_stake", "split_preset"]
    assert server.config.pricing.base_rate_per_1k == 2_500
    assert server.config.preset.name == "bme"
    assert client.config.min_stake == 10_000_000_000
    assert verifier.config.recheck_rate_pm == 50
    # Applying the same state again changes nothing (the node polls).
    assert apply_parameters(GovernedParts(server, client, verifier), effect) == []


def test_a_base_rate_in_effect_changes_the_price_the_job_server_quotes() -> None:
    from p2pinfer.market.pricing import price_for

    server = Part(JobServerConfig())
    before = price_for(0, 1, server.config.pricing)
    apply_parameters(GovernedParts(server, None, None),
                     [ParameterInEffect("base_rate", 4 * server.config.pricing.base_rate_per_1k,
                                        "aa")])
    assert price_for(0, 1, server.config.pricing) == 4 * before


def test_a_node_without_a_part_ignores_its_parameters() -> None:
    assert apply_parameters(GovernedParts(None, None, None),
                            [ParameterInEffect("base_rate", 5, "aa")]) == []


def test_a_value_outside_its_bounds_is_never_applied() -> None:
    server, client, verifier = _parts()
    before = (server.config, client.config, verifier.config)
    effect = [
        ParameterInEffect("min_stake", 2**62, "aa"),  # would skip every provider: jobs 404
        ParameterInEffect("base_rate", 5_000_000, "bb"),
        ParameterInEffect("split_preset", "render", "cc"),  # pays providers nothing
        ParameterInEffect("check_rate_pm", 1000, "dd"),
    ]
    assert apply_parameters(GovernedParts(server, client, verifier), effect) == []
    assert (server.config, client.config, verifier.config) == before

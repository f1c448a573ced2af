"""The simulator: deterministic under a seed, value conserved exactly, the nodes' own
pricing/split/reputation/stake code doing the work, cheaters caught and slashed."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from p2pinfer.market import pricing, split
from p2pinfer.market.kpis import write_csv
from p2pinfer.sim import economy, engine
from p2pinfer.sim.engine import ConservationError, Simulation, simulate
from p2pinfer.sim.params import SimParams, preset_params


def small(preset: str = "seed", providers: int = 120, **network: object) -> SimParams:
    params = preset_params(preset)
    return replace(params, network=replace(params.network, initial_providers=providers,
                                           **network))


def csv_bytes(params: SimParams, days: int, seed: int, tmp_path: Path) -> bytes:
    path = tmp_path / f"run-{seed}-{random.random()}.csv"
    write_csv(simulate(params, days, random.Random(seed)), path)
    return path.read_bytes()


def test_same_seed_gives_the_same_csv_byte_for_byte(tmp_path: Path) -> None:
    params = small("bme")
    assert csv_bytes(params, 60, 7, tmp_path) == csv_bytes(params, 60, 7, tmp_path)


def test_a_different_seed_gives_a_different_run(tmp_path: Path) -> None:
    params = small("bme")
    assert csv_bytes(params, 60, 7, tmp_path) != csv_bytes(params, 60, 8, tmp_path)


def _all_credits(sim: Simulation) -> int:
    """Every account, summed here independently of Simulation.held()."""
    eco = sim.eco
    acc = eco.acc
    fund = eco.fund.credits if eco.fund is not None else 0
    return (acc.reserve + acc.holders + acc.treasury + acc.validators + acc.stakers + fund
            + eco.market.credits + int(sim.pop.balance.sum()) + int(sim.pop.stake.sum()))


@pytest.mark.parametrize("preset", ["seed", "bme", "render"])
@pytest.mark.parametrize("stabilizer", [False, True])
def test_minted_equals_held_plus_burned_every_day_in_micro_credits(
    preset: str, stabilizer: bool
) -> None:
    params = small(preset, cheater_fraction=0.3)
    params = replace(params, stabilizer=replace(params.stabilizer, enabled=stabilizer))
    sim = Simulation(params, random.Random(3))
    previous_supply = sim.eco.acc.minted
    for _ in range(90):
        row = sim.step()
        assert row.minted_total_ucr == _all_credits(sim) + row.burned_total_ucr
        assert row.minted_total_ucr == row.held_ucr + row.burned_total_ucr
        # Supply moves by exactly what was emitted and burned that day.
        assert row.supply_ucr == previous_supply + row.emitted_ucr - row.burned_ucr
        previous_supply = row.supply_ucr
        assert all(isinstance(v, int) for v in (row.held_ucr, row.burned_ucr, row.emitted_ucr))


def test_a_leaked_credit_is_caught_by_the_step() -> None:
    sim = Simulation(small(), random.Random(1))
    sim.step()
    sim.pop.balance[0] += 1  # a credit from nowhere
    with pytest.raises(ConservationError, match="minted"):
        sim.step()


def test_cheaters_are_caught_by_spot_checks_and_their_stake_is_burned() -> None:
    params = small(cheater_fraction=0.5, honest_check_fail_rate=0.0, base_joins_per_day=0.0,
                   max_join_rate_per_day=0.0)
    sim = Simulation(params, random.Random(5))
    cheaters = int(sim.pop.cheater.sum())
    rows = sim.run(10)
    caught = sum(r.caught_cheaters for r in rows)
    assert cheaters > 0 and caught == cheaters  # probation checks 20% of their jobs
    assert sum(r.slashed_honest for r in rows) == 0
    assert not sim.pop.cheater.any()
    stake = params.network.stake_credits * 1_000_000
    assert sum(r.burned_ucr for r in rows) >= caught * stake


def test_without_spot_checks_no_cheater_is_caught() -> None:
    params = small(cheater_fraction=0.5, base_joins_per_day=0.0, max_join_rate_per_day=0.0)
    params = replace(params, reputation=replace(params.reputation, check_rate_pm=0,
                                                probation_check_rate_pm=0))
    rows = simulate(params, 10, random.Random(5))
    assert sum(r.caught_cheaters for r in rows) == 0
    assert sum(r.checks for r in rows) == 0


def test_the_simulator_prices_and_splits_with_the_market_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: dict[str, int] = {"price_for": 0, "charge_for": 0, "split": 0, "quality": 0}

    def spy(name: str, fn: object) -> object:
        def wrapped(*args: object, **kwargs: object) -> object:
            calls[name] += 1
            return fn(*args, **kwargs)  # type: ignore[operator]
        return wrapped

    monkeypatch.setattr(engine, "price_for", spy("price_for", pricing.price_for))
    monkeypatch.setattr(economy, "charge_for", spy("charge_for", economy.charge_for))
    monkeypatch.setattr(economy, "split", spy("split", split.split))
    monkeypatch.setattr(engine, "quality_multiplier_pm",
                        spy("quality", pricing.quality_multiplier_pm))
    simulate(small(), 5, random.Random(2))
    assert all(n > 0 for n in calls.values()), calls


def test_render_pays_providers_only_through_emission() -> None:
    params = small("render")
    no_emission = replace(params, token=replace(params.token, emission_credits_per_day=0))
    rows = simulate(no_emission, 20, random.Random(4))
    assert all(r.provider_earnings_usd == 0 for r in rows)
    assert sum(r.revenue_ucr for r in rows) > 0
    # 95% of every charge burns (plus any slashed stake).
    assert sum(r.burned_ucr for r in rows) >= sum(r.revenue_ucr for r in rows) * 95 // 100


def test_bme_emission_is_minted_to_providers_and_halves() -> None:
    params = small("bme")
    params = replace(params, token=replace(params.token, emission_halving_days=10))
    rows = simulate(params, 25, random.Random(4))
    per_day = params.token.emission_credits_per_day * 1_000_000
    assert [r.emitted_ucr for r in rows[:10]] == [per_day] * 10
    assert [r.emitted_ucr for r in rows[10:20]] == [per_day // 2] * 10
    assert rows[-1].emitted_total_ucr == sum(r.emitted_ucr for r in rows)


def test_unprofitable_providers_leave_and_profitable_networks_grow() -> None:
    losing = small(providers=300)
    rows = simulate(losing, 120, random.Random(1))
    assert rows[-1].providers < 300 * 0.5
    subsidised = replace(losing, token=replace(losing.token, emission_credits_per_day=20_000))
    rows = simulate(subsidised, 120, random.Random(1))
    assert rows[-1].providers > 300


def test_a_year_with_1000_providers_produces_a_row_a_day() -> None:
    rows = simulate(preset_params("seed"), 365, random.Random(1))
    assert [r.day for r in rows] == list(range(365))
    assert rows[0].providers == 1000
    assert rows[100].retention_30d_pct is not None
    assert rows[100].revenue_growth_30d_pct is not None or rows[70].revenue_ucr == 0


def test_the_simulator_imports_no_network_event_loop_or_clock() -> None:
    import ast

    forbidden = {"trio", "anyio", "asyncio", "libp2p", "multiaddr", "socket", "time",
                 "datetime", "threading"}
    root = Path(__file__).resolve().parents[2] / "p2pinfer" / "sim"
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"

"""The tokenomics simulator (see docs/tokenomics.md): pure, deterministic under a seed.

    engine.simulate(params, days, random.Random(seed)) -> list[market.kpis.DayKPIs]
    config.load_params(path | None, preset | None) -> params.SimParams
    params.preset_params(name) -> SimParams              # "seed", "bme", "render"
    projection.replay() / stages() / implied() / economics() / unit_costs()
    market.kpis.ledger_kpis(...) -> LiveKPIs   # a live node (market/kpis.py: shared with the node)

Import the submodules: this package imports nothing itself, so that loading
its configuration does not load numpy.
"""

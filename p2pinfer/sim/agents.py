"""The provider population as columns of numpy arrays (one row a provider).

Rows are added by `join` and dropped by `keep`; every column stays aligned.
Amounts of credits (balance, stake) are int64 micro-credits; dollars are
float64 and only ever used to value things.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from p2pinfer.sim.params import MachineClass, SimParams

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]
SECONDS_PER_DAY = 86_400


@dataclass
class Providers:
    """Columns of the active providers."""

    #: Unique id, increasing with join order.
    ids: I64
    #: Index into SimParams.hardware (the provider's model class).
    profile: I64
    #: Tokens a day it can generate while online, at full load.
    capacity: I64
    cheater: BOOL
    #: Daily loss in USD it accepts before it considers leaving.
    tolerance_usd: F64
    #: Reputation score in ppm, as verify.reputation keeps it.
    score_ppm: I64
    #: Day it joined (its reputation's first_seen).
    first_day: I64
    #: Jobs done so far (for probation).
    jobs: I64
    #: Still on probation (once off, never back on: jobs and age only grow).
    probation: BOOL
    #: Effective stake, µcredits.
    stake: I64
    #: Credit balance, µcredits.
    balance: I64
    #: Trailing (30-day EWMA) daily profit, USD.
    profit_usd: F64
    #: Whether profit_usd holds a value yet.
    profit_known: BOOL
    #: Extra power while generating, watts, and fixed cost a day (depreciation), USD.
    load_watts: F64
    fixed_usd_per_day: F64

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def keep(self, mask: BOOL) -> None:
        """Drop every row where `mask` is False."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name)[mask])

    def extend(self, other: Providers) -> None:
        """Append `other`'s rows."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, np.concatenate([getattr(self, f.name), getattr(other, f.name)]))


def empty() -> Providers:
    """A population with no providers."""
    i, f, b = np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.bool_)
    return Providers(i, i, i, b, f, i, i, i, b, i, i, f, b, f, f)


def profile_shares(hardware: tuple[MachineClass, ...]) -> F64:
    """Each profile's share of providers, normalised to sum to 1."""
    shares = np.array([hw.share for hw in hardware], np.float64)
    out: F64 = shares / shares.sum()
    return out


def by_class(classes: I64, weights: npt.ArrayLike, k: int) -> F64:
    """Sum of `weights` per class 0..k-1 (np.bincount with weights: float64)."""
    out: F64 = np.bincount(classes, weights=weights, minlength=k).astype(np.float64)
    return out


def new_providers(
    count: int,
    first_id: int,
    day: int,
    params: SimParams,
    gen: np.random.Generator,
    initial_score_ppm: int,
    profile: I64 | None = None,
) -> Providers:
    """`count` freshly joined providers with drawn hardware, speed, honesty and tolerance.

    Their stake is `network.stake_credits`; who pays for it is the caller's business.
    """
    hw = params.hardware
    net = params.network
    if profile is None:
        profile = gen.choice(len(hw), size=count, p=profile_shares(hw)).astype(np.int64)
    lo = np.array([h.tokens_per_s_min for h in hw])[profile]
    hi = np.array([h.tokens_per_s_max for h in hw])[profile]
    tps = gen.uniform(lo, hi)
    capacity = (tps * SECONDS_PER_DAY * net.online_fraction).astype(np.int64)
    fixed = np.array([h.depreciation_usd_per_day for h in hw])[profile]
    if not params.costs.include_depreciation:
        fixed = np.zeros(count)
    return Providers(
        ids=np.arange(first_id, first_id + count, dtype=np.int64),
        profile=profile,
        capacity=capacity,
        cheater=gen.random(count) < net.cheater_fraction,
        tolerance_usd=gen.exponential(max(net.loss_tolerance_usd_per_day, 1e-12), count),
        score_ppm=np.full(count, initial_score_ppm, np.int64),
        first_day=np.full(count, day, np.int64),
        jobs=np.zeros(count, np.int64),
        probation=np.ones(count, np.bool_),
        stake=np.full(count, net.stake_credits * 1_000_000, np.int64),
        balance=np.zeros(count, np.int64),
        profit_usd=np.zeros(count),
        profit_known=np.zeros(count, np.bool_),
        load_watts=np.array([h.load_watts for h in hw], np.float64)[profile],
        fixed_usd_per_day=fixed.astype(np.float64),
    )


def apportion(total: int, weights: I64) -> I64:
    """floor(total × w / Σw) for each weight (int64, exact); the residue is not handed out."""
    s = int(weights.sum())
    if s <= 0 or total <= 0:
        return np.zeros(weights.shape[0], np.int64)
    if total * int(weights.max(initial=0)) < 2**62:
        return (weights * total) // s
    # Too large for int64: exact Python integers (rare: very large pools).
    return np.array([int(w) * total // s for w in weights.tolist()], np.int64)


def apportion_exact(total: int, weights: I64) -> I64:
    """Split `total` by `weights` exactly: floors, then one more to the first rows as needed."""
    out = apportion(total, weights)
    rest = total - int(out.sum())
    if rest and weights.shape[0]:
        nz = np.flatnonzero(weights > 0)
        out[nz[:rest]] += 1
    return out

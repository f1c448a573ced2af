"""Revenue split of a charge: presets, custom presets from config, exact integer parts.

A preset gives each part a share in basis points (1/100 of a percent) that
sum to 10000. `split` floors every share, applies the quality multiplier to
the providers' share, and sends everything left over (rounding residue and the
providers' forfeited share) to burn, so the parts always sum to the charge.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from p2pinfer.errors import UsageError

BASIS_POINTS = 10_000
PER_MILLE = 1_000

PROVIDERS = "providers"
VALIDATORS = "validators"
STAKERS = "stakers"
TREASURY = "treasury"
BURN = "burn"
#: Every part a preset may name, in the order they are shown.
PART_NAMES: tuple[str, ...] = (PROVIDERS, VALIDATORS, STAKERS, TREASURY, BURN)


@dataclass(frozen=True)
class SplitPreset:
    """A named split: (part, basis points) pairs; validated by `make_preset`."""

    name: str
    shares: tuple[tuple[str, int], ...]

    def share(self, part: str) -> int:
        """Basis points of `part` (0 if the preset does not name it)."""
        return dict(self.shares).get(part, 0)


def make_preset(name: str, shares: Iterable[tuple[str, int]]) -> SplitPreset:
    """A validated preset; UsageError naming the problem if the shares are not a split.

    Rules: known part names, each at most once, integer basis points >= 0,
    summing to exactly 10000.
    """
    if not name or not name.isascii() or not name.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"split preset name {name!r} must be ascii letters, digits, - or _")
    seen: dict[str, int] = {}
    for part, bp in shares:
        if part not in PART_NAMES:
            raise UsageError(
                f"split preset {name!r}: unknown part {part!r} (known: {', '.join(PART_NAMES)})"
            )
        if part in seen:
            raise UsageError(f"split preset {name!r}: part {part!r} given twice")
        if isinstance(bp, bool) or not isinstance(bp, int) or bp < 0:
            raise UsageError(
                f"split preset {name!r}: share of {part!r} must be a whole number of "
                f"basis points >= 0, got {bp!r}"
            )
        seen[part] = bp
    total = sum(seen.values())
    if total != BASIS_POINTS:
        raise UsageError(
            f"split preset {name!r}: shares sum to {total} basis points, not {BASIS_POINTS}"
        )
    ordered = tuple((p, seen[p]) for p in PART_NAMES if p in seen)
    return SplitPreset(name, ordered)


#: The founding document's revenue distribution.
SEED = make_preset(
    "seed", [(PROVIDERS, 6000), (VALIDATORS, 1500), (BURN, 1500), (TREASURY, 1000)]
)
#: Burn-and-mint equilibrium as the founding document's prose states it (not its code sample).
BME = make_preset("bme", [(BURN, 5000), (PROVIDERS, 2500), (STAKERS, 1000), (TREASURY, 1500)])
#: Render-style burn-and-mint (the seed: "Render burns up to 95% of its protocol revenue"):
#: 95% of every charge is burned and a 5% service fee goes to the treasury; providers get
#: nothing from the charge and are paid by emission instead (see p2pinfer.sim).
RENDER = make_preset("render", [(BURN, 9500), (TREASURY, 500)])
PRESETS: dict[str, SplitPreset] = {SEED.name: SEED, BME.name: BME, RENDER.name: RENDER}


def preset_named(name: str, custom: Iterable[SplitPreset] = ()) -> SplitPreset:
    """The built-in or custom preset called `name`; UsageError if there is none."""
    for preset in custom:
        if preset.name == name:
            return preset
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(
            f"unknown split preset {name!r} (built in: {', '.join(sorted(PRESETS))})"
        ) from None


@dataclass(frozen=True)
class Split:
    """The parts of one charge in micro-credits. `burn` includes residue and `forfeited`."""

    charge: int
    providers: int
    validators: int
    stakers: int
    treasury: int
    burn: int
    #: The providers' share withheld by the quality multiplier (already inside `burn`).
    forfeited: int

    def parts(self) -> tuple[tuple[str, int], ...]:
        """(part, amount) for every part, in PART_NAMES order; amounts sum to `charge`."""
        return (
            (PROVIDERS, self.providers),
            (VALIDATORS, self.validators),
            (STAKERS, self.stakers),
            (TREASURY, self.treasury),
            (BURN, self.burn),
        )


def split(charge: int, preset: SplitPreset, quality_pm: int = PER_MILLE) -> Split:
    """Split `charge` micro-credits by `preset`, paying providers `quality_pm`/1000 of their share.

    Each part is floor(charge * bp / 10000); providers then get
    floor(that * quality_pm / 1000); burn gets its own share plus every
    micro-credit left over. Parts are >= 0 and sum to `charge` exactly.
    """
    if isinstance(charge, bool) or not isinstance(charge, int) or charge < 0:
        raise ValueError(f"a charge is a whole number of micro-credits >= 0, got {charge!r}")
    if not 0 <= quality_pm <= PER_MILLE:
        raise ValueError(f"quality multiplier must be 0..1000 per mille, got {quality_pm}")
    nominal = {part: charge * preset.share(part) // BASIS_POINTS for part in PART_NAMES}
    providers = nominal[PROVIDERS] * quality_pm // PER_MILLE
    forfeited = nominal[PROVIDERS] - providers
    validators, stakers, treasury = nominal[VALIDATORS], nominal[STAKERS], nominal[TREASURY]
    burn = charge - providers - validators - stakers - treasury
    return Split(charge, providers, validators, stakers, treasury, burn, forfeited)


def parse_shares(name: str, spec: str) -> SplitPreset:
    """A custom preset from config text such as `providers=7000,validators=1000,burn=2000`.

    Shares are basis points; UsageError (one line) on any malformed item.
    """
    pairs: list[tuple[str, int]] = []
    for item in spec.split(","):
        part, sep, value = item.strip().partition("=")
        if not sep or not value.strip().isdigit():
            raise UsageError(
                f"split preset {name!r}: expected part=basis_points, got {item.strip()!r}"
            )
        pairs.append((part.strip(), int(value)))
    return make_preset(name, pairs)

"""A node's settings: `NodeConfig` (the CLI's flags) and `check_config`.

Below node/run.py and node/offer.py, which both take a NodeConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from p2pinfer.errors import UsageError
from p2pinfer.gateway import GatewayConfig
from p2pinfer.gov.tally import MIN_VOTING_MS
from p2pinfer.jobs.job_types import ClientConfig
from p2pinfer.market.split import preset_named
from p2pinfer.net.config import parse_peer_addr
from p2pinfer.net.relay_rules import RelayMode
from p2pinfer.protocol import MAX_ADVERT_TTL_MS
from p2pinfer.settle.redeemer import RedeemPolicy
from p2pinfer.testing.faults import Fault
from p2pinfer.verify.config import VerifyConfig


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node runs with (the CLI's flags). Money in micro-credits."""

    home: Path
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/4001",)
    bootstrap: tuple[str, ...] = ()
    announce: tuple[str, ...] = ()
    mdns: bool = False
    relay: RelayMode = "auto"  # serve as a relay: auto (while AutoNAT says public), on, off
    reserve_relays: tuple[str, ...] = ()  # relays to be reached through (--reserve-relay)
    dcutr: bool = False  # jobs this node sends over a relay try a direct connection first
    dcutr_behind: bool = True  # ... or, without dcutr, behind the first one (in the background)
    backend: str = "embedded"  # or ollama[=URL], openai=URL, none (a consumer-only node)
    engine_options: tuple[tuple[str, int | float | bool], ...] = ()  # --engine-option
    models: tuple[str, ...] = ()
    gateway: str | None = "127.0.0.1:11435"
    api_key: str | None = None  # None: P2PINFER_API_KEY; required off loopback
    gateway_rate_limit: str | None = None  # RATE[/BURST] per key; None: env or 20/40
    fault: Fault | None = None
    faucet: int = 0  # granted to this node's own account once, for testnets
    price_per_1k: int | None = None  # None: market pricing
    max_concurrency: int = 1
    queue: int = 4
    stake: int = 0
    gov_min_voting_ms: int = MIN_VOTING_MS  # shortest voting period a proposal may have
    preset: str = "seed"
    benchmark: bool = True
    bench_cache: Path | None = None  # default <home>/bench.json
    advert_interval_s: float = 30.0
    advert_ttl_ms: int = 120_000
    # Settlement (docs/settlement.md): an EVM JSON-RPC URL and the Channels contract's
    # address; both None: no chain (credits stay ledger entries, as on older testnets).
    chain_rpc: str | None = None
    chain_contract: str | None = None
    redeem: RedeemPolicy = field(default_factory=RedeemPolicy)  # when vouchers are redeemed
    client: ClientConfig = field(default_factory=ClientConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)  # spot-checks (verify/checker)


    def gateway_config(self) -> GatewayConfig | None:
        """The gateway's settings (None: no gateway); UsageError if unsafe or malformed."""
        if not self.gateway:
            return None
        return GatewayConfig.resolve(self.gateway, api_key=self.api_key,
                                     rate_limit=self.gateway_rate_limit)


def check_config(config: NodeConfig) -> None:
    """UsageError for flag values that cannot work, before anything starts."""
    if config.max_concurrency < 1:
        raise UsageError("--max-concurrency must be at least 1")
    if config.queue < 0:
        raise UsageError("--queue must be 0 or more")
    if config.price_per_1k is not None and config.price_per_1k < 0:
        raise UsageError("--price must be 0 or more micro-credits per 1k tokens")
    if config.faucet < 0 or config.stake < 0:
        raise UsageError("--faucet and --stake are amounts of micro-credits, 0 or more")
    config.gateway_config()
    preset_named(config.preset)
    for addr in config.reserve_relays:
        parse_peer_addr(addr)  # UsageError for an address without /p2p/<PeerID>
    if (config.chain_rpc is None) != (config.chain_contract is None):
        raise UsageError("--chain-rpc and --chain-contract go together (or neither: no chain)")
    if config.redeem.gas_multiple < 0 or config.redeem.max_interval_s <= 0:
        raise UsageError("--redeem-gas-multiple is 0 or more, --redeem-max-interval over 0 s")
    if not 0 <= config.verify.recheck_rate_pm <= 1000 or config.verify.check_interval_s <= 0:
        raise UsageError("--recheck-rate is 0..1 and --check-interval more than 0 s")
    if config.advert_interval_s <= 0:
        raise UsageError("--advert-interval must be more than 0 s")
    if not 2000 * config.advert_interval_s <= config.advert_ttl_ms <= MAX_ADVERT_TTL_MS:
        # Under two intervals an advert lapses in peers' catalogs between republications.
        raise UsageError(f"--advert-ttl must be at least twice --advert-interval "
                         f"({2 * config.advert_interval_s:g} s) and at most "
                         f"{MAX_ADVERT_TTL_MS // 1000} s")
    if config.verify.check_max_tokens < 1:
        raise UsageError("--check-max-tokens must be at least 1")
    if config.verify.validator and config.backend.strip().lower() == "none":
        raise UsageError("--validator needs a backend to re-run the jobs it checks")

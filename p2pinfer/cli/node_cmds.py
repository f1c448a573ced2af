"""`p2pinfer node`: run a peer (provider, consumer gateway, or both)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import trio
import typer

from p2pinfer.backends.factory import BACKEND_HELP, parse_engine_option
from p2pinfer.cli.identity_cmds import HomeOption
from p2pinfer.config import resolve_home
from p2pinfer.gateway.config import API_KEY_ENV, DEFAULT_HOST, DEFAULT_PORT, RATE_LIMIT_ENV
from p2pinfer.gov.tally import MIN_VOTING_MS
from p2pinfer.http.conn_gate import raise_fd_limit
from p2pinfer.jobs.job_types import ClientConfig
from p2pinfer.node.config import NodeConfig, check_config
from p2pinfer.node.run import run_node
from p2pinfer.settle.redeemer import RedeemPolicy
from p2pinfer.testing.faults import FAULT_HELP, parse_fault
from p2pinfer.verify.config import VerifyConfig

Repeated = list[str] | None
PaceFloorOption = Annotated[float, typer.Option(
    "--min-tokens-per-s", min=0.0, max=1_000.0,
    help="After an answer's first chunk, leave a provider (unpaid, for the next one) whose "
    "answer falls under this many tokens a second on average, after a 20 s grace; 0: "
    "never (docs/node.md).")]
DEFAULT_GATEWAY = f"{DEFAULT_HOST}:{DEFAULT_PORT}"


def setup_logging(level: str) -> None:
    """key=value lines on stderr at `level` for p2pinfer's own loggers; other libraries'
    at INFO or above (and libp2p's only when severe, see net.host)."""
    chosen = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(
        level=max(chosen, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("p2pinfer").setLevel(chosen)


# Over 60 lines for its flags: typer reads one annotated parameter per option (the body
# is under 40 lines).
def node(
    home: HomeOption = None,
    listen: Annotated[Repeated, typer.Option(
        "--listen", help="TCP multiaddr to listen on (repeatable).")] = None,
    bootstrap: Annotated[Repeated, typer.Option(
        "--bootstrap", help="Peer to join through, /ip4/.../tcp/N/p2p/<PeerID> (repeatable).",
    )] = None,
    announce: Annotated[Repeated, typer.Option(
        "--announce", help="Address to tell others instead of the listen address.")] = None,
    mdns: Annotated[bool, typer.Option("--mdns", help="Find peers on the LAN.")] = False,
    relay: Annotated[bool | None, typer.Option(
        "--relay/--no-relay", help="Relay connections for peers behind NAT (Circuit Relay "
        "v2, bounded). Default: only while AutoNAT finds this node publicly reachable.",
        show_default=False)] = None,
    reserve_relay: Annotated[Repeated, typer.Option(
        "--reserve-relay", help="Be reachable through this relay, /ip4/.../tcp/N/p2p/<PeerID> "
        "(repeatable). Without it a node AutoNAT finds private picks connected relays.")] = None,
    dcutr: Annotated[bool, typer.Option(
        "--dcutr", help="After dialling a provider through a relay, try for a direct "
        "connection (DCUtR hole punching) before the job; needs a listen address a NAT "
        "maps, e.g. --listen /ip4/0.0.0.0/tcp/4001.")] = False,
    dcutr_behind: Annotated[bool, typer.Option(
        "--dcutr-behind/--no-dcutr-behind", help="Without --dcutr: once a job runs over a "
        "relay, try for a direct connection in the background, for the provider's next "
        "jobs (the running one stays on the relay).")] = True,
    backend: Annotated[str, typer.Option(
        "--backend", help=f"{BACKEND_HELP} | none (consumer only).")] = "embedded",
    models: Annotated[Repeated, typer.Option(
        "--models", help="Model to serve (repeatable; default: all the backend has).")] = None,
    engine_option: Annotated[Repeated, typer.Option(
        "--engine-option", help="Embedded engine setting KEY=VALUE (repeatable), e.g. "
        "n_threads=2, n_batch=64, flash_attn=true, type_k=8; embedding=true also embeds "
        "text (/v1/embeddings, /api/embed).")] = None,
    gateway: Annotated[str, typer.Option(
        "--gateway", help="HTTP gateway HOST:PORT (port 0: any free port).")] = DEFAULT_GATEWAY,
    no_gateway: Annotated[bool, typer.Option("--no-gateway", help="Run no gateway.")] = False,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", help=f"Gateway API key(s), comma-separated (default: ${API_KEY_ENV}); "
        "required to bind off loopback.")] = None,
    # "\\[" keeps rich (typer's help renderer) from reading "[/BURST]" as a closing tag.
    gateway_rate_limit: Annotated[str | None, typer.Option(
        "--gateway-rate-limit", help="Requests per second per key, RATE\\[/BURST]; 0: no limit "
        f"(default: ${RATE_LIMIT_ENV} or 20/40).")] = None,
    fault: Annotated[str | None, typer.Option(
        "--fault", help=f"Misbehave on purpose, for tests: {FAULT_HELP}.")] = None,
    faucet: Annotated[int, typer.Option(
        "--faucet", help="Testnet credit (micro-credits) granted to this node once.")] = 0,
    price: Annotated[int | None, typer.Option(
        "--price", help="Fixed price, micro-credits per 1k tokens (default: market).")] = None,
    max_concurrency: Annotated[int, typer.Option(
        "--max-concurrency", help="Jobs per model at once.")] = 1,
    queue: Annotated[int, typer.Option(
        "--queue", help="Jobs per model waiting for a slot; more are told busy.")] = 4,
    stake: Annotated[int, typer.Option(
        "--stake", help="Stake to advertise (micro-credits).")] = 0,
    gov_min_voting_s: Annotated[int, typer.Option(
        "--gov-min-voting-s", min=1,
        help="Refuse proposals with a shorter voting period (lower it on testnets).")]
    = MIN_VOTING_MS // 1000,
    preset: Annotated[str, typer.Option(
        "--preset", help="Revenue split preset for charges: seed | bme.")] = "seed",
    benchmark: Annotated[bool, typer.Option(
        "--benchmark/--no-benchmark", help="Measure each model once (cached).")] = True,
    bench_cache: Annotated[Path | None, typer.Option(
        "--bench-cache", help="Benchmark cache file (default: HOME/bench.json).")] = None,
    advert_interval: Annotated[float, typer.Option(
        "--advert-interval", help="Seconds between advert republications.")] = 30.0,
    advert_ttl: Annotated[float, typer.Option(
        "--advert-ttl", help="Seconds an advert stays valid: how long a node that went "
                             "away stays in others' catalogs (at least twice "
                             "--advert-interval, at most 600).")] = 120.0,
    validator: Annotated[bool, typer.Option(
        "--validator", help="Send spot-check jobs to other providers and publish reports.")
    ] = False,
    check_interval: Annotated[float, typer.Option(
        "--check-interval", help="Validator: mean seconds between check jobs.")] = 10.0,
    check_max_tokens: Annotated[int, typer.Option(
        "--check-max-tokens", help="Validator: max_tokens of a check job.")] = 64,
    recheck_rate: Annotated[float, typer.Option(
        "--recheck-rate", help="Share (0..1) of this node's own jobs re-run on its engine.")
    ] = 0.0,
    chain_rpc: Annotated[str | None, typer.Option(
        "--chain-rpc", envvar="P2PINFER_CHAIN_RPC",
        help="EVM JSON-RPC URL to settle on (docs/settlement.md); default: no chain.")] = None,
    chain_contract: Annotated[str | None, typer.Option(
        "--chain-contract", envvar="P2PINFER_CHAIN_CONTRACT",
        help="Address of the Channels contract on --chain-rpc.")] = None,
    redeem_gas_multiple: Annotated[int, typer.Option(
        "--redeem-gas-multiple",
        help="Redeem held vouchers once this node's share is worth this many times the "
             "gas (docs/settlement.md).")] = RedeemPolicy.gas_multiple,
    redeem_max_interval: Annotated[float, typer.Option(
        "--redeem-max-interval",
        help="Seconds: redeem whatever is owed at least this often.")] = (
        RedeemPolicy.max_interval_s),
    min_tokens_per_s: PaceFloorOption = ClientConfig.min_tokens_per_s,
    gossip_charge_proofs: Annotated[bool, typer.Option(
        "--gossip-charge-proofs",
        help="When a provider overcharges one of this node's jobs provably, show the proof "
             "(the job's prompt and answer with it) to every node, which shuts the provider "
             "out network-wide (docs/security/money.md). Check jobs always do.")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING.")] = "INFO",
) -> None:
    """Run a node until SIGTERM or Ctrl-C; writes HOME/node.json once it listens."""
    setup_logging(log_level)
    config = NodeConfig(
        home=resolve_home(home),
        listen=tuple(listen or ("/ip4/127.0.0.1/tcp/4001",)),
        bootstrap=tuple(bootstrap or ()),
        announce=tuple(announce or ()),
        mdns=mdns,
        relay="auto" if relay is None else ("on" if relay else "off"),
        reserve_relays=tuple(reserve_relay or ()),
        dcutr=dcutr,
        dcutr_behind=dcutr_behind,
        backend=backend,
        models=tuple(models or ()),
        engine_options=tuple(parse_engine_option(o) for o in engine_option or ()),
        gateway=None if no_gateway else gateway,
        api_key=api_key,
        gateway_rate_limit=gateway_rate_limit,
        fault=parse_fault(fault) if fault else None,
        faucet=faucet,
        price_per_1k=price,
        max_concurrency=max_concurrency,
        queue=queue,
        stake=stake,
        gov_min_voting_ms=gov_min_voting_s * 1000,
        preset=preset,
        benchmark=benchmark,
        bench_cache=bench_cache,
        advert_interval_s=advert_interval,
        advert_ttl_ms=round(advert_ttl * 1000),
        verify=VerifyConfig(validator=validator, check_interval_s=check_interval,
                            check_max_tokens=check_max_tokens,
                            recheck_rate_pm=round(recheck_rate * 1000)),
        chain_rpc=chain_rpc,
        chain_contract=chain_contract,
        redeem=RedeemPolicy(gas_multiple=redeem_gas_multiple,
                            max_interval_s=redeem_max_interval),
        client=ClientConfig(min_tokens_per_s=min_tokens_per_s,
                            gossip_charge_proofs=gossip_charge_proofs),
    )
    check_config(config)
    raise_fd_limit()  # its peers, dials, gateway clients and files share one table
    trio.run(lambda: run_node(config, handle_signals=True))


def register(app: typer.Typer) -> None:
    app.command("node")(node)

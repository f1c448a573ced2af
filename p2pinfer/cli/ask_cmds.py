"""`p2pinfer ask "PROMPT" --model M`: one job on the network from a short-lived host."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import trio
import typer

from p2pinfer.cli import terminal
from p2pinfer.cli.identity_cmds import HomeOption
from p2pinfer.cli.node_cmds import PaceFloorOption, setup_logging
from p2pinfer.jobs.job_types import ClientConfig, JobOutcome, TextDelta
from p2pinfer.node.session import AskRequest, ask, consumer_session, session_config, voucher_of
from p2pinfer.protocol import JobParams

BootstrapOption = Annotated[list[str] | None, typer.Option(
    "--bootstrap", help="Peer to join through, /ip4/.../tcp/N/p2p/<PeerID> (repeatable).")]
TestnetOption = Annotated[Path | None, typer.Option(
    "--testnet", help="Join the local testnet in DIR (its consumer home: DIR/consumer).")]


ChainRpcOption = Annotated[str | None, typer.Option(
    "--chain-rpc", envvar="P2PINFER_CHAIN_RPC",
    help="EVM JSON-RPC URL to pay on through channels (docs/settlement.md); default: the "
         "--testnet's chain, if it has one, else no chain.")]
ChainContractOption = Annotated[str | None, typer.Option(
    "--chain-contract", envvar="P2PINFER_CHAIN_CONTRACT",
    help="Address of the Channels contract on --chain-rpc.")]


def outcome_json(outcome: JobOutcome, voucher: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one object `ask --json` prints (`voucher`: with settlement, else null)."""
    return {
        "text": outcome.text,
        "model": outcome.model,
        "provider": outcome.provider,
        "job_id": outcome.job_id,
        "usage": {"prompt_tokens": outcome.prompt_tokens,
                  "completion_tokens": outcome.completion_tokens},
        "finish_reason": outcome.finish_reason,
        "digest": outcome.digest,
        "price_per_1k": outcome.price_per_1k,
        "charged": outcome.charged,
        "receipt": base64.b64encode(outcome.receipt).decode(),
        "result": base64.b64encode(outcome.result).decode(),
        "receipt_delivered": outcome.receipt_delivered,
        "failovers": [
            {"provider": f.provider, "job_id": f.job_id, "reason": f.reason, "code": f.code}
            for f in outcome.failovers
        ],
        "found_via": outcome.found_via,
        "path": outcome.path,
        "ttft_ms": round(outcome.ttft_ms, 1),
        "total_ms": round(outcome.total_ms, 1),
        "voucher": voucher,
    }


# Over 60 lines for its flags: typer reads one annotated parameter per option (the body
# is under 40 lines).
def ask_cmd(
    prompt: Annotated[str, typer.Argument(help="What to ask.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name.")] = "smollm2:135m",
    stream: Annotated[bool, typer.Option("--stream", help="Print the answer as it comes.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1)] = 256,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=10.0)] = 0.0,
    seed: Annotated[int | None, typer.Option("--seed", min=0, max=2**32 - 1)] = None,
    system: Annotated[str | None, typer.Option("--system", help="A system message.")] = None,
    home: HomeOption = None,
    bootstrap: BootstrapOption = None,
    testnet_dir: TestnetOption = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds for the whole job.")] = 300,
    discovery_timeout: Annotated[float, typer.Option(
        "--discovery-timeout", help="Seconds to keep looking for a provider of the model "
        "in the DHT before giving up (exit 7).")] = 15.0,
    max_price: Annotated[int, typer.Option(
        "--max-price", help="Most to pay, micro-credits per 1k tokens.")] = 10_000,
    min_stake: Annotated[int, typer.Option(
        "--min-stake", help="Skip providers advertising less stake (micro-credits).")] = 0,
    min_tokens_per_s: PaceFloorOption = ClientConfig.min_tokens_per_s,
    dht_only: Annotated[bool, typer.Option(
        "--dht-only", help="Find providers in the DHT alone (ignore gossip adverts and "
        "directly connected peers): checks that the model can be found by lookup.")] = False,
    faucet: Annotated[int, typer.Option(
        "--faucet", help="Testnet credit granted to this home once (micro-credits).")] = 0,
    chain_rpc: ChainRpcOption = None,
    chain_contract: ChainContractOption = None,
    listen: Annotated[list[str] | None, typer.Option(
        "--listen", help="TCP multiaddr this short-lived host listens on (repeatable; "
        "default /ip4/127.0.0.1/tcp/0). DCUtR behind a NAT needs a fixed port on all "
        "interfaces, e.g. /ip4/0.0.0.0/tcp/4001.")] = None,
    dcutr: Annotated[bool, typer.Option(
        "--dcutr", help="After reaching a provider through a relay, try to punch a direct "
        "connection (DCUtR, up to 6 s) before the job starts; the relay carries the job "
        "when that fails (docs/network.md).")] = False,
    log_level: Annotated[str, typer.Option("--log-level")] = "WARNING",
) -> None:
    """Ask the network: the answer on stdout, who served it and what it cost on stderr."""
    setup_logging(log_level)
    config = session_config(
        home, bootstrap or (), testnet_dir,
        client=ClientConfig(max_price_per_1k=max_price, min_stake=min_stake, dht_only=dht_only,
                            discovery_timeout_s=min(discovery_timeout, timeout / 2),
                            min_tokens_per_s=min_tokens_per_s),
        faucet=faucet, chain_rpc=chain_rpc, chain_contract=chain_contract,
        listen=listen or (), dcutr=dcutr)
    request = AskRequest(model, prompt, system, JobParams(
        max_tokens=max_tokens, temperature=temperature, seed=seed), timeout)

    def on_delta(delta: TextDelta) -> None:
        if not stream or as_json:
            return
        if delta.restart:
            print("\n[the answer restarts: another provider took over]", file=sys.stderr)
        sys.stdout.write(terminal.for_stdout(delta.text))
        sys.stdout.flush()

    async def main() -> tuple[JobOutcome, dict[str, Any] | None]:
        async with consumer_session(config) as client:
            outcome = await ask(client, request, on_delta)
            return outcome, voucher_of(client, outcome)

    outcome, voucher = trio.run(main)
    if as_json:
        print(json.dumps(outcome_json(outcome, voucher)))
        return
    if stream:
        print()
    else:
        print(terminal.for_stdout(outcome.text))
    failed = f", after {len(outcome.failovers)} failed provider(s)" if outcome.failovers else ""
    print(f"served by {outcome.provider} · job {outcome.job_id} · "
          f"{outcome.prompt_tokens}+{outcome.completion_tokens} tokens · "
          f"charged {outcome.charged} micro-credits{failed}", file=sys.stderr)
    if voucher is not None:
        print(f"paid by voucher: cumulative {voucher['cumulative']} micro-credits, signed by "
              f"{voucher['signer']}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command("ask")(ask_cmd)

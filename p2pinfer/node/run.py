"""One running peer: identity, backend, benchmark, libp2p host, advert, job server,
consumer client, ledger, reputation, metrics and gateway, in one trio nursery.

What a provider serves and advertises is `node/offer.py`.

`run_node(NodeConfig(...))` runs until cancelled or, with `handle_signals`,
until SIGTERM/SIGINT. Once it listens it writes `<home>/node.json` (atomically):
pid, peer_id, listen_addrs (with /p2p/), gateway_url, models, fault. The local
testnet and the tests wait on that file.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import closing
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from p2pinfer import identity as identity_store
from p2pinfer.errors import DuplicateEntryError
from p2pinfer.gateway import GatewayConfig, run_gateway
from p2pinfer.gateway.operator_key import load_or_create_operator_key
from p2pinfer.gov.apply import GovernedParts, apply_parameters
from p2pinfer.gov.service import GovService
from p2pinfer.gov.store import GovStore, gov_path, wall_ms
from p2pinfer.gov.tally import TallyRules
from p2pinfer.hardware import probe
from p2pinfer.hardware.probe import MachineProfile
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.client import JobClient
from p2pinfer.jobs.job_server import JobServer, JobServerConfig
from p2pinfer.jobs.refusals import keep_refusals
from p2pinfer.json_depth import cap_recursion_limit
from p2pinfer.market.checkpoint import StartupCheck, checkpoint_path, verify_from_checkpoint
from p2pinfer.market.ledger import Ledger, ledger_path
from p2pinfer.market.split import preset_named
from p2pinfer.metrics import NodeMetrics
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.relay_rules import RelayClientConfig, RelayServiceConfig
from p2pinfer.node.config import NodeConfig
from p2pinfer.node.job_board import JobBoard
from p2pinfer.node.offer import (
    Served,
    advert_builder,
    benchmark_models,
    machine_view,
    make_node_backend,
    served_fault,
    served_models,
)
from p2pinfer.node.status import NodeStatus
from p2pinfer.node.view import LiveNodeView
from p2pinfer.settle.node_stakes import StakeServices, start_stakes, with_payee
from p2pinfer.settle.ports import ChainPort
from p2pinfer.settle.wiring import Settlement, reach_chain
from p2pinfer.validator.checker import Verifier
from p2pinfer.verify.config import VerifyConfig
from p2pinfer.verify.engine_gate import EngineGate
from p2pinfer.verify.reputation_store import ReputationBook, reputation_path

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

FAUCET_GRANT_ID = "node-faucet"
#: How often a node re-tallies governance to apply parameters whose time has come.
GOVERNANCE_POLL_S = 5.0
#: How often a running node verifies its new ledger entries and moves its checkpoint up,
#: so the next start walks at most this long's worth of entries.
LEDGER_CHECKPOINT_S = 300.0


def grant_faucet(ledger: Ledger, identity: NodeIdentity, amount: int) -> bool:
    """Grant `amount` testnet micro-credits to this node's account, once per ledger."""
    if amount <= 0:
        return False
    try:
        ledger.record_faucet(identity.public_key, amount, grant_id=FAUCET_GRANT_ID)
    except DuplicateEntryError:
        return False
    log.info("faucet granted amount=%d", amount)
    return True


def verify_ledger(ledger: Ledger, identity: NodeIdentity, home: Path) -> StartupCheck:
    """Verify the ledger from its checkpoint (in full without one) and move the checkpoint
    to the head; LedgerIntegrityError (exit 11) names what is wrong."""
    check = verify_from_checkpoint(ledger, identity, checkpoint_path(home))
    log.info("ledger verified entries=%d from_checkpoint=%d head=%d seconds=%.3f",
             check.verified, check.checkpoint_seq, check.head_seq, check.seconds)
    return check


async def _advance_ledger_checkpoint(ledger: Ledger, identity: NodeIdentity, home: Path) -> None:
    """Verify the entries written since the last check, now and then (in a thread)."""
    limiter = trio.CapacityLimiter(1)
    while True:
        await trio.sleep(LEDGER_CHECKPOINT_S)
        await trio.to_thread.run_sync(verify_ledger, ledger, identity, home, limiter=limiter)


async def _follow_governance(governance: GovService, parts: GovernedParts) -> None:
    """Apply the parameters passed proposals put in effect, as their time comes."""
    while True:
        status = await governance.status()
        apply_parameters(parts, status.in_effect)
        await trio.sleep(GOVERNANCE_POLL_S)


async def _gauges(net: NetHost, metrics: NodeMetrics, server: JobServer | None) -> None:
    while True:
        metrics.peers.set(len(net.peers()))
        metrics.catalog_providers.set(len(net.catalog.peer_ids()))
        if server is not None:
            metrics.replay_ids.set(server.replay_ids)
        await trio.sleep(5)


async def _identity_ledger_chain(
    config: NodeConfig, chain: ChainPort | None
) -> tuple[NodeIdentity, ChainPort | None]:
    """This node's key (created on first start), its ledger verified, and its chain."""
    config.home.mkdir(parents=True, exist_ok=True)
    identity = identity_store.load_or_create(config.home)
    # First, before the engine loads: a node never runs on a ledger it cannot trust.
    with Ledger.open(ledger_path(config.home), identity) as ledger:
        verify_ledger(ledger, identity, config.home)
    chain = chain or await reach_chain(config, identity)  # settlement: exit 15 if unreachable
    if config.fault is not None:
        log.warning("FAULT INJECTION ON: fault=%s (this node misbehaves on purpose)",
                    config.fault)
    return identity, chain


def host_config(config: NodeConfig, identity: NodeIdentity) -> NetConfig:
    """The host's settings for a node run with `config`."""
    return NetConfig(identity, listen_addrs=config.listen, bootstrap=config.bootstrap,
                     announce_addrs=config.announce, enable_mdns=config.mdns,
                     relay=RelayServiceConfig(mode=config.relay),
                     relay_client=RelayClientConfig(reserve=config.reserve_relays,
                                                    dcutr=config.dcutr,
                                                    dcutr_behind=config.dcutr_behind))


# Over 60 lines by design: the node's one nursery, whose start order (stakes, job server,
# client, settlement, governance, gateway, verifier) reads best in one place.
async def run_node(
    config: NodeConfig,
    *,
    handle_signals: bool = False,
    task_status: TaskStatus[NodeStatus] = trio.TASK_STATUS_IGNORED,
    chain: ChainPort | None = None,
) -> None:
    """Run the node until cancelled (or a signal, with `handle_signals`); `task_status`
    gets the status written to node.json. `chain`: settlement on (docs/settlement.md);
    without it, the chain `--chain-rpc`/`--chain-contract` name, if any."""
    cap_recursion_limit()  # py_ecc raised it on import: p2pinfer/json_depth.py
    home = config.home
    identity, chain = await _identity_ledger_chain(config, chain)
    preset = preset_named(config.preset)
    gateway_config = config.gateway_config()
    backend = make_node_backend(config)
    machine = await trio.to_thread.run_sync(probe)
    served: list[Served] = []
    if backend is not None:
        served = await benchmark_models(backend, await served_models(backend, config), machine,
                                        config)
    with Ledger.open(ledger_path(home), identity) as ledger, \
            ReputationBook.open(reputation_path(home)) as reputation, \
            closing(GovStore(gov_path(home))) as gov_store:
        grant_faucet(ledger, identity, config.faucet)
        settlement = Settlement.build(chain, identity, ledger, config.redeem) if chain else None
        metrics = NodeMetrics()
        board = JobBoard()  # the jobs the dashboard shows
        net_config = host_config(config, identity)
        try:
            async with run_host(net_config) as net, trio.open_nursery() as nursery:
                stakes = await start_stakes(chain, identity, net, nursery, ledger=ledger,
                                            clock_ms=wall_ms)
                server: JobServer | None = None
                # Paid jobs first: re-runs of reported jobs wait for an idle engine and
                # stop when a paid job opens a stream on it.
                # An engine in this process is charged the CPU it spent on re-runs;
                # one behind HTTP, wall time (the only measure we have of it).
                gate = EngineGate(charge_clock=time.process_time
                                  if backend is not None and backend.name == "embedded"
                                  else None)
                if backend is not None and served:
                    server = JobServer(
                        identity, gate.paid(
                            board.track(backend, role="provider", provider=net.peer_id)),
                        {s.info.name: s.info for s in served},
                        config=JobServerConfig(
                            max_concurrency=config.max_concurrency, queue=config.queue,
                            price_per_1k=config.price_per_1k, preset=preset,
                            fault=served_fault(config.fault)),
                        catalog=net.catalog, ledger=ledger, metrics=metrics,
                        channels=settlement.channels if settlement else None)
                    # Who it refused before a restart stays refused (jobs/refusals.py).
                    await nursery.start(keep_refusals, reputation, server.gate, server.channels)
                    _serve_and_advertise(net, server, served, machine, backend.name, config,
                                         stakes)
                client = JobClient(net, identity, ledger=ledger, reputation=reputation,
                                   metrics=metrics, config=config.client,
                                   payer=settlement.payer if settlement else None,
                                   stakes=stakes.book if stakes else None)
                if settlement is not None:
                    await nursery.start(settlement.run)
                governance = GovService(
                    identity, net, gov_store, stake=config.stake, ledger=ledger,
                    rules=TallyRules(min_voting_ms=config.gov_min_voting_ms),
                    chain=stakes.governance if stakes else None)
                await governance.start(nursery)
                gateway_url = None
                if gateway_config is not None:
                    view = LiveNodeView(
                        net=net, client=client, metrics=metrics, hardware=machine_view(machine),
                        ledger=ledger, reputation=reputation, server=server, board=board,
                        engine=backend.name if backend is not None else "",
                        governance=governance, stakes=stakes.book if stakes else None)
                    gateway_url = await _start_gateway(nursery, view, gateway_config, home)
                nursery.start_soon(_gauges, net, metrics, server)
                nursery.start_soon(_advance_ledger_checkpoint, ledger, identity, home)
                verifier = Verifier(
                    net, identity, client, backend=backend,
                    models=frozenset(s.info.name for s in served), reputation=reputation,
                    ledger=ledger, gate=gate, config=_verify_config(config, server),
                    digests={s.info.name: s.info.digest for s in served})
                verifier.slasher = stakes.slasher if stakes else None
                nursery.start_soon(verifier.run)
                nursery.start_soon(_follow_governance, governance,
                                   GovernedParts(server, client, verifier))
                status = _node_status(net, config, served, gateway_url)
                status.write(home)
                log.info("node running peer=%s addrs=%s models=%s gateway=%s", net.peer_id,
                         ",".join(net.addrs()), ",".join(status.models) or "-", gateway_url)
                task_status.started(status)
                if handle_signals:
                    await _wait_for_signal()
                    nursery.cancel_scope.cancel()
                else:
                    await trio.sleep_forever()
        finally:
            if backend is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await backend.aclose()
    log.info("node stopped peer=%s", identity.peer_id)


def _serve_and_advertise(
    net: NetHost, server: JobServer, served: list[Served], machine: MachineProfile,
    engine: str, config: NodeConfig, stakes: StakeServices | None,
) -> None:
    """Serve jobs on `net` and advertise the served models, priced by `server`."""
    server.install(net.set_stream_handler)
    server.paid_hooks.append(net.value_peer)
    server.relayed_hooks.append(net.relay_check.job_ended)
    net.start_advertising(
        with_payee(advert_builder(served, server, machine, engine, config), stakes),
        interval_s=config.advert_interval_s)


async def _start_gateway(
    nursery: trio.Nursery, view: LiveNodeView, gateway_config: GatewayConfig, home: Path
) -> str:
    """Start the HTTP gateway over `view` (with the operator's key); its URL."""
    operator = replace(gateway_config, operator_key=load_or_create_operator_key(home))
    binding = await nursery.start(partial(run_gateway, view, operator))
    return str(binding.url)


def _verify_config(config: NodeConfig, server: JobServer | None) -> VerifyConfig:
    """Spot-check settings: a reported request is re-run only within our job limits."""
    if server is None:
        return config.verify
    return replace(config.verify, recheck_limits=server.config.limits)


def _node_status(
    net: NetHost, config: NodeConfig, served: list[Served], gateway_url: str | None
) -> NodeStatus:
    """What `<home>/node.json` says of a running node."""
    return NodeStatus(
        pid=os.getpid(),
        peer_id=net.peer_id,
        listen_addrs=tuple(net.addrs()),
        gateway_url=gateway_url,
        models=tuple(s.info.name for s in served),
        fault=str(config.fault) if config.fault else None,
        backend=config.backend,
        home=str(config.home),
    )


async def _wait_for_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("stopping signal=%s", signal.Signals(signum).name)
            return

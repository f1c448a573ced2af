"""The swarm's auto-connector dials every peer its peerstore holds, on its own.

**Defect (py-libp2p 0.8.1).** `libp2p/network/auto_connector.py`,
`AutoConnector.maybe_connect`, started by `Swarm.run` for every host: whenever the host
holds fewer connections than halfway between its watermarks (200 by default), it dials
that many peers from the peerstore, at any address the peerstore holds for them, every
`auto_connect_interval` (30 s), every 10 s while under `min_connections` (50: always,
on our networks), and after every disconnect (`Swarm._schedule_auto_connect`); short
of candidates it makes the DHT walk for more. The peerstore is filled by DHT records and
identify, which any peer writes into. So: (1) every node dialed, unasked, addresses an
attacker published, a reflection many nodes deep; (2) a peer we reach only through a
relay (a NATed provider, a validator's check host reaching one) was dialed directly at
the addresses its identify gave: the check host knocked on the provider's router from
its own address, and the direct connection's arrival closed the relayed one (one
connection per peer) in the middle of a check
(tests/integration/test_jobs_relayed.py's check-job test failed 5 runs in 6 on this VM
from that); (3) idle nodes kept dialing and walking the DHT.

**What we do.** `quiet(host)` makes the host's auto-connector do nothing (an instance
attribute replaces `maybe_connect`) before the host runs: `run_host` and the AutoNAT
dial-back host call it. Whom a node dials stays our code's decision (bootstrap peers,
provider lookups, the catalog, relays, DCUtR). The connection pruner is untouched.

**To drop it.** When upstream lets a host turn the auto-connector off (or dials only
peers it was told to keep), use that and delete this module; the guard test
(tests/unit/net/compat/test_auto_connect.py) fails on its defect check if upstream stops
auto-dialing the peerstore.

**Upstream.** Not reported. Drafted patch (a `ConnectionConfig.auto_connect` switch):
docs/upstream/auto-connect-off.diff.
"""

from __future__ import annotations

from typing import Any

from libp2p.abc import IHost

PATCHED = {
    "libp2p.network.auto_connector:AutoConnector.maybe_connect": "018fac95eafc2413",
    "libp2p.network.auto_connector:AutoConnector._periodic_check_task": "a7f85451d7c8058d",
    "libp2p.network.swarm:Swarm._schedule_auto_connect": "3fbd49fa201bce1e",
}
"""libp2p source this module relies on, with its digest at 0.8.1 (`_canary`)."""

UPSTREAM = None
DRAFT = "docs/upstream/auto-connect-off.diff"


async def _dial_nobody() -> None:
    """The auto-connector's round, doing nothing."""


def quiet(host: IHost) -> IHost:
    """`host`, whose swarm will never dial peers on its own (returned for chaining)."""
    swarm: Any = host.get_network()  # Any: auto_connector is Swarm's, not INetwork's
    swarm.auto_connector.maybe_connect = _dial_nobody
    return host

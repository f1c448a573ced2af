"""`Slasher`: a node's part in slashing a provider's stake on chain (docs/settlement.md,
"Slashing").

When this node's validator confirms fraud (`verify.report_receiver.ReportReceiver._confirm`), it
signs the slash digest for (the provider's bound account, `slash_amount` of its stake
on chain, sha256 of the report's signed bytes) and gossips a `SlashVote` on
`SLASH_TOPIC`. Every node collects votes (`SlashVotes`, bounded and checked) and, once
a triple holds the contract's threshold of eligible signatures, submits `Stake.slash`;
the first submission wins and another node's "evidence already used" is journalled
as done. Chain calls run in the background task (`run`), never in the gossip handler.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from p2pinfer.errors import ChainError, ChainRevertedError, P2PInferError, ProtocolError
from p2pinfer.identity import NodeIdentity, public_key_from_peer_id
from p2pinfer.market.ledger import Ledger
from p2pinfer.protocol import SLASH_TOPIC, SlashVote, decode_as, sign
from p2pinfer.settle.account import account_of, bind_signature
from p2pinfer.settle.addresses import address_bytes
from p2pinfer.settle.ports import ChainPort
from p2pinfer.settle.slash_votes import SlashKey, SlashParams, SlashVotes
from p2pinfer.settle.stakes import StakeBook
from p2pinfer.settle.vouchers import sign_digest

log = logging.getLogger(__name__)

#: Share of the provider's stake on chain one proven fraud slashes, basis points.
SLASH_FRACTION_BP = 5000
#: Amounts are rounded down to whole credits, so validators that read the stake at
#: slightly different times still sign the same digest.
CREDIT = 1_000_000
#: Outcomes of submissions kept for the admin view and tests.
MAX_JOURNAL = 100

Publish = Callable[[str, bytes], Awaitable[None]]


def slash_amount(stake: int) -> int:
    """What one proven fraud slashes of a provider holding `stake` on chain."""
    return stake * SLASH_FRACTION_BP // 10_000 // CREDIT * CREDIT


@dataclass(frozen=True)
class SlashOutcome:
    """One submission of a slash and how it ended."""

    provider: str  # account
    amount: int
    evidence: str  # hex
    result: str  # "slashed tx=...", "already slashed", "refused: ...", "failed: ..."


class Slasher:
    """Votes, collects votes and submits slashes for one node (module doc)."""

    def __init__(
        self, identity: NodeIdentity, chain: ChainPort, stakes: StakeBook, params: SlashParams,
        *, publish: Publish, ledger: Ledger | None = None, clock_ms: Callable[[], int],
    ) -> None:
        self.identity, self.chain, self.stakes, self.params = identity, chain, stakes, params
        self.votes = SlashVotes(params, stakes)
        self._publish, self._ledger, self._clock = publish, ledger, clock_ms
        self._account = account_of(identity)
        self._binding = bind_signature(self._account, identity.peer_id)
        self._chain_lock = trio.CapacityLimiter(1)
        self._wake = trio.Event()
        self.journal: deque[SlashOutcome] = deque(maxlen=MAX_JOURNAL)

    # -- voting --------------------------------------------------------------------------

    async def on_fraud(self, provider_peer: str, payee: bytes | None, binding: bytes | None,
                       report_raw: bytes) -> str:
        """Vote to slash `provider_peer` (whose advert named `payee`, bound by `binding`)
        for the report `report_raw`; returns what was done."""
        account = self.stakes.bound_account(provider_peer, payee, binding)
        if account is None:
            return "no chain account bound to the provider: nothing to slash on chain"
        try:
            stake = await trio.to_thread.run_sync(self.chain.stake_of, account,
                                                  limiter=self._chain_lock)
        except ChainError as exc:
            return f"provider stake not read: {exc}"
        self.stakes.put(account, stake)
        amount = slash_amount(stake)
        if amount == 0:
            return "provider holds no stake to slash"
        evidence = hashlib.sha256(report_raw).digest()
        signature = sign_digest(self._account.private_key,
                                self.votes.digest(account, amount, evidence))
        signed = sign(SlashVote(provider=provider_peer, provider_payee=address_bytes(account),
                                amount=amount, evidence=evidence,
                                validator=address_bytes(self._account.address),
                                validator_binding=self._binding, signature=signature,
                                issued_at=self._clock()), self.identity)
        # Published first: the topic's validator (`take`) keeps it on the way out.
        await self._publish(SLASH_TOPIC, signed.raw)
        self.votes.add(signed, self._clock())
        self._wake.set()
        return f"voted to slash {amount} of {account}"

    def take(self, raw: bytes) -> str:
        """Keep a gossiped vote; "" if kept (then it is relayed), else why not. Quick and
        synchronous (the topic's validator): never calls the chain."""
        try:
            signed = decode_as(raw, SlashVote)
        except ProtocolError as exc:
            return f"undecodable: {exc}"
        reason = self.votes.add(signed, self._clock())
        if not reason:
            self._wake.set()
        return reason

    async def receive(self, raw: bytes) -> str:
        """`take`, for callers in a task."""
        return self.take(raw)

    # -- submitting ----------------------------------------------------------------------

    async def submit_ready(self) -> int:
        """Submit every triple holding the threshold; how many were submitted."""
        submitted = 0
        for key, held, sigs in self.votes.ready():
            held.submitted = True
            submitted += 1
            await self._submit(key, held.provider_peer, sigs)
        return submitted

    async def _submit(self, key: SlashKey, provider_peer: str, sigs: list[bytes]) -> None:
        provider, amount, evidence = key
        try:
            tx = await trio.to_thread.run_sync(self.chain.slash, provider, amount, evidence,
                                               sigs, limiter=self._chain_lock)
            result = f"slashed tx={tx.tx_hash}"
        except ChainRevertedError as exc:
            if "evidence already used" not in str(exc):
                self._note(key, f"refused: {exc}")  # stays marked submitted: not retried
                return
            result = "already slashed"  # another node submitted first: that is fine
        except ChainError as exc:
            held = self.votes.get(key)
            if held is not None:
                held.submitted = False  # unreachable chain: retried on the next pass
            self._note(key, f"failed: {exc}")
            return
        self._note(key, result)
        self.votes.close(key)
        await self._record(provider_peer, key, result)

    def _note(self, key: SlashKey, result: str) -> None:
        provider, amount, evidence = key
        self.journal.append(SlashOutcome(provider, amount, evidence.hex(), result))
        log.info("slash provider=%s amount=%d evidence=%s %s", provider, amount,
                 evidence.hex()[:16], result)

    async def _record(self, provider_peer: str, key: SlashKey, result: str) -> None:
        ledger = self._ledger
        if ledger is None:
            return
        provider, amount, evidence = key

        def write() -> None:
            ledger.record_slash(public_key_from_peer_id(provider_peer), amount,
                                reason=f"on chain: {result} account={provider}",
                                evidence=evidence, slash_id=f"chain:{evidence.hex()}")

        try:
            await trio.to_thread.run_sync(write)
        except (P2PInferError, ValueError) as exc:  # DuplicateEntryError: journalled before
            log.info("slash not journalled provider=%s error=%s", provider_peer, exc)

    async def run(self, *, interval_s: float = 2.0) -> None:
        """Submit ready slashes and expire old votes until cancelled."""
        while True:
            with trio.move_on_after(interval_s):
                await self._wake.wait()
            self._wake = trio.Event()
            self.votes.expire(self._clock())
            await self.submit_ready()

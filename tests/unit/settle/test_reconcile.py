"""`ledger --verify` with a chain: the voucher journal against the chain's channels (a
fake chain for the disagreements a real one cannot be made to show; the agreeing case
runs on a real chain in tests/integration/test_chain_settlement.py)."""

from __future__ import annotations

from pathlib import Path

from p2pinfer.identity import NodeIdentity
from p2pinfer.market.channel_entries import VoucherBody
from p2pinfer.market.ledger import Ledger
from p2pinfer.settle.addresses import address_bytes
from p2pinfer.settle.ports import ChannelState
from p2pinfer.settle.reconcile import reconcile
from tests.support.fake_chain import CHANNELS, FakeChainForTests

CONSUMER = "0x" + "11" * 20
PROVIDER = "0x" + "22" * 20


def voucher(role: str, cumulative: int, channels: str = CHANNELS) -> VoucherBody:
    return VoucherBody(role, address_bytes(channels), address_bytes(CONSUMER),  # type: ignore[arg-type]
                       address_bytes(PROVIDER), bytes(16), cumulative, cumulative, b"\1" * 65)


def test_a_provider_redeeming_more_than_the_consumer_ever_signed_is_a_mismatch(
        tmp_path: Path) -> None:
    # The consumer's key signed a voucher its journal never saw (a lost journal, or the
    # key in use elsewhere): the chain shows more redeemed than this node ever owed.
    chain = FakeChainForTests(CONSUMER)
    chain.state[(CONSUMER, PROVIDER)] = ChannelState(deposit=1_000, redeemed=700, reclaim_at=0)
    with Ledger.open(tmp_path / "l.sqlite3", NodeIdentity.generate()) as ledger:
        ledger.record_settlement(voucher("signed", 500))
        outcome = reconcile(ledger.entries(), chain)
        assert not outcome.ok and outcome.channels == 1
        assert outcome.mismatches[0].reason == (
            "the provider redeemed 700 units, more than the largest voucher this node "
            "signed (500)")
        chain.state[(CONSUMER, PROVIDER)] = ChannelState(1_000, 500, 0)
        assert reconcile(ledger.entries(), chain).ok


def test_a_provider_whose_key_redeemed_behind_its_journal_is_a_mismatch(tmp_path: Path) -> None:
    chain = FakeChainForTests(PROVIDER)
    chain.state[(CONSUMER, PROVIDER)] = ChannelState(deposit=1_000, redeemed=900, reclaim_at=0)
    with Ledger.open(tmp_path / "l.sqlite3", NodeIdentity.generate()) as ledger:
        ledger.record_settlement(voucher("held", 400))
        ledger.record_settlement(voucher("held", 300, channels="0x" + "99" * 20))
        outcome = reconcile(ledger.entries(), chain)
        assert outcome.other_contracts == 1
        assert [m.reason for m in outcome.mismatches] == [
            "the chain shows 900 units redeemed, more than any voucher the journal holds (400)"]

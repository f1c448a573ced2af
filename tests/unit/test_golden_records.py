"""Golden vectors: every signed thing keeps the exact bytes it had before the one codec.

golden/records-v1.json and golden/ledger-v1.sqlite were written by the code before
protocol/canonical.py and protocol/records.py (two codecs, hand-written records):
protocol messages, a stake declaration, proposals and votes, one ledger body of each
kind, an entry signature, a checkpoint signature, and a whole ledger file. Signatures
already made, ledgers already written and messages already gossiped must still verify,
so each vector is decoded, re-encoded to the same bytes and verified here.

One vector was written again since: `job_accept`, when JobAccept gained `request_hash`
(attack 64). An accept lives only on its job stream (nothing stored or gossiped held
one before), so no signature already made had to keep verifying.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from p2pinfer.errors import DecodeError
from p2pinfer.gov.messages import (
    Proposal,
    Vote,
    decode_message,
    sign_proposal,
    sign_vote,
    verify_message,
)
from p2pinfer.identity import NodeIdentity
from p2pinfer.market import entries as E
from p2pinfer.market.channel_entries import RedeemedClaim, RedemptionBody, VoucherBody
from p2pinfer.market.checkpoint import CHECKPOINT_DOMAIN, Checkpoint
from p2pinfer.market.ledger import Ledger
from p2pinfer.market.split import SEED, split
from p2pinfer.market.stake import StakeDeclaration, sign_stake, verify_stake
from p2pinfer.protocol.codec import decode, sign
from p2pinfer.protocol.records import verify_bytes
from tests.unit.protocol_samples import SAMPLES
from tests.unit.protocol_strategies import CONSUMER

GOLDEN = Path(__file__).parent / "golden"
V = json.loads((GOLDEN / "records-v1.json").read_text())
OWNER = NodeIdentity.from_seed(bytes(range(7, 39)))
PROV = NodeIdentity.from_seed(bytes(range(3, 35)))
AT = 1_750_000_000_000


@pytest.mark.parametrize("name", sorted(V["wire"]))
def test_protocol_messages_keep_their_bytes(name: str) -> None:
    raw = bytes.fromhex(V["wire"][name])
    assert sign(SAMPLES[name], CONSUMER).raw == raw
    signed = decode(raw)
    assert signed.msg == SAMPLES[name] and signed.raw == raw


def _stake() -> StakeDeclaration:
    return sign_stake(PROV, 10_000_000_000, 1_750_000_000_000)


def test_stake_declaration_keeps_its_bytes_and_signature() -> None:
    raw = bytes.fromhex(V["stake"])
    assert _stake().encode() == raw
    decl = StakeDeclaration.decode(raw)
    assert decl == _stake() and decl.encode() == raw
    verify_stake(decl)


def _gov() -> dict[str, Proposal | Vote]:
    times = {"voting_deadline": 1_750_000_100_000, "effective_at": 1_750_000_200_000,
             "issued_at": 1_750_000_000_001}
    p1 = sign_proposal(PROV, "base_rate", 2_000, **times)
    p2 = sign_proposal(PROV, "split_preset", "bme", **times, snapshot_block=1234)
    return {
        "proposal": p1, "proposal_snapshot": p2,
        "vote": sign_vote(PROV, p1.id, True, stake=_stake(), issued_at=1_750_000_000_002),
        "vote_bound": sign_vote(PROV, p2.id, False, stake=_stake(), issued_at=1_750_000_000_003,
                                account=bytes(range(20)), binding=bytes(range(100, 165))),
    }


@pytest.mark.parametrize("name", ["proposal", "proposal_snapshot", "vote", "vote_bound"])
def test_governance_messages_keep_their_bytes_ids_and_signatures(name: str) -> None:
    raw = bytes.fromhex(V["gov"][name])
    made = _gov()[name]
    assert made.encode() == raw
    message = decode_message(raw)
    assert message == made and message.encode() == raw
    assert message.id.hex() == V["gov_ids"][name]
    verify_message(message)


def _bodies() -> dict[str, E.EntryBody]:
    return {
        "faucet": E.FaucetGrant(PROV.public_key, 5_000_000, "grant-1"),
        "charge": E.ChargeBody(bytes(range(16)), "smollm2:135m", PROV.public_key,
                               OWNER.public_key, 321, 1_000_000, "seed", 900,
                               E.ChargeParts.of(split(1_000_000, SEED, 900)),
                               b"result-bytes", b"receipt-bytes"),
        "receipt": E.ReceiptBody(bytes(range(16)), PROV.public_key, OWNER.public_key, 77,
                                 b"receipt-bytes"),
        "stake": E.StakeBody(_stake()),
        "slash": E.SlashBody(PROV.public_key, 5_000, "inconsistent output", bytes(32), "s-1"),
        "voucher": VoucherBody("signed", bytes(range(20)), bytes(range(1, 21)),
                               bytes(range(2, 22)), bytes(range(16)), 10, 110, bytes(range(65))),
        "redemption": RedemptionBody(bytes(range(20)), bytes(range(2, 22)), "0x" + "ab" * 32, 99,
                                     21_000, (RedeemedClaim(bytes(range(1, 21)), 110, 60),
                                              RedeemedClaim(bytes(range(5, 25)), 7, 7))),
    }


@pytest.mark.parametrize("kind", E.KINDS)
def test_every_ledger_body_kind_keeps_its_bytes(kind: str) -> None:
    assert kind in V["bodies"], f"no golden vector for ledger entry kind {kind!r}"
    seq, at = list(_bodies()).index(kind) + 1, AT + list(_bodies()).index(kind)
    raw = bytes.fromhex(V["bodies"][kind])
    assert E.encode_body(seq, at, _bodies()[kind]) == raw
    assert E.decode_body(raw) == (seq, at, _bodies()[kind])


def test_entry_and_checkpoint_signatures_still_verify() -> None:
    entry_hash = bytes.fromhex(V["entry_sig"]["entry_hash"])
    signature = bytes.fromhex(V["entry_sig"]["signature"])
    assert E.chain_hash(E.GENESIS_PREV, bytes.fromhex(V["bodies"]["faucet"])) == entry_hash
    assert E.sign_entry(OWNER, entry_hash) == signature
    E.verify_entry(OWNER.public_key, entry_hash, signature)
    checkpoint = Checkpoint(3, bytes(range(32)), bytes(range(1, 33)), bytes(range(2, 34)))
    verify_bytes(OWNER.public_key, CHECKPOINT_DOMAIN, checkpoint.content(),
                 bytes.fromhex(V["checkpoint_sig"]))


def test_a_ledger_file_written_before_still_verifies_and_reads(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    shutil.copy(GOLDEN / "ledger-v1.sqlite", path)
    with Ledger.open(path) as ledger:
        report = ledger.verify(expected_signer=OWNER.public_key)
        assert report.bad is None and report.head_seq == 8
        kinds = [entry.kind for entry in ledger.entries()]
    assert kinds == ["faucet", "faucet", "charge", "receipt", "stake", "slash", "voucher",
                     "redemption"]
    # And the node can go on writing to it.
    with Ledger.open(path, OWNER, clock=lambda: AT + 1) as ledger:
        ledger.record_faucet(PROV.public_key, 1)
        assert ledger.verify().bad is None


@pytest.mark.parametrize(("name", "key"), [("proposal", "snapshot"), ("vote", "account")])
def test_an_optional_key_sent_as_nil_is_not_a_second_encoding(name: str, key: str) -> None:
    # Same record, same id, same signature, other bytes: refused, one record one encoding.
    from p2pinfer.protocol import canonical

    value = canonical.decode(bytes.fromhex(V["gov"][name]))
    extra = {key: None} if key == "snapshot" else {"account": None, "binding": None}
    with pytest.raises(DecodeError, match="non-canonical"):
        decode_message(canonical.encode({**value, **extra}))

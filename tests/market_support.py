"""Helpers shared by the market tests: identities, a ledger holding every kind of entry,
and raw-SQL tampering (what an attacker with the file can do)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from p2pinfer.identity import NodeIdentity
from p2pinfer.market import entries as E
from p2pinfer.market.ledger import ChargeInput, Ledger
from p2pinfer.market.split import BME, SEED
from p2pinfer.market.stake import sign_stake


def fixed_identity(n: int) -> NodeIdentity:
    """A deterministic identity, so hypothesis examples are reproducible."""
    return NodeIdentity.from_seed(bytes([n]) * 32)


def charge_input(job: int, provider: NodeIdentity, consumer: NodeIdentity, amount: int,
                 tokens: int = 100) -> ChargeInput:
    return ChargeInput(
        job_id=job.to_bytes(16, "big"), model="smollm2:135m", provider=provider.public_key,
        consumer=consumer.public_key, tokens=tokens, amount=amount,
        result=b"signed-result-" + bytes([job % 256]),
        receipt=b"signed-receipt-" + bytes([job % 256]),
    )


def populate(ledger: Ledger, me: NodeIdentity) -> None:
    """One entry of every kind (7 entries): faucet x2, charge x2, receipt, stake, slash."""
    prov = fixed_identity(7)
    ledger.record_faucet(me.public_key, 5_000_000, grant_id="day-1")
    ledger.record_faucet(prov.public_key, 1_000)
    ledger.record_charge(charge_input(1, prov, me, 12_345), SEED, quality_pm=970)
    ledger.record_charge(charge_input(2, prov, me, 999), BME)
    ledger.record_receipt(b"\x09" * 16, prov.public_key, me.public_key, 10, b"receipt-bytes")
    ledger.record_stake(sign_stake(prov, 20_000_000_000, 1_000))
    ledger.record_slash(prov.public_key, 5_000_000_000, reason="inconsistent output",
                        evidence=b"check-report")


def raw_connect(path: Path) -> sqlite3.Connection:
    """A plain connection with the append-only triggers dropped, as a tamperer would."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    for name in ("entries_no_update", "entries_no_delete", "postings_no_update",
                 "postings_no_delete"):
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    return conn


def forge_faucet_entry(path: Path, owner: NodeIdentity, forger: NodeIdentity,
                       beneficiary: bytes, amount: int) -> int:
    """Append, with sqlite3 behind the ledger's back, a faucet grant of `amount` to
    `beneficiary` to the ledger at `path` (owned by `owner`): chained correctly, but signed
    by `forger`, whose key is not the owner's. Returns the forged entry's seq."""
    with Ledger.open(path, owner) as led:
        head = led.head()
    seq = head.seq + 1
    body = E.encode_body(seq, 1, E.FaucetGrant(beneficiary, amount, "forged"))
    entry_hash = E.chain_hash(head.entry_hash, body)
    account = E.peer_account(beneficiary)
    conn = raw_connect(path)
    with conn:
        conn.execute(
            "INSERT INTO entries (seq, kind, body, prev_hash, entry_hash, signer, signature,"
            " idem_key, subject) VALUES (?, 'faucet', ?, ?, ?, ?, ?, 'forged', ?)",
            (seq, body, head.entry_hash, entry_hash, forger.public_key,
             forger.sign(E.signing_bytes(entry_hash)), account))
        conn.execute("INSERT INTO postings VALUES (?, 'faucet', ?)", (seq, -amount))
        conn.execute("INSERT INTO postings VALUES (?, ?, ?)", (seq, account, amount))
    conn.close()
    return seq

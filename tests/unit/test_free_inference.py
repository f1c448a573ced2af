"""Free inference and slot hogging (issue 14, attack 6): the per-consumer-key admission
rules of a provider (jobs/admission.py ConsumerGate)."""

from __future__ import annotations

import pytest

from p2pinfer.jobs.admission import (
    DEFAULT_BAN_MS,
    FREE_JOBS_PER_KEY,
    FREE_WINDOW_MS,
    ConsumerGate,
    Refused,
)

NOW = 1_750_000_000_000


def key(n: int) -> bytes:
    return n.to_bytes(32, "big")


def refused(gate: ConsumerGate, k: bytes, now: int = NOW, *, idle: bool = True) -> Refused:
    with pytest.raises(Refused) as caught:
        gate.admit(k, now, idle=idle)
    return caught.value


def test_a_key_that_never_paid_gets_one_free_job_and_no_second_while_it_owes() -> None:
    gate = ConsumerGate()
    ticket = gate.admit(key(1), NOW, idle=True)
    assert ticket.free and FREE_JOBS_PER_KEY == 1
    # Concurrently: refused (the freeloader's 5 parallel jobs get 1).
    assert refused(gate, key(1)).code == "busy"
    ticket.result_sent = True
    gate.release(ticket, NOW + 1)  # no receipt came: banned
    err = refused(gate, key(1), NOW + 2)
    assert err.code == "insufficient_credit" and "no receipt" in str(err)
    # Still refused until the ban is over; then the free job is spent anyway.
    assert refused(gate, key(1), NOW + DEFAULT_BAN_MS + 2).code == "insufficient_credit"


def test_a_key_that_pays_its_receipt_becomes_a_payer_with_a_concurrency_limit() -> None:
    gate = ConsumerGate(per_key=2)
    first = gate.admit(key(1), NOW, idle=True)
    first.result_sent = True
    gate.paid(first, NOW + 1)
    gate.release(first, NOW + 1)
    assert gate.is_payer(key(1))
    a = gate.admit(key(1), NOW + 2, idle=False)  # a payer queues like anyone
    b = gate.admit(key(1), NOW + 2, idle=False)
    assert not a.free and not b.free
    err = refused(gate, key(1), NOW + 3)
    assert err.code == "busy" and err.retry_after_ms
    gate.release(a, NOW + 4)  # ended without a result (cancelled): no ban
    gate.admit(key(1), NOW + 5, idle=True)
    # A payer that takes a result and does not pay is banned and forgotten as a payer.
    b.result_sent = True
    gate.release(b, NOW + 6)
    assert not gate.is_payer(key(1))
    assert refused(gate, key(1), NOW + 7).code == "insufficient_credit"


def test_free_jobs_run_only_on_an_idle_slot() -> None:
    gate = ConsumerGate()
    assert refused(gate, key(1), idle=False).code == "busy"
    assert gate.admit(key(1), NOW, idle=True).free  # refusing it used up nothing


def test_fresh_keys_together_get_at_most_the_global_free_budget_per_minute() -> None:
    gate = ConsumerGate(free_per_minute=3)
    for n in range(3):
        gate.admit(key(n), NOW + n, idle=True)
    err = refused(gate, key(99), NOW + 10)
    assert err.code == "busy" and err.retry_after_ms == FREE_WINDOW_MS - 10
    # A Sybil rotating keys for ten minutes gets 3 jobs a minute, no more.
    admitted = 0
    for n in range(1000, 1600):
        try:
            gate.admit(key(n), NOW + FREE_WINDOW_MS + (n - 1000) * 1_000, idle=True)
            admitted += 1
        except Refused:
            pass
    assert admitted == 3 * 10
    assert gate.free_jobs == 3 + admitted


def test_a_preempted_free_job_keeps_the_keys_free_job() -> None:
    gate = ConsumerGate()
    ticket = gate.admit(key(1), NOW, idle=True)
    gate.refund(ticket)
    gate.release(ticket, NOW + 1)
    assert gate.admit(key(1), NOW + 2, idle=True).free


def test_a_paying_keys_job_awaiting_its_receipt_holds_no_concurrency_slot() -> None:
    """A gateway runs many users' jobs under one key: a job whose result went out while its
    receipt is on the way must not make the key's next job 'busy' (bench/network.py at
    concurrency 16 lost 19 of 831 jobs that way). Receipt waits are bounded on their own."""
    gate = ConsumerGate(per_key=2)
    first = gate.admit(key(1), NOW, idle=True)
    gate.result_sent(first)
    gate.paid(first, NOW + 1)
    gate.release(first, NOW + 1)
    a = gate.admit(key(1), NOW + 2, idle=False)
    b = gate.admit(key(1), NOW + 2, idle=False)
    gate.result_sent(a)  # its receipt is on the way
    c = gate.admit(key(1), NOW + 3, idle=False)
    assert refused(gate, key(1), NOW + 3).code == "busy"  # b and c compute: at the limit
    gate.result_sent(b)
    gate.result_sent(c)  # three awaiting receipts, over per_key: no more until some arrive
    assert refused(gate, key(1), NOW + 4).code == "busy"
    for t in (a, b, c):
        gate.paid(t, NOW + 5)
        gate.release(t, NOW + 5)
    assert gate.inflight(key(1)) == 0
    gate.admit(key(1), NOW + 6, idle=False)

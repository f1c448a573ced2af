"""Channels.vy: deposits, vouchers redeemed with the split, batches, reclaims."""

from __future__ import annotations

import pytest

from tests.unit.settle.conftest import RECLAIM_TIMEOUT_S, Chain, events, reverts


def test_getters_lead_from_the_channels_address_to_everything_else(chain: Chain) -> None:
    ch = chain.channels.functions
    assert ch.token().call() == chain.deployment.credit
    assert ch.stake().call() == chain.deployment.stake
    assert ch.treasury().call() == chain.accounts[9]
    assert [ch.split_bps(i).call() for i in range(4)] == [6000, 1500, 1500, 1000]
    assert ch.reclaim_timeout_s().call() == RECLAIM_TIMEOUT_S


def test_deposit_moves_credit_into_the_channel(chain: Chain) -> None:
    consumer, provider = chain.accounts[2], chain.accounts[1]
    receipt = chain.deposit(consumer, provider, 5_000)
    chain.deposit(consumer, provider, 2_000)
    assert chain.channels.functions.channel(consumer, provider).call() == [7_000, 0, 0]
    assert chain.balance(consumer) == 0
    assert chain.balance(chain.channels.address) == 7_000
    (event,) = events(chain.channels.events.Deposited, receipt)
    assert dict(event["args"]) == {"consumer": consumer, "provider": provider, "amount": 5_000}


def test_deposit_of_nothing_is_refused(chain: Chain) -> None:
    with reverts("nothing to deposit"):
        chain.tx(chain.accounts[2], chain.channels.functions.deposit(chain.accounts[1], 0))


@pytest.mark.parametrize(
    ("delta", "parts"),
    [
        (1_000_000, (600_000, 150_000, 150_000, 100_000)),
        (7, (4, 1, 2, 0)),  # 4.2 / 1.05 / 0.7 floored: the 2.05 left is burned
    ],
)
def test_redeem_pays_the_seed_split_exactly(
    chain: Chain, delta: int, parts: tuple[int, int, int, int]
) -> None:
    check_split(chain, delta, parts)


@pytest.mark.parametrize(
    ("delta", "parts"),
    [
        (1_000_000, (250_000, 100_000, 500_000, 150_000)),
        (7, (1, 0, 5, 1)),  # 1.75 / 0.7 / 1.05 floored: the rest is burned
    ],
)
def test_redeem_pays_the_bme_split_exactly(
    bme: Chain, delta: int, parts: tuple[int, int, int, int]
) -> None:
    check_split(bme, delta, parts)


def check_split(chain: Chain, delta: int, parts: tuple[int, int, int, int]) -> None:
    provider_share, pool_share, burned, treasury_share = parts
    consumer, provider, treasury = chain.accounts[2], chain.accounts[1], chain.accounts[9]
    chain.deposit(consumer, provider, 2 * delta)
    supply, treasury_before = chain.supply(), chain.balance(treasury)
    chain.redeem(provider, consumer, delta)  # the first voucher redeems all it says
    receipt = chain.redeem(provider, consumer, 2 * delta)  # later ones the difference
    assert chain.balance(provider) == 2 * provider_share
    assert chain.balance(treasury) - treasury_before == 2 * treasury_share
    assert supply - chain.supply() == 2 * burned
    assert chain.channels.functions.pool_balance().call() == 2 * pool_share
    assert chain.balance(chain.channels.address) == 2 * pool_share
    assert chain.channels.functions.channel(consumer, provider).call() == [2 * delta, 2 * delta, 0]
    (event,) = events(chain.channels.events.Redeemed, receipt)
    assert dict(event["args"]) == {
        "consumer": consumer, "provider": provider, "amount": delta,
        "provider_share": provider_share, "pool_share": pool_share, "burned": burned,
        "treasury_share": treasury_share,
    }


def test_voucher_signed_by_someone_else_is_refused(chain: Chain) -> None:
    consumer, provider = chain.accounts[2], chain.accounts[1]
    chain.deposit(consumer, provider, 1_000)
    with reverts("bad voucher"):
        chain.redeem(provider, consumer, 500, signer=chain.accounts[3])
    with reverts("bad voucher"):  # the provider cannot sign for the consumer either
        chain.redeem(provider, consumer, 500, signer=provider)


def test_voucher_for_another_provider_is_refused(chain: Chain) -> None:
    consumer, provider, other = chain.accounts[2], chain.accounts[1], chain.accounts[3]
    chain.deposit(consumer, provider, 1_000)
    sig = chain.voucher(consumer, other, 500)  # owed to `other`, redeemed by `provider`
    with reverts("bad voucher"):
        chain.tx(provider, chain.channels.functions.redeem(consumer, 500, sig))


def test_malformed_signature_is_a_bad_voucher(chain: Chain) -> None:
    consumer, provider = chain.accounts[2], chain.accounts[1]
    chain.deposit(consumer, provider, 1_000)
    good = chain.voucher(consumer, provider, 500)
    for sig in (b"", good[:64], b"\x01" * 64 + b"\x1b", bytes(65), good[:64] + b"\x05"):
        with reverts("bad voucher"):
            chain.tx(provider, chain.channels.functions.redeem(consumer, 500, sig))


def test_replayed_voucher_is_refused(chain: Chain) -> None:
    consumer, provider = chain.accounts[2], chain.accounts[1]
    chain.deposit(consumer, provider, 1_000)
    chain.redeem(provider, consumer, 400)
    with reverts("nothing to redeem"):
        chain.redeem(provider, consumer, 400)
    assert chain.channels.functions.channel(consumer, provider).call() == [1_000, 400, 0]


def test_older_voucher_is_refused(chain: Chain) -> None:
    consumer, provider = chain.accounts[2], chain.accounts[1]
    chain.deposit(consumer, provider, 1_000)
    older = chain.voucher(consumer, provider, 300)
    chain.redeem(provider, consumer, 600)
    with reverts("nothing to redeem"):
        chain.tx(provider, chain.channels.functions.redeem(consumer, 300, older))


def test_voucher_over_the_deposit_is_refused(chain: Chain) -> None:
    consumer, provider = chain.accounts[2], chain.accounts[1]
    chain.deposit(consumer, provider, 1_000)
    with reverts("over deposit"):
        chain.redeem(provider, consumer, 1_001)
    chain.redeem(provider, consumer, 1_000)  # exactly the deposit is fine
    assert chain.balance(provider) == 600


def test_redeem_many_pays_each_voucher_its_own_split(chain: Chain) -> None:
    provider, treasury = chain.accounts[1], chain.accounts[9]
    consumers = chain.accounts[10:13]
    for consumer in consumers:
        chain.deposit(consumer, provider, 10_000)
    chain.redeem(provider, consumers[0], 3_000)  # one channel already part-redeemed
    supply, treasury_before = chain.supply(), chain.balance(treasury)
    cumulatives = [3_007, 10_000, 1]  # deltas 7, 10000, 1
    sigs = [chain.voucher(c, provider, n) for c, n in zip(consumers, cumulatives, strict=True)]
    receipt = chain.tx(provider, chain.channels.functions.redeem_many(consumers, cumulatives, sigs))
    # per voucher (provider, pool, burn, treasury): (4,1,2,0) (6000,1500,1500,1000) (0,0,1,0)
    assert chain.balance(provider) == 1_800 + 4 + 6_000
    assert chain.balance(treasury) - treasury_before == 1_000
    assert supply - chain.supply() == 2 + 1_500 + 1
    assert chain.channels.functions.pool_balance().call() == 450 + 1 + 1_500
    redeemed = events(chain.channels.events.Redeemed, receipt)
    assert [(e["args"]["consumer"], e["args"]["amount"]) for e in redeemed] == [
        (consumers[0], 7), (consumers[1], 10_000), (consumers[2], 1)
    ]
    for consumer, cumulative in zip(consumers, cumulatives, strict=True):
        assert chain.channels.functions.channel(consumer, provider).call()[1] == cumulative


def test_redeem_many_reverts_whole_on_one_bad_voucher(chain: Chain) -> None:
    provider = chain.accounts[1]
    consumers = chain.accounts[10:12]
    for consumer in consumers:
        chain.deposit(consumer, provider, 1_000)
    sigs = [chain.voucher(consumers[0], provider, 500),
            chain.voucher(consumers[1], provider, 2_000)]
    with reverts("over deposit"):
        chain.tx(provider, chain.channels.functions.redeem_many(consumers, [500, 2_000], sigs))
    assert chain.channels.functions.channel(consumers[0], provider).call() == [1_000, 0, 0]
    with reverts("length mismatch"):
        chain.tx(provider, chain.channels.functions.redeem_many(consumers, [500], sigs))


def test_reclaim_before_the_timeout_is_refused(chain: Chain) -> None:
    consumer, provider = chain.accounts[2], chain.accounts[1]
    chain.deposit(consumer, provider, 1_000)
    with reverts("reclaim not due"):  # not even started
        chain.tx(consumer, chain.channels.functions.reclaim(provider))
    chain.tx(consumer, chain.channels.functions.start_reclaim(provider))
    chain.advance(RECLAIM_TIMEOUT_S - 10)
    with reverts("reclaim not due"):
        chain.tx(consumer, chain.channels.functions.reclaim(provider))


def test_reclaim_after_the_timeout_refunds_what_was_not_redeemed(chain: Chain) -> None:
    consumer, provider = chain.accounts[2], chain.accounts[1]
    chain.deposit(consumer, provider, 1_000)
    chain.redeem(provider, consumer, 300)
    receipt = chain.tx(consumer, chain.channels.functions.start_reclaim(provider))
    reclaim_at = chain.now() + RECLAIM_TIMEOUT_S
    (event,) = events(chain.channels.events.ReclaimStarted, receipt)
    assert event["args"]["reclaim_at"] == reclaim_at
    assert chain.channels.functions.channel(consumer, provider).call() == [1_000, 300, reclaim_at]
    chain.advance(RECLAIM_TIMEOUT_S)
    chain.tx(consumer, chain.channels.functions.reclaim(provider))
    assert chain.balance(consumer) == 700
    assert chain.channels.functions.channel(consumer, provider).call() == [300, 300, 0]
    with reverts("reclaim not due"):  # once
        chain.tx(consumer, chain.channels.functions.reclaim(provider))


def test_old_vouchers_stay_spent_after_a_reclaim_and_a_new_deposit(chain: Chain) -> None:
    consumer, provider = chain.accounts[2], chain.accounts[1]
    chain.deposit(consumer, provider, 1_000)
    old = chain.voucher(consumer, provider, 300)
    chain.tx(provider, chain.channels.functions.redeem(consumer, 300, old))
    chain.tx(consumer, chain.channels.functions.start_reclaim(provider))
    chain.advance(RECLAIM_TIMEOUT_S)
    chain.tx(consumer, chain.channels.functions.reclaim(provider))
    chain.deposit(consumer, provider, 1_000)
    with reverts("nothing to redeem"):
        chain.tx(provider, chain.channels.functions.redeem(consumer, 300, old))
    chain.redeem(provider, consumer, 800)  # cumulative: 500 more than before
    assert chain.channels.functions.channel(consumer, provider).call() == [1_300, 800, 0]


def test_provider_may_redeem_while_a_reclaim_is_pending(chain: Chain) -> None:
    consumer, provider = chain.accounts[2], chain.accounts[1]
    chain.deposit(consumer, provider, 1_000)
    chain.tx(consumer, chain.channels.functions.start_reclaim(provider))
    chain.advance(RECLAIM_TIMEOUT_S)  # due, but not executed: the provider is still in time
    chain.redeem(provider, consumer, 900)
    chain.tx(consumer, chain.channels.functions.reclaim(provider))
    assert chain.balance(consumer) == 100
    assert chain.balance(provider) == 540


def test_deposit_cancels_a_pending_reclaim(chain: Chain) -> None:
    consumer, provider = chain.accounts[2], chain.accounts[1]
    chain.deposit(consumer, provider, 1_000)
    chain.tx(consumer, chain.channels.functions.start_reclaim(provider))
    chain.deposit(consumer, provider, 1)
    assert chain.channels.functions.channel(consumer, provider).call() == [1_001, 0, 0]
    chain.advance(RECLAIM_TIMEOUT_S)
    with reverts("reclaim not due"):
        chain.tx(consumer, chain.channels.functions.reclaim(provider))


def test_start_reclaim_of_an_empty_channel_is_refused(chain: Chain) -> None:
    with reverts("nothing to reclaim"):
        chain.tx(chain.accounts[2], chain.channels.functions.start_reclaim(chain.accounts[1]))

"""Attack 65's rates for the info protocol: a peer's, and an address's whatever keys it
uses (keys are free), loopback left to the peers' own rates (a local testnet's nodes
all ask from 127.0.0.1)."""

from __future__ import annotations

from p2pinfer.net.info import (
    INFO_ADDRESS_BURST,
    INFO_ADDRESS_RATE_PER_S,
    INFO_BURST,
    INFO_RATE_PER_S,
    InfoRate,
)
from tests.support.clocks import SecondsClock


def answered(rate: InfoRate, peer: str, host: str | None, asks: int) -> int:
    return sum(rate.admit(peer, host) for _ in range(asks))


def test_a_peer_gets_its_burst_then_its_rate() -> None:
    clock = SecondsClock()
    rate = InfoRate(clock)
    assert answered(rate, "a", "203.0.113.7", 100) == INFO_BURST
    clock.now += 1.0
    assert answered(rate, "a", "203.0.113.7", 100) == int(INFO_RATE_PER_S)
    assert answered(rate, "b", "198.51.100.1", 100) == INFO_BURST  # another's is its own


def test_fresh_keys_from_one_address_share_the_address_s_rate() -> None:
    clock = SecondsClock()
    rate = InfoRate(clock)
    keys = [f"key{i}" for i in range(INFO_ADDRESS_BURST)]
    assert sum(answered(rate, key, "203.0.113.7", INFO_BURST) for key in keys) == (
        INFO_ADDRESS_BURST)
    clock.now += 1.0
    assert sum(answered(rate, key, "203.0.113.7", 4) for key in keys) == int(
        INFO_ADDRESS_RATE_PER_S)
    # An IPv6 host's /56 is one address: its neighbours' keys share it too.
    assert answered(rate, "v6a", "2001:db8:0:1::1", 100) == INFO_BURST
    assert answered(rate, "v6b", "2001:db8:0:2::1", 100) == INFO_ADDRESS_BURST - INFO_BURST


def test_loopback_and_unknown_hosts_count_per_peer_only() -> None:
    rate = InfoRate(SecondsClock())
    for host in ("127.0.0.1", "::1", None):
        keys = [f"{host}-{i}" for i in range(4)]
        assert sum(answered(rate, key, host, 100) for key in keys) == 4 * INFO_BURST

"""Which peers a validator's check reaches through relays only (`behind_nat`): an advert
naming relays and no public address. A lying advert cannot make the check go missing
(that is the checker's fallback, tests/integration/test_jobs_relayed.py); here, the rule."""

from __future__ import annotations

import pytest

from p2pinfer.net.relay_rules import behind_nat, circuit_addr, path_of, public_addr

RELAY = "12D3KooWJ2i2gvzmJeoNr36PBAB2EvNn6NEmeUQAuxiG2uyrjSzn"
TARGET = "12D3KooWHLw8jhEQRVqEmVNnRBv8SPC4yuJ5pAo6kKth9owmXQsn"
CIRCUIT = circuit_addr("/ip4/203.0.113.7/tcp/4001", RELAY, TARGET)


@pytest.mark.parametrize(("addr", "public"), [
    ("/ip4/203.0.113.7/tcp/4001", False),  # TEST-NET-3: documentation range, not global
    ("/ip4/8.8.8.8/tcp/4001", True),
    ("/ip4/10.203.10.10/tcp/4001", False),
    ("/ip4/192.168.1.20/tcp/4001/p2p/" + TARGET, False),
    ("/ip4/127.0.0.1/tcp/4001", False),
    ("/ip4/100.64.0.1/tcp/4001", False),  # carrier-grade NAT
    ("/ip6/2001:4860:4860::8888/tcp/4001", True),
    ("/ip6/fe80::1/tcp/4001", False),
    ("/dns4/node.example.org/tcp/4001", True),
    ("/dns4/box.local/tcp/4001", False),
    ("/ip4/not-an-ip/tcp/4001", False),
    ("garbage", False),
    ("", False),
])
def test_public_addr(addr: str, public: bool) -> None:
    assert public_addr(addr) is public


def test_a_peer_with_relays_and_only_private_addresses_is_behind_nat() -> None:
    assert behind_nat(["/ip4/10.203.10.10/tcp/4001", "/ip4/127.0.0.1/tcp/4001", CIRCUIT])
    assert behind_nat([CIRCUIT])


def test_a_public_address_or_no_relay_means_it_is_dialled_as_consumers_dial_it() -> None:
    assert not behind_nat(["/ip4/8.8.8.8/tcp/4001", CIRCUIT])
    assert not behind_nat(["/ip4/10.203.10.10/tcp/4001"])
    assert not behind_nat([])


def test_path_of_a_connection() -> None:
    assert path_of([CIRCUIT]) == "relayed"
    assert path_of(["/ip4/8.8.8.8/tcp/4001"]) == path_of(None) == "direct"

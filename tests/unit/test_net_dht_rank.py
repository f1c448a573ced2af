"""How a lookup ranks the providers that its sources (our own records, each peer that
answered) name: no one source can fill the list or pick who wins a tie."""

from __future__ import annotations

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from p2pinfer.net.compat.provider_records import MAX_ADDRS
from p2pinfer.net.dht import MAX_PER_ANSWER, rank_providers


def peer() -> ID:
    return ID.from_pubkey(create_new_key_pair().public_key)


def info(peer_id: ID, *ports: int) -> PeerInfo:
    return PeerInfo(peer_id, [Multiaddr(f"/ip4/10.0.0.1/tcp/{port}") for port in ports])


def test_a_provider_named_by_two_sources_outranks_forty_named_by_one() -> None:
    honest = peer()
    liar_list = [info(peer(), 1) for _ in range(40)]
    refs = rank_providers([[info(honest, 1)], liar_list, [info(honest, 2)]], "me", 20)
    assert refs[0].peer_id == honest.to_base58()
    assert refs[0].addrs == ("/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.1/tcp/2")
    assert len(refs) == 20


def test_the_first_of_every_source_comes_before_the_second_of_any() -> None:
    # one honest answer naming one provider, nineteen liars naming twenty each: the honest
    # provider ties on one vote with each liar's first and is among the 20 every time
    for _ in range(20):
        honest = peer()
        liars = [[info(peer(), 1) for _ in range(30)] for _ in range(19)]
        refs = rank_providers([[info(honest, 1)], *liars], "me", 20)
        assert honest.to_base58() in {ref.peer_id for ref in refs}


def test_one_source_counts_a_provider_once_and_gives_at_most_k_of_them() -> None:
    twice = peer()
    many = [info(peer(), 1) for _ in range(3 * MAX_PER_ANSWER)]
    refs = rank_providers([[info(twice, 1), info(twice, 2), *many]], "me", 1000)
    assert len(refs) == MAX_PER_ANSWER
    assert refs[0].peer_id == twice.to_base58()  # first place, one vote
    assert refs[0].addrs == ("/ip4/10.0.0.1/tcp/1",)  # its second naming was skipped


def test_addresses_are_bounded_and_we_are_left_out() -> None:
    me, other = peer(), peer()
    refs = rank_providers([[info(me, 1), info(other, *range(1, 40))],
                           [info(other, *range(100, 140))]], me.to_base58(), 20)
    assert [ref.peer_id for ref in refs] == [other.to_base58()]
    assert len(refs[0].addrs) == MAX_ADDRS
    assert refs[0].addrs[0] == "/ip4/10.0.0.1/tcp/1"


def test_ties_are_not_broken_by_peer_id() -> None:
    # the old cut sorted by PeerID, which anyone can grind; now a tie goes either way
    low, high = sorted((peer() for _ in range(2)), key=lambda p: p.to_base58())
    firsts = {rank_providers([[info(high, 1)], [info(low, 1)]], "me", 1)[0].peer_id
              for _ in range(64)}
    assert firsts == {low.to_base58(), high.to_base58()}

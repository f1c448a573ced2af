"""Stake-weighted governance of network parameters (see docs/governance.md).

    messages: Proposal, Vote, sign_proposal, sign_vote, decode_message, verify_message
    tally:    tally(proposal, votes, slashed_of, rules) -> Tally; in_effect(...) -> Parameters
    store:    GovStore (SQLite): every proposal and vote this node has seen
    service:  GovService: gossip topic p2pinfer/gov/1 and the /p2pinfer/gov/1.0.0 sync stream

`messages` and `tally` are pure (no trio, no libp2p, no clock).
"""

"""Stake-weighted governance of network parameters (see docs/governance.md).

    messages:  Proposal, Vote, sign_proposal, sign_vote, decode_message, verify_message,
               PARAMETERS / check_value (each parameter's bounds)
    tally:     tally(proposal, votes, now, verified stake, rules, first seen) -> Tally;
               in_effect(...) -> Parameters
    store:     GovStore (SQLite): the messages this node keeps, with when it first saw each,
               bounded per author and for authors without verified stake
    retention: expired(...): what the store stops keeping
    service:   GovService: gossip topic p2pinfer/gov/1 and the /p2pinfer/gov/1.0.0 sync stream

`messages`, `tally` and `retention` are pure (no trio, no libp2p, no clock).
"""

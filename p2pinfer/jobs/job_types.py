"""The job server's and the consumer client's settings and records, candidates, outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from p2pinfer.jobs.admission import FREE_JOBS_PER_MINUTE
from p2pinfer.market.pricing import DEFAULT_PRICING, PricingParams
from p2pinfer.market.split import SplitPreset, preset_named
from p2pinfer.protocol import RequestLimits
from p2pinfer.protocol.messages import TokenLogprobs
from p2pinfer.testing.faults import Fault


@dataclass(frozen=True)
class ClientConfig:
    """The consumer's policy. Money in micro-credits, timeouts in seconds."""

    max_price_per_1k: int = 10_000  # the most it pays per 1k tokens (10x the base rate)
    min_stake: int = 0  # providers advertising less stake are skipped
    max_attempts: int = 4  # providers that answered (accepted or refused) before giving up
    # Providers skipped (breaker open) or not reached (dial failed) use no attempt, but a
    # job gives up after this many of them, or this long spent dialling them: fresh keys
    # are free, so the fakes' number must not decide how long a job tries.
    max_unanswered: int = 16
    unanswered_budget_s: float = 20.0
    # While every provider answers "busy", a job waits and tries them again for at most
    # this long in all (0: fail at once, as a targeted check job does).
    busy_wait_s: float = 60.0
    explore_every: int = 8  # one job in this many may try one unproven provider first
    request_ttl_ms: int = 5 * 60_000  # a request's validity (at most 10 min)
    accept_timeout_s: float = 60.0  # request sent -> accept (covers a provider's queue)
    first_chunk_timeout_s: float = 120.0  # accept -> first chunk (prompt processing)
    # The same two waits at a provider this node has not been served by yet (not
    # `Candidate.proven`): keys are free, and a fresh one priced lowest that accepted and
    # never started held every new consumer's job, and one in `explore_every` of the
    # rest, for the waits above (attack 76). Past them it is left as too slow.
    unproven_accept_timeout_s: float = 10.0
    unproven_first_chunk_timeout_s: float = 30.0
    chunk_timeout_s: float = 60.0  # between chunks, and for the result
    # After its first chunk an answer must come at this many tokens a second on average,
    # after a grace (0: no floor): a provider dripping a token a minute, which the chunk
    # timeout lets through, holds a job for minutes at most (docs/security.md, attack 33).
    min_tokens_per_s: float = 1.0
    pace_grace_s: float = 20.0
    discovery_timeout_s: float = 15.0  # DHT lookups for a model nobody advertised to us
    rtt_probe_timeout_s: float = 2.0  # measuring a catalog provider's RTT once
    dht_only: bool = False  # find providers in the DHT alone (not gossip, not direct peers)
    #: A host this young has heard only some providers' adverts (each comes once per
    #: advert interval, 30 s by default): it asks the DHT and its peers as well.
    catalog_warmup_s: float = 30.0
    throwaway_key: bool = False  # sign each request with a fresh key
    require_credit: bool = True  # refuse to start a job the ledger cannot pay for
    #: Gossip a provider's provable overcharge (verify/charge_proofs.py). The proof holds
    #: the job's request and answer, which every node then reads: on for validators'
    #: check jobs (their prompts are the network's own), opt-in for a consumer's jobs.
    gossip_charge_proofs: bool = False
    preset: SplitPreset = field(default_factory=lambda: preset_named("seed"))


class StakeSource(Protocol):
    """Where the client reads a provider's stake with settlement on (`settle.StakeBook`):
    its bound account's stake on chain, 0 when unknown or unbound; never blocks."""

    def stake_of_peer(self, peer_id: str, payee: bytes | None, binding: bytes | None) -> int: ...

    async def read_unread(self, claims: Sequence[tuple[str, bytes | None, bytes | None]],
                          timeout_s: float) -> None:
        """Read from the chain now the stakes of `claims` (peer id, payee, binding) never
        read yet, for at most `timeout_s`: a `min_stake` filter must not drop a provider
        only because the background reader has not reached it."""
        ...


#: The pace that doubles a provider's rank key (as 100 ms of RTT does), and the pace a
#: provider not yet measured is taken to have.
PACE_REF_TPS = 10.0
ASSUMED_TPS = 50.0


@dataclass(frozen=True)
class Candidate:
    """A provider the client may send a job to, with what ranking uses."""

    peer_id: str
    model: str
    price_per_1k: int
    rtt_ms: float | None  # measured over the info protocol; None if not yet
    score_pm: int  # reputation, per mille
    stake: int
    generation_tps: float
    found_via: str  # "catalog" (gossip adverts), "dht" or "peer" (a connected peer asked)
    proven: bool = False  # this node has completed a job with it (Catalog.vouch)
    # The stake its advert claims; `stake` is what the client counts: the claim without
    # settlement, the bound account's stake on chain with it (settle.stakes).
    declared_stake: int = 0
    embeds: bool = False  # its advert says it embeds text with this model
    # Its circuit breaker was closed when it was ranked (read with its score): a job may
    # go to it without asking the breaker again. False: unknown, ask (`JobClient.allow`).
    breaker_closed: bool = False
    #: Tokens a second its answers came at, as this client measured them (never its claim).
    observed_tps: float | None = None

    def rank_key(self) -> float:
        """Lower is better: price, inflated by low reputation, by latency (100 ms doubles
        it) and by a slow pace (10 tokens a second doubles it)."""
        rtt = self.rtt_ms if self.rtt_ms is not None else 50.0
        tps = self.observed_tps if self.observed_tps is not None else ASSUMED_TPS
        return (self.price_per_1k * (1000 / max(self.score_pm, 1)) * (1 + rtt / 100)
                * (1 + PACE_REF_TPS / max(tps, 0.01)))


@dataclass(frozen=True)
class FailedAttempt:
    """One provider that did not complete the job (nothing was charged for it)."""

    provider: str
    job_id: str  # hex
    reason: str
    code: str | None = None  # the reject code, if the provider rejected


@dataclass(frozen=True)
class RefusedCharge:
    """A job this consumer refused to pay because the provider overcharged: the signed
    request and the provider's signed accept and result are the evidence."""

    provider: str  # PeerID
    job_id: str  # hex
    reason: str
    charged: int  # what the result asked for, micro-credits (0: refused at the accept)
    request: bytes  # our signed JobRequest
    accept: bytes  # the provider's signed JobAccept (b"" if refused before one)
    result: bytes  # the provider's signed JobResult (b"" if refused at the accept)


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer. `restart` True: a failover produced a different answer
    than the part already delivered; drop what came before and start over from `text`."""

    text: str
    restart: bool = False
    logprobs: tuple[TokenLogprobs, ...] = ()  # of this text's tokens, when asked for


@dataclass(frozen=True)
class JobOutcome:
    """A completed, checked and receipted job."""

    model: str
    provider: str  # PeerID
    job_id: str  # hex
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    digest: str
    price_per_1k: int
    charged: int  # micro-credits, recorded once in this node's ledger
    result: bytes  # the provider's signed JobResult
    receipt: bytes  # our signed Receipt
    receipt_delivered: bool
    failovers: tuple[FailedAttempt, ...]
    found_via: str
    ttft_ms: float
    total_ms: float
    chunks: int  # Chunk messages the answer came in (tokens travel together on slow links)
    request: bytes = b""  # our signed JobRequest (with `result`: evidence for a spot-check)
    # How the serving provider was reached: "direct", "relayed" through a Circuit Relay
    # v2 relay (its circuit address; the relay sees only Noise ciphertext), or "moved":
    # started relayed, then moved onto a direct connection mid-answer (jobs/job_move.py).
    path: str = "direct"


@dataclass(frozen=True)
class JobServerConfig:
    """The provider's policy. `price_per_1k` None: priced by market.pricing from the model's
    utilisation and the number of providers in the catalog."""

    max_concurrency: int = 1  # jobs per model at once
    queue: int = 4  # jobs per model waiting for a slot; more are refused `busy`
    limits: RequestLimits = field(default_factory=RequestLimits)
    price_per_1k: int | None = None
    pricing: PricingParams = DEFAULT_PRICING
    preset: SplitPreset = field(default_factory=lambda: preset_named("seed"))
    request_timeout_s: float = 10.0  # for the request to arrive on a new stream
    write_timeout_s: float = 30.0  # for the consumer to take one frame
    receipt_timeout_s: float = 30.0  # for the receipt after the result
    free_jobs_per_minute: int = FREE_JOBS_PER_MINUTE  # from keys without a receipt here
    fault: Fault | None = None


@dataclass(frozen=True)
class JobRecord:
    """How one job ended at this provider (the last few hundred are kept)."""

    job_id: str  # hex
    model: str
    consumer: str  # PeerID of the request's signer
    outcome: str  # completed | unpaid | cancelled | preempted | rejected:<code> | failed
    completion_tokens: int
    max_tokens: int
    charged: int
    connection: str = ""  # PeerID of the libp2p connection the request came over
    path: str = "direct"  # relayed: through a relay (`path_of`); moved: relayed, then direct

"""Moving a running job off a relay onto a direct connection (`/p2pinfer/job-move/1.0.0`).

A job that started over a relay stays on its libp2p stream, and a stream cannot change
connections. Once DCUtR (`net/dcutr.py`) has a direct connection to the provider, the
consumer opens a move stream on it naming the job; the provider, if that job is
streaming to this very peer over a relay, writes `accepted` on the new stream and
splices the job onto it (`NetStream.splice`): every later Chunk, the JobResult and the
Receipt go over the direct connection; each side closes its end of the relayed stream,
whose bytes are read to their end first, so nothing is lost or reordered. The protocol
machines on both sides see one byte stream, so the result, the receipt and the charge
are those of an unmoved job. With no stream left, the relayed connection closes
(`close_when_idle`).

The move request carries no signature: it is bound to the peer the Noise handshake
authenticated for the move stream, which must be the peer that opened the job's stream
(a job id another peer learned moves nothing: to it, the job does not exist). A job
moves once, only from a relayed stream to a direct one, only while streaming. The
consumer tries once per attempt and never fails a job over a move: a refusal, a
timeout or a broken move stream leaves the job on the relay. (If the provider accepted
but its answer is lost, the relayed stream ends without a result and the job fails
over to the next provider, unpaid, like any broken stream.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

import trio

from p2pinfer.errors import NetworkError, ProtocolError
from p2pinfer.jobs.served_job import ServedJob
from p2pinfer.metrics import NodeMetrics
from p2pinfer.net.streams import NetStream
from p2pinfer.protocol import ProviderState, canonical
from p2pinfer.protocol.framing import encode_frame

if TYPE_CHECKING:
    from p2pinfer.jobs.job_attempt import Attempt
    from p2pinfer.net.nethost import NetHost

log = logging.getLogger(__name__)

MOVE_PROTOCOL_ID = "/p2pinfer/job-move/1.0.0"
MOVE_FRAME_MAX = 256  # either message, encoded
MOVE_TIMEOUT_S = 5.0  # for the request to arrive, and for the consumer to hear the answer
LOCK_WAIT_S = 1.0  # the provider waits this long for a chunk write in flight, else `busy`
LOOK_EVERY_S = 0.2  # how often a relayed attempt looks for a direct connection
#: Why a move is refused (`refused` on the wire, `p2pinfer_job_move_refusals`'s reasons).
REFUSALS = ("bad_request", "unknown_job", "not_streaming", "moved", "not_relayed",
            "not_direct", "busy")


def move_request(job_id: bytes) -> bytes:
    """The framed request to move job `job_id` onto the stream it is sent on."""
    return encode_frame(canonical.encode({"t": "job_move", "v": 1, "job_id": job_id}))


def move_answer(refusal: str | None) -> bytes:
    """The framed answer: accepted (None), or refused with one of REFUSALS."""
    body = {"t": "job_move_ok"} if refusal is None else {"t": "job_move_refused",
                                                         "code": refusal}
    return encode_frame(canonical.encode(body))


def parse_request(raw: bytes) -> bytes:
    """The job id a move request names; DecodeError/ProtocolError for anything else."""
    value = canonical.decode(raw)
    if (not isinstance(value, dict) or value.keys() != {"t", "v", "job_id"}
            or value["t"] != "job_move" or type(value["v"]) is not int or value["v"] != 1
            or type(value["job_id"]) is not bytes or len(value["job_id"]) != 16):
        raise ProtocolError("not a job move request")
    return value["job_id"]


def parse_answer(raw: bytes) -> str | None:
    """None if the move was accepted, else the refusal code; ProtocolError if malformed."""
    value = canonical.decode(raw)
    if value == {"t": "job_move_ok"}:
        return None
    if (isinstance(value, dict) and value.keys() == {"t", "code"}
            and value["t"] == "job_move_refused" and value["code"] in REFUSALS):
        return str(value["code"])
    raise ProtocolError("not a job move answer")


class MoveDesk:
    """The provider's side: the jobs being served, by (consumer peer, job id), and the
    move requests for them."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self._jobs: dict[tuple[str, bytes], tuple[ServedJob, trio.Event]] = {}
        self._metrics = metrics
        self.moved = 0

    @contextmanager
    def movable(self, job: ServedJob, job_id: bytes) -> Iterator[None]:
        """While the job is served (to its last byte): it may move, and a stream it moved
        onto is kept open (the move stream's handler returns when this ends)."""
        key, ended = (job.stream.remote_peer_id, job_id), trio.Event()
        if key in self._jobs:  # the same id again from the same peer (refused as a replay)
            yield
            return
        self._jobs[key] = (job, ended)
        try:
            yield
        finally:
            del self._jobs[key]
            ended.set()

    def refusal(self, peer: str, job_id: bytes, stream: NetStream) -> str | None:
        """Why the job `job_id` may not move onto `stream` from `peer`; None: it may."""
        entry = self._jobs.get((peer, job_id))
        if entry is None:
            return "unknown_job"  # or not this peer's: the same answer, nothing learnt
        job = entry[0]
        if job.stream.spliced:
            return "moved"
        if job.machine.state is not ProviderState.STREAMING:
            return "not_streaming"
        if job.stream.path != "relayed":
            return "not_relayed"
        if stream.path != "direct":
            return "not_direct"
        return None

    async def serve(self, stream: NetStream) -> None:
        """One move request on `stream`: answer it; if accepted, hold the stream open until
        the job ends (the caller closes it after)."""
        try:
            job_id = parse_request(await stream.read_frame(max_size=MOVE_FRAME_MAX,
                                                           timeout_s=MOVE_TIMEOUT_S))
        except ProtocolError as exc:
            log.info("job move refused peer=%s reason=%s", stream.remote_peer_id, exc)
            return await self._refuse(stream, "bad_request")
        peer = stream.remote_peer_id
        refusal = self.refusal(peer, job_id, stream)
        if refusal is not None:
            log.info("job move refused job=%s peer=%s reason=%s", job_id.hex(), peer, refusal)
            return await self._refuse(stream, refusal)
        job, ended = self._jobs[(peer, job_id)]
        try:
            await job.stream.splice(stream, first=move_answer(None), timeout_s=LOCK_WAIT_S)
        except NetworkError as exc:  # a chunk write stuck on the relay, or the stream gone
            log.info("job move failed job=%s error=%s", job_id.hex(), exc)
            return await self._refuse(stream, "busy")
        self.moved += 1
        self._metrics.job_moves.labels("provider", "moved").inc()
        log.info("job moved off the relay job=%s peer=%s", job_id.hex(), peer)
        await ended.wait()

    async def _refuse(self, stream: NetStream, code: str) -> None:
        self._metrics.job_moves.labels("provider", "refused").inc()
        self._metrics.job_move_refusals.labels(code).inc()
        with suppress(NetworkError):  # it asked and left
            await stream.write(move_answer(code), timeout_s=MOVE_TIMEOUT_S)


async def maybe_move(net: NetHost, attempt: Attempt, metrics: NodeMetrics) -> None:
    """The consumer's side, before a read of an accepted attempt once `attempt.move_after`
    has come (the caller looks, at every read): if the host holds a direct connection to
    the provider, ask once to move the job onto it, else look again in LOOK_EVERY_S;
    never for a peer reached through relays only (a validator's check host). Never
    raises: the job goes on wherever it is. Each try counts in `p2pinfer_job_moves`
    (role consumer): `moved`, `refused` or `failed`."""
    attempt.move_after = trio.current_time() + LOOK_EVERY_S
    peer = attempt.candidate.peer_id
    if peer in net.relay_only:  # a check job: the provider must not learn where we are
        attempt.move_after = math.inf
        return
    if not net.dcutr.has_direct(peer):
        return
    attempt.move_after = math.inf  # one try an attempt
    job_id = attempt.machine.job_id
    stream: NetStream | None = None
    outcome = "failed"
    try:
        stream = await net.open_stream(peer, MOVE_PROTOCOL_ID, first=move_request(job_id),
                                       timeout_s=MOVE_TIMEOUT_S)
        if stream.path != "direct":
            raise NetworkError("the move stream opened over a relay")
        refusal = parse_answer(await stream.read_frame(max_size=MOVE_FRAME_MAX,
                                                       timeout_s=MOVE_TIMEOUT_S))
        if refusal is not None:
            outcome = "refused"
            raise NetworkError(f"refused: {refusal}")
        await attempt.stream.splice(stream)
    except (NetworkError, ProtocolError) as exc:
        metrics.job_moves.labels("consumer", outcome).inc()
        log.info("job not moved off the relay job=%s provider=%s reason=%s", job_id.hex(),
                 peer, exc)
        if stream is not None:
            await stream.reset()
        return
    attempt.path = attempt.stream.path  # moved
    metrics.job_moves.labels("consumer", "moved").inc()
    log.info("job moved off the relay job=%s provider=%s", job_id.hex(), peer)

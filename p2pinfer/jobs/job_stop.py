"""Stopping a job mid-answer, and paying for what came (attack 66).

A consumer pays for a result. A key that read an answer and reset the stream before
its result owed nothing, so one receipt made a key a payer that could take every
later answer that way, two at a time at each provider. A provider now counts output
taken without a result as a result unpaid (the key is refused as one that sent no
receipt), and a consumer that stops a job it no longer wants (`NetJob.aclose`: the
gateway's HTTP client hung up, a caller left the job's context early) asks the
provider to stop with a signed JobCancel, reads the rest of the output and the
provider's `cancelled` result, which charges the tokens it sent and the prompt's
estimate, and pays it. Since attack 67 leaving an accepted job before its first token
counts as unpaid too (the engine was reading the prompt), so a stop waits for an
accept that may be on its way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from p2pinfer.errors import OverchargeError, P2PInferError
from p2pinfer.jobs.job_attempt import Attempt, AttemptFailed, send_receipt, take_payee
from p2pinfer.net.compat.multistream import read_echoes
from p2pinfer.protocol import (
    JOB_PROTOCOL_ID,
    Accepted,
    ChunkReceived,
    ConsumerState,
    Failure,
    Rejected,
    ResultReceived,
)

if TYPE_CHECKING:
    from p2pinfer.jobs.runner import JobRunner

log = logging.getLogger(__name__)

STOP_WAIT_S = 5.0
"""How long a stopping job waits for the provider's result before it resets instead."""


async def stop_and_pay(client: JobRunner, model: str, attempt: Attempt, *,
                       negotiated: bool = True) -> bool:
    """Ask the provider of `attempt` to stop (once its accept is in: one may be on its
    way, and an accepted job left without a word is one left unpaid); read the rest of
    its output and its result, and pay it. True once paid; False where the caller resets
    the stream instead: a reject, a transport failure, a result that breaks the protocol
    or overcharges (refused as any: `refuse_charge`). Not `negotiated`: the attempt's
    stream was opening, its request out with the proposal (the echo comes first)."""
    machine = attempt.machine
    waiting = (ConsumerState.AWAIT_ANSWER, ConsumerState.STREAMING)
    if machine.state not in waiting or machine.cancel_sent:
        return False
    cfg = client.config
    try:
        if not negotiated:
            await read_echoes(attempt.stream, JOB_PROTOCOL_ID, timeout_s=cfg.chunk_timeout_s)
        while True:
            if machine.state is ConsumerState.STREAMING and not machine.cancel_sent:
                await attempt.stream.write(machine.cancel(), timeout_s=cfg.chunk_timeout_s)
            data = await attempt.read(cfg)
            if not data:
                return False
            for event in machine.receive_data(data, client.clock_ms()):
                if isinstance(event, Accepted):
                    attempt.accepted = True
                    await take_payee(client, attempt, event.accept)  # settlement
                elif isinstance(event, ChunkReceived):
                    attempt.took(event)
                elif isinstance(event, ResultReceived):
                    await _pay(client, model, attempt)
                    return True
                elif isinstance(event, Failure) and isinstance(event.error, OverchargeError):
                    await client.refuse_charge(attempt.candidate, machine, event.error,
                                               attempt.text)
                    return False
                elif isinstance(event, Failure | Rejected):
                    return False
    except (P2PInferError, AttemptFailed) as exc:
        log.info("stopped job not settled job=%s error=%s", machine.job_id.hex(), exc)
    return False


async def _pay(client: JobRunner, model: str, attempt: Attempt) -> None:
    machine = attempt.machine
    delivered = await send_receipt(client, attempt)
    charged = await client.record_charge(model, attempt.candidate, machine,
                                         delivered=delivered)
    client.metrics.jobs.labels("consumer", "cancelled").inc()
    log.info("job stopped and paid job=%s provider=%s charged=%d", machine.job_id.hex(),
             attempt.candidate.peer_id, charged)

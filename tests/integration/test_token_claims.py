"""Attack 83 on real hosts and the real engine: a provider that answers honestly and
claims the most tokens a consumer's byte bounds allow (~10x for a short chat) was
paid that by every consumer and passed every check, its answers being right. A
validator's check now counts the prompt's and the answer's tokens with its own engine."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import SMOLLM2
from p2pinfer.jobs.job_server import JobServerConfig
from p2pinfer.protocol import CheckReport, JobResult, decode_as
from p2pinfer.testing.faults import parse_fault
from p2pinfer.validator.checker import Verifier
from p2pinfer.verify.compare import Verdict
from p2pinfer.verify.config import VerifyConfig
from p2pinfer.verify.reputation_store import ReputationBook
from tests.integration.job_helpers import start_consumer, start_provider, wait_for_providers
from tests.support.backends import needs_engine, smollm2_source

pytestmark = [pytest.mark.network, pytest.mark.engine, needs_engine]


async def test_a_provider_claiming_the_consumers_bounds_fails_its_checks(
        tmp_path: Path) -> None:
    with trio.fail_after(150):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            honest = await start_provider(stack, nursery, EmbeddedBackend([smollm2_source()]),
                                          tmp_path)
            liar = await start_provider(stack, nursery, EmbeddedBackend([smollm2_source()]),
                                        tmp_path,
                                        config=JobServerConfig(fault=parse_fault("inflate")))
            net, client, ledger = await start_consumer(
                stack, tmp_path, (honest.net.addrs()[0], liar.net.addrs()[0]))
            book = stack.enter_context(ReputationBook.open(tmp_path / "rep.sqlite3"))
            verifier = Verifier(net, client.identity, client,
                                backend=EmbeddedBackend([smollm2_source()]),
                                models=frozenset({SMOLLM2}), reputation=book, ledger=ledger,
                                config=VerifyConfig(check_max_tokens=24))
            nursery.start_soon(verifier.run)
            await wait_for_providers(net, SMOLLM2, 2)
            fair = await verifier.check_provider(honest.net.peer_id, SMOLLM2)
            lied = await verifier.check_provider(liar.net.peer_id, SMOLLM2)
            assert fair is not None and lied is not None
            rec = book.get(liar.net.peer_id)
            nursery.cancel_scope.cancel()
    # The honest provider's claims are its engine's counts, which ours match.
    assert fair.comparison.verdict.passed and not fair.comparison.overclaim
    # The liar's answer is the same text; its claims are the consumer's byte bounds,
    # which the check client's consumer checks accepted (it was paid them).
    assert lied.comparison.verdict is Verdict.INCONSISTENT
    assert lied.comparison.overclaim.startswith("claims ")
    assert "prompt tokens; our engine counts" in lied.comparison.overclaim
    report = decode_as(lied.report, CheckReport).msg
    claimed = decode_as(report.result, JobResult).msg
    counted = int(lied.comparison.overclaim.rsplit(" ", 1)[1])
    assert claimed.prompt_tokens > 5 * counted  # the bound: 256 + 16 + the bytes
    assert rec.checks_failed == 1

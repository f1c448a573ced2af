"""A provider that crashes mid-answer (`--fault crash-after=3`, a real process exit) is
failed over; the answer is complete and the job is receipted and charged exactly once."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pinfer.protocol import JobResult, Receipt, decode_as
from p2pinfer.testnet.processes import pid_alive
from tests.e2e.network_helpers import (
    Net,
    ask_json,
    charge_entry,
    charged_jobs,
    greedy_direct,
    running_testnet,
)
from tests.support.backends import needs_engine
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.network, pytest.mark.engine, needs_engine]

STORY = "Tell me about the moon."


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    # Node 1 is the cheapest, so it is tried first, and dies after three tokens.
    directory = tmp_path_factory.mktemp("crashnet")
    with running_testnet(directory, 2, faults={1: "crash-after=3"},
                         node_args={1: ["--price", "50"]}) as running:
        yield running


def test_a_crashing_provider_is_failed_over_and_the_job_charged_once(net: Net) -> None:
    answer = ask_json(STORY, "--testnet", str(net.dir), "--temperature", "0",
                      "--seed", "3", "--max-tokens", "40")
    [failed] = answer["failovers"]
    assert failed["provider"] == net.peer(1)
    assert answer["provider"] == net.peer(0)
    assert not pid_alive(net.nodes[1].pid)
    assert "FAULT crash-after=3" in net.log(1)

    # The answer is complete: the engine's own greedy text, not three tokens of it.
    assert answer["text"] == greedy_direct(STORY, 40, 3)
    assert answer["usage"]["completion_tokens"] == 40

    # Exactly one receipt and one charge: the consumer's and the serving provider's
    # ledgers each hold the one charge (with the receipt); the crashed node's nothing.
    job = answer["job_id"]
    consumer, server, crashed = net.dir / "consumer", Path(net.nodes[0].home), Path(
        net.nodes[1].home)
    assert charged_jobs(consumer) == [job]
    wait_until(lambda: charged_jobs(server) == [job], 10, "the provider's charge")
    assert charged_jobs(crashed) == []
    assert failed["job_id"] != job
    receipt_bytes = base64.b64decode(answer["receipt"])
    for home in (consumer, server):
        fields = charge_entry(home, job)
        assert fields["receipt"] == receipt_bytes and fields["amount"] == answer["charged"]
    receipt = decode_as(receipt_bytes, Receipt)
    result = decode_as(base64.b64decode(answer["result"]), JobResult)
    assert receipt.msg.result_hash == result.hash and receipt.msg.job_id.hex() == job

"""A relay that cuts the jobs it carries (attack 70, `net.relay_cuts`): the rule that
finds one, and what Sybil consumers leaving jobs can make of it."""

from __future__ import annotations

from p2pinfer.net.relay_cuts import CUT_VERDICT_EVERY_S, CUT_WINDOW_S, JobCuts


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cuts_under_three_consumers_with_no_result_make_the_verdict() -> None:
    cuts = JobCuts(Clock())
    assert not cuts.note("R", "a")
    assert not cuts.note("R", "b")
    assert cuts.note("R", "c")
    assert cuts.cuts("R") == 0  # forgotten with the verdict


def test_one_consumer_leaving_many_times_is_one_consumer() -> None:
    cuts = JobCuts(Clock())
    assert not any(cuts.note("R", "a") for _ in range(10))
    assert not cuts.note("R", "b")
    assert cuts.cuts("R") == 11


def test_results_through_the_relay_outweigh_the_cuts() -> None:
    cuts = JobCuts(Clock())
    for _ in range(3):
        assert not cuts.note("R", None)
    assert not any(cuts.note("R", c) for c in "abc")  # 3 cuts, 3 results: not more
    assert cuts.note("R", "d")  # 4 against 3


def test_cuts_older_than_the_window_no_longer_count() -> None:
    clock = Clock()
    cuts = JobCuts(clock)
    cuts.note("R", "a"), cuts.note("R", "b")
    clock.now = CUT_WINDOW_S + 1
    assert not cuts.note("R", "c")
    assert cuts.cuts("R") == 1


def test_sybils_make_a_node_leave_a_relay_once_an_hour_at_most() -> None:
    clock = Clock()
    cuts = JobCuts(clock)
    assert [cuts.note("R1", c) for c in "abc"] == [False, False, True]
    clock.now = 60.0
    assert not any(cuts.note("R2", c) for c in "defgh")  # within the hour: no verdict
    clock.now = CUT_VERDICT_EVERY_S + 1
    assert not cuts.note("R3", "x") and not cuts.note("R3", "y")
    assert cuts.note("R3", "z")


def test_relays_no_longer_held_are_forgotten() -> None:
    cuts = JobCuts(Clock())
    cuts.note("R1", "a"), cuts.note("R2", "a")
    cuts.keep_only({"R2"})
    assert cuts.cuts("R1") == 0 and cuts.cuts("R2") == 1

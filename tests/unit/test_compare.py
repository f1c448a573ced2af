"""Spot-check output comparison: per-mille metrics and verdicts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pinfer.verify.compare import (
    CompareThresholds,
    Verdict,
    compare_outputs,
    compare_tokens,
    tokenize,
)

REFERENCE = (
    "The mitochondria is the powerhouse of the cell. It produces adenosine triphosphate "
    "through oxidative phosphorylation, a process that takes place across the inner "
    "membrane and depends on a chain of protein complexes that pump protons."
)
# Same greedy start, then a different but close continuation, as across GPUs.
DRIFTING = (
    "The mitochondria is the powerhouse of the cell. It produces adenosine triphosphate "
    "through oxidative phosphorylation, which happens across the inner membrane and "
    "relies on a chain of protein complexes pumping protons."
)
DIFFERENT = (
    "Paris is the capital of France and is famous for the Eiffel Tower, the Louvre museum "
    "and its cafes along the river Seine, which attract millions of visitors every year."
)


def test_identical_outputs_are_identical_whatever_the_whitespace() -> None:
    c = compare_outputs(REFERENCE, REFERENCE.replace(" ", "  "))
    assert c.verdict is Verdict.IDENTICAL
    assert (c.prefix_pm, c.rest_pm, c.agreement_pm) == (1000, 1000, 1000)


def test_drifting_honest_output_is_consistent() -> None:
    c = compare_outputs(REFERENCE, DRIFTING)
    assert c.verdict is Verdict.CONSISTENT
    assert 400 <= c.prefix_pm < 1000
    assert c.rest_pm > 300
    assert c.agreement_pm >= 600
    assert c.verdict.passed


def test_unrelated_output_is_inconsistent() -> None:
    c = compare_outputs(REFERENCE, DIFFERENT)
    assert c.verdict is Verdict.INCONSISTENT
    assert c.prefix_pm == 0
    assert c.agreement_pm < 300
    assert not c.verdict.passed


def test_empty_or_truncated_output_is_inconsistent() -> None:
    assert compare_outputs(REFERENCE, "").verdict is Verdict.INCONSISTENT
    half = " ".join(REFERENCE.split()[:8])
    c = compare_outputs(REFERENCE, half)
    assert c.common_prefix == len(tokenize(half))
    assert c.verdict is Verdict.INCONSISTENT


def test_short_disagreeing_outputs_are_inconclusive() -> None:
    c = compare_outputs("Yes.", "No.")
    assert c.verdict is Verdict.INCONCLUSIVE and not c.verdict.passed


def test_thresholds_are_configurable() -> None:
    strict = CompareThresholds(agreement_pm=990)
    assert compare_outputs(REFERENCE, DRIFTING, strict).verdict is Verdict.INCONSISTENT


def test_engine_token_ids_compare_like_words() -> None:
    c = compare_tokens([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 9, 6, 7, 8])
    assert (c.common_prefix, c.prefix_pm) == (4, 500)
    assert c.rest_pm == 750  # 3 of 4 remaining tokens match
    assert c.agreement_pm == 875


@given(a=st.lists(st.integers(0, 5), max_size=40), b=st.lists(st.integers(0, 5), max_size=40))
def test_metrics_are_integers_in_range_and_symmetric_in_prefix(a: list[int], b: list[int]) -> None:
    c = compare_tokens(a, b)
    for metric in (c.prefix_pm, c.rest_pm, c.agreement_pm):
        assert isinstance(metric, int) and 0 <= metric <= 1000
    assert c.prefix_pm <= c.agreement_pm
    assert compare_tokens(b, a).prefix_pm == c.prefix_pm
    assert (c.verdict is Verdict.IDENTICAL) == (a == b)
    assert compare_tokens(a, a).agreement_pm == 1000


def test_an_answer_cut_to_a_prefix_of_the_reference_is_inconsistent() -> None:
    reference = " ".join(f"word{i}" for i in range(64))
    cut = " ".join(f"word{i}" for i in range(48))  # 75 %: agreement alone would pass
    comparison = compare_outputs(reference, cut)
    assert comparison.agreement_pm < 1000
    assert comparison.verdict is Verdict.INCONSISTENT


def test_a_prefix_covering_almost_all_of_the_reference_is_not_called_truncated() -> None:
    reference = " ".join(f"word{i}" for i in range(100))
    nearly = " ".join(f"word{i}" for i in range(95))  # 5 tokens short: under min_tokens
    assert compare_outputs(reference, nearly).verdict is Verdict.CONSISTENT


def test_long_text_with_few_words_is_judged_on_characters_not_waved_through() -> None:
    # The `garbage` cheat on a byte-level model: every token becomes a random letter,
    # so 40 tokens of output are one long "word". That is not "too little text".
    reference = "xyzzyplughfoobarbazquxquuxcorgegraultgarply"
    garbage = "qzkxvwjyupqzkxvwjyupqzkxvwjyupqzkxvwjyup"
    assert len(tokenize(reference)) == len(tokenize(garbage)) == 1
    assert compare_outputs(reference, garbage).verdict is Verdict.INCONSISTENT
    assert compare_outputs(garbage, reference).verdict is Verdict.INCONSISTENT


def test_text_without_spaces_is_compared_on_characters() -> None:
    # A script written without spaces tokenizes into a few long words; honest drift at
    # the end must still count as consistent, unrelated text as inconsistent.
    reference = "東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。"
    drift = "東京は日本の首都であり、世界で最も人口が多い大都市の一つです。"
    other = "富士山は静岡県と山梨県にまたがる活火山で、標高は三七七六メートル。"
    assert compare_outputs(reference, drift).verdict is Verdict.CONSISTENT
    assert compare_outputs(reference, other).verdict is Verdict.INCONSISTENT


def test_short_text_in_characters_too_stays_inconclusive() -> None:
    assert compare_outputs("Paris.", "Lyon!").verdict is Verdict.INCONCLUSIVE

"""Spot-check output comparison: per-mille metrics and verdicts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pinfer.backends.base import TextScore
from p2pinfer.verify.compare import (
    DEFAULT_THRESHOLDS,
    CompareThresholds,
    Verdict,
    compare_by_likelihood,
    compare_outputs,
    compare_tokens,
    likelihood_metrics,
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
GARBAGE = "xQzvKp LmWtr hYbNca DsfGuj qqRt PlkmW zzTopV mnbvc"
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
    c = compare_outputs(REFERENCE, GARBAGE)
    assert c.verdict is Verdict.INCONSISTENT
    assert c.prefix_pm == 0 and c.agreement_pm < T.agreement_pm
    assert not c.verdict.passed


def test_token_agreement_alone_tolerates_a_paraphrase() -> None:
    # Honest answers of engines with other settings part ways at a near-tie and can share
    # little: unscored, token agreement only fails answers with next to nothing in common.
    c = compare_outputs(REFERENCE, DIFFERENT)
    assert c.prefix_pm == 0 and c.agreement_pm < 300
    assert c.verdict is Verdict.CONSISTENT


def test_empty_or_truncated_output_is_inconsistent() -> None:
    assert compare_outputs(REFERENCE, "").verdict is Verdict.INCONSISTENT
    half = " ".join(REFERENCE.split()[:8])
    c = compare_outputs(REFERENCE, half)
    assert c.common_prefix == len(tokenize(half))
    assert c.verdict is Verdict.INCONSISTENT


def test_short_disagreeing_outputs_are_inconclusive() -> None:
    c = compare_outputs("Yes, it is", "No")
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
    garbage = "QZKXVWJYUPQZKXVWJYUPQZKXVWJYUPQZKXVWJYUP"
    assert len(tokenize(reference)) == len(tokenize(garbage)) == 1
    assert compare_outputs(reference, garbage).verdict is Verdict.INCONSISTENT
    assert compare_outputs(garbage, reference).verdict is Verdict.INCONSISTENT


def test_text_without_spaces_is_compared_on_characters() -> None:
    # A script written without spaces tokenizes into a few long words; honest drift at
    # the end must still count as consistent, unrelated text as inconsistent.
    reference = "東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。"
    drift = "東京は日本の首都であり、世界で最も人口が多い大都市の一つです。"
    other = "กรุงเทพมหานครเป็นเมืองหลวงและนครที่มีประชากรมากที่สุดของประเทศไทย"
    assert compare_outputs(reference, drift).verdict is Verdict.CONSISTENT
    assert compare_outputs(reference, other).verdict is Verdict.INCONSISTENT


def test_short_text_in_characters_too_stays_inconclusive() -> None:
    assert compare_outputs("Paris.", "Lyon!").verdict is Verdict.INCONCLUSIVE


# -- likelihood: the provider's text scored by the validator's engine -------------

T = DEFAULT_THRESHOLDS


def scored(n: int, *, off_greedy: int = 0, logprob: int = -500, end: int = -100) -> TextScore:
    """A fake engine score of n tokens, `off_greedy` of them well below the top choice."""
    gaps = [T.greedy_gap_milli + 1] * off_greedy + [0] * (n - off_greedy)
    return TextScore(tuple([logprob] * n), tuple(gaps), end)


def test_honest_drift_the_reference_model_finds_greedy_is_consistent_at_low_agreement() -> None:
    # Diverged early (as across hardware), yet every token is the reference's own choice.
    c = compare_outputs(REFERENCE, GARBAGE, score=scored(40))
    assert c.agreement_pm < T.agreement_pm  # token agreement alone would fail it
    assert c.verdict is Verdict.CONSISTENT
    assert (c.scored_tokens, c.greedy_pm, c.mean_logprob_milli) == (40, 1000, -500)


def test_a_greedy_answer_off_the_reference_models_choices_is_inconsistent() -> None:
    c = compare_outputs(REFERENCE, DRIFTING, score=scored(40, off_greedy=T.greedy_off_tokens))
    assert c.agreement_pm >= T.agreement_pm  # token agreement alone would pass it
    assert c.verdict is Verdict.INCONSISTENT


def test_one_or_two_tokens_off_greedy_are_honest_drift() -> None:
    drift = scored(12, off_greedy=T.greedy_off_tokens - 1)
    assert compare_outputs(REFERENCE, DIFFERENT, score=drift).verdict is Verdict.CONSISTENT
    # In a long answer the share counts too: a few off-greedy tokens among many pass.
    long = scored(400, off_greedy=T.greedy_off_tokens + 2)
    assert compare_outputs(REFERENCE, DIFFERENT, score=long).verdict is Verdict.CONSISTENT


def test_a_sampled_answer_is_judged_by_its_likelihood_not_by_greedy_choices() -> None:
    likely = scored(40, off_greedy=30, logprob=T.mean_logprob_milli + 1)
    unlikely = scored(40, off_greedy=30, logprob=T.mean_logprob_milli - 1)
    assert compare_outputs(REFERENCE, DIFFERENT, score=likely, greedy=False).verdict \
        is Verdict.CONSISTENT
    assert compare_outputs(REFERENCE, DIFFERENT, score=unlikely, greedy=False).verdict \
        is Verdict.INCONSISTENT


def test_claiming_a_natural_stop_where_the_model_would_go_on_is_inconsistent() -> None:
    cut = scored(20, end=T.end_logprob_milli - 1)
    assert compare_outputs(REFERENCE, DRIFTING, score=cut, claimed_stop=True).verdict \
        is Verdict.INCONSISTENT
    # The same text cut by max_tokens (finish "length") claims nothing.
    assert compare_outputs(REFERENCE, DRIFTING, score=cut, claimed_stop=False).verdict \
        is Verdict.CONSISTENT


def test_garbage_scored_over_many_tokens_is_never_inconclusive() -> None:
    # Few word tokens (one long "word"), many engine tokens, none of them likely.
    garbage = scored(30, off_greedy=30, logprob=-9000)
    c = compare_outputs("Yes.", "xQzvKpLmWtrhYbNcaDsfGuj", score=garbage)
    assert c.verdict is Verdict.INCONSISTENT


def test_too_few_scored_tokens_fall_back_on_token_agreement() -> None:
    assert compare_outputs("Yes, it is", "No", score=scored(2, off_greedy=2)).verdict \
        is Verdict.INCONCLUSIVE
    assert compare_outputs(REFERENCE, GARBAGE, score=scored(3)).verdict is Verdict.INCONSISTENT
    # ... unless they are a whole answer that stops where the reference model would.
    short = compare_outputs(REFERENCE, "Paris.", score=scored(3), claimed_stop=True)
    assert short.verdict is Verdict.CONSISTENT


def test_likelihood_metrics_count_tokens_within_the_drift_margin() -> None:
    score = TextScore((-100, -200, -300, -400), (0, T.greedy_gap_milli, T.greedy_gap_milli + 1,
                                                 0), -50)
    assert likelihood_metrics(score, T) == (750, -250, 1)
    assert likelihood_metrics(TextScore((), (), 0), T) == (0, 0, 0)


# -- judging a greedy answer on its score alone (no re-run) -----------------------


def test_a_scored_greedy_answer_is_judged_without_a_reference() -> None:
    honest = compare_by_likelihood(DIFFERENT, scored(40), greedy=True, claimed_stop=False)
    cheat = compare_by_likelihood(DIFFERENT, scored(40, off_greedy=T.greedy_off_tokens),
                                  greedy=True, claimed_stop=False)
    cut = compare_by_likelihood(DIFFERENT, scored(20, end=T.end_logprob_milli - 1),
                                greedy=True, claimed_stop=True)
    assert honest is not None and honest.verdict is Verdict.CONSISTENT
    assert cheat is not None and cheat.verdict is Verdict.INCONSISTENT
    assert cut is not None and cut.verdict is Verdict.INCONSISTENT
    assert (honest.reference_tokens, honest.agreement_pm, honest.scored_tokens) == (0, 0, 40)


def test_the_score_alone_gives_the_verdict_a_different_re_run_would_have_given() -> None:
    # Wherever it decides, it agrees with compare_outputs given any reference but an
    # exact copy of the answer (IDENTICAL: why a validator re-runs before a fail).
    for score, stop in [(scored(40), False), (scored(40, off_greedy=5), False),
                        (scored(20, end=T.end_logprob_milli - 1), True),
                        (scored(30, logprob=T.mean_logprob_milli - 1), False),
                        (scored(3), True)]:
        alone = compare_by_likelihood(DRIFTING, score, greedy=True, claimed_stop=stop)
        assert alone is not None
        for reference in (REFERENCE, GARBAGE, DIFFERENT):
            full = compare_outputs(reference, DRIFTING, score=score, claimed_stop=stop)
            assert full.verdict is alone.verdict


def test_a_re_run_is_needed_for_sampled_or_too_short_answers() -> None:
    assert compare_by_likelihood(DIFFERENT, scored(40), greedy=False, claimed_stop=False) \
        is None  # only the same seed on a re-run reproduces a sampled answer
    assert compare_by_likelihood("No", scored(2, off_greedy=2), greedy=True,
                                 claimed_stop=False) is None

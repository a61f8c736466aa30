"""Stage-3 rewards: the release's reward exactly, the project's rewards, TRL's calling convention, incentives."""

from __future__ import annotations

import math
import pickle
import random
import re
import string
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from response_strategies import CANDIDATES, RESPONSES, SEEDS, random_candidates, random_response

from emocaliber import rewards as R
from emocaliber.records import REASONING_PARTS
from emocaliber.tasks import MIKELS_8

THINK = "<think>" + "".join(f"<{p}>{p} text</{p}>" for p in REASONING_PARTS) + "</think>"
CANDS = list(MIKELS_8)


def resp(answer: str = "awe", confidence: str = "0.9", think: str = THINK) -> str:
    return f"{think}<answer>{answer}</answer><confidence>{confidence}</confidence>"


def one(func, text, ground_truth="awe", **kwargs) -> float:
    (value,) = func(completions=[text], ground_truth=[ground_truth], **kwargs)
    return value


# --- the released reward, against hand-computed values ---------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    (resp("awe", "0.9"), 1 + 1 + 2 * math.log(0.9)),  # correct: 2 + 2 ln c
    (resp("fear", "0.9"), 1 + 0 + 2 * math.log(1 - 0.9)),  # wrong: 1 + 2 ln(1 - c)
    (resp("Awe!", "0.9"), 2 + 2 * math.log(0.9)),  # punctuation removed, lower-cased
    (resp(" a-w-e ", "0.6"), 2 + 2 * math.log(0.6)),  # *all* ASCII punctuation is removed
    (resp("\nAwe\n", "0.6"), 2 + 2 * math.log(0.6)),  # DOTALL, stripped
    (resp("awe fear", "0.9"), 1 + 2 * math.log(0.1)),  # two words: wrong
    (resp("The answer is awe", "0.3"), 1 + 2 * math.log(0.7)),  # one word only
    (resp("awe", " 0.25 "), 2 + 2 * math.log(0.25)),  # float() of the stripped text
    (resp("awe", "1e-1"), 2 + 2 * math.log(0.1)),
    ("<answer>fear</answer>" + resp("awe", "0.8"), 1 + 2 * math.log(0.2)),  # the first answer counts
    (resp("awe", "1.0"), -5.0), (resp("awe", "1"), -5.0), (resp("awe", "0"), -5.0),  # 0 < c < 1 strictly
    (resp("awe", "85%"), -5.0), (resp("awe", "{0.8}"), -5.0), (resp("awe", "nan"), -5.0),
    (resp("awe", "inf"), -5.0), (resp("awe", ""), -5.0),
    (resp(think=THINK.replace("<context>context text</context>", "")), -5.0),  # missing sub-tag
    (resp(think="<think></think>" + THINK[7:-8]), -5.0),  # sub-tags outside <think>
    (THINK + "<answer>awe</answer>", -5.0), (THINK + "<confidence>0.5</confidence>", -5.0),
])
def test_release_reward_hand_computed(text, expected):
    assert one(R.release_reward, text) == pytest.approx(expected, abs=1e-12)


def test_release_reward_sub_tag_order_and_ground_truth_case_do_not_matter():
    think = "<think>" + "".join(f"<{p}>x</{p}>" for p in reversed(REASONING_PARTS)) + "</think>"
    assert one(R.release_reward, resp("awe", "0.7", think), ground_truth="Awe") == pytest.approx(
        2 + 2 * math.log(0.7))


def released_compute_score(solution_str: str, ground_truth: str) -> float:
    """The release's cus_reward.compute_score()["score"], restated with its regular expressions."""
    think = re.search(r"<think>(.*?)</think>", solution_str, re.DOTALL)
    answer = re.search(r"<answer>(.*?)</answer>", solution_str, re.DOTALL)
    conf = re.search(r"<confidence>(.*?)</confidence>", solution_str, re.DOTALL)
    if not (think and answer and conf):
        return -5.0
    if not all(re.search(f"<{p}>(.*?)</{p}>", think.group(1), re.DOTALL) for p in REASONING_PARTS):
        return -5.0
    words = answer.group(1).strip().translate(str.maketrans("", "", string.punctuation)).lower().split()
    i = 1 if len(words) == 1 and ground_truth.lower() == words[0] else 0
    try:
        c = float(conf.group(1).strip())
    except ValueError:
        return -5.0
    if not 0 < c < 1:
        return -5.0
    return 1 + 2 * (i * math.log(c) + (1 - i) * math.log(1 - c)) + i


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(RESPONSES, min_size=5, max_size=5), st.sampled_from(["awe", "Fear", "positive", "love"]))
def test_release_reward_equals_the_released_code(texts, truth):
    assert R.release_reward(texts, [truth] * len(texts)) == [released_compute_score(t, truth) for t in texts]


@settings(max_examples=20, deadline=None)
@given(SEEDS)
def test_release_reward_equals_the_released_code_in_bulk(seed):
    rng = random.Random(seed)
    texts = [random_response(rng) for _ in range(200)]
    truths = [rng.choice(["awe", "fear", "sadness", "positive"]) for _ in texts]
    assert R.release_reward(texts, truths) == [released_compute_score(t, g) for t, g in zip(texts, truths)]


# --- the project's rewards -------------------------------------------------------------------------------------


def spherical(c: float, i: int) -> float:
    q = c if i else 1 - c
    return q / math.sqrt(c * c + (1 - c) ** 2) - 1


@pytest.mark.parametrize("name, text, truth, expected", [
    ("brier", resp("awe", "0.9"), "awe", 1 + (1 - (0.9 - 1) ** 2)),  # correctness + (1 - (c - i)^2)
    ("brier", resp("fear", "0.9"), "awe", 0 + (1 - (0.9 - 0) ** 2)),
    ("brier", resp("awe", "85%"), "awe", 2 - 0.15**2),  # strict parser: percent accepted
    ("brier", resp("awe", "1.0"), "awe", 2.0),  # [0, 1] inclusive
    ("brier", resp("awe", "high"), "awe", -1.0),  # broken format
    ("spherical", resp("awe", "0.9"), "awe", 2 + spherical(0.9, 1)),
    ("spherical", resp("fear", "0.9"), "awe", 1 + spherical(0.9, 0)),
    ("spherical", resp("fear", "1"), "awe", 0.0), ("spherical", "no format", "awe", -1.0),
    ("calibrated_log", resp("awe", "0.9"), "awe", 2 + 0.25 * math.log(0.9)),
    ("calibrated_log", resp("fear", "0.9"), "awe", 1 + 0.25 * math.log(0.1)),
    # beyond 1 - eps = 0.95 the log continues quadratically: ln b + (c - b)(1 - (b + c)/2) / (eps b)
    ("calibrated_log", resp("awe", "0.99"), "awe", 2 + 0.25 * (math.log(0.95) + 0.04 * (1 - 1.94 / 2) / 0.0475)),
    ("calibrated_log", resp("fear", "1"), "awe", 1 + 0.25 * (math.log(0.05) - (1 - 0.95**2) / (2 * 0.0475))),
    ("calibrated_log", resp("awe", "1 "), "awe", 2 + 0.25 * (math.log(0.95) + 0.05 * 0.025 / 0.0475)),
    ("calibrated_log", THINK, "awe", 0.25 * (math.log(0.05) - (1 - 0.95**2) / (2 * 0.0475))),
])
def test_project_rewards_hand_computed(name, text, truth, expected):
    assert one(R.REWARDS[name], text, truth, candidates=[CANDS]) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("answer, correct", [("The answer is awe", 1), ("Awe.", 1), ("awe or fear", 0),
                                             ("awesome", 0), ("joy", 0)])
def test_project_correctness_follows_the_strict_parser_with_candidates(answer, correct):
    value = one(R.brier_reward, resp(answer, "0.5"), candidates=[CANDS])
    assert value == pytest.approx(correct + (1 - (0.5 - correct) ** 2))
    assert one(R.accuracy_reward, resp(answer, "0.5"), candidates=[CANDS]) == correct


def test_without_candidates_only_an_exact_answer_is_correct():
    assert one(R.accuracy_reward, resp("Awe!")) == 1.0
    assert one(R.accuracy_reward, resp("The answer is awe")) == 0.0
    assert one(R.accuracy_reward, resp("Awe!"), ground_truth="fear") == 0.0


def test_format_reward_needs_no_ground_truth(recwarn):
    assert R.format_reward([resp(), "x"]) == [1.0, 0.0]
    assert not recwarn.list


@pytest.mark.parametrize("row", [[], None, np.array(["awe", "fear"])])
def test_unusable_candidate_rows_fall_back_to_exact_answers(row):
    expected = 1.0 if isinstance(row, np.ndarray) else 0.0  # an array is a usable candidate list
    assert one(R.accuracy_reward, resp("It is awe"), candidates=[row]) == expected
    assert one(R.accuracy_reward, resp("Awe"), candidates=[row]) == 1.0


def test_candidates_may_be_one_shared_list():
    texts = [resp("awe"), resp("the answer is fear")]
    assert R.accuracy_reward(texts, ground_truth=["awe", "fear"], candidates=CANDS) == [1.0, 1.0]


def test_completion_forms_trl_passes():
    text = resp("awe", "0.9")
    forms = [text, [{"role": "assistant", "content": text}],
             [{"role": "assistant", "content": [{"type": "text", "text": text[:40]}, {"type": "text", "text": text[40:]}]}],
             {"role": "assistant", "content": text}, text.encode()]
    expected = 2 + 0.25 * math.log(0.9)
    assert R.calibrated_log_reward(forms, ground_truth=["awe"] * 5, candidates=[CANDS] * 5) == pytest.approx(
        [expected] * 5)
    broken = [None, 3, [{"role": "assistant", "content": None}], [{"role": "user", "content": [{"type": "image"}]}]]
    assert R.calibrated_log_reward(broken, ground_truth=["awe"] * 4) == [R.calibrated_log_reward.failure_score] * 4
    assert R.release_reward(broken, ground_truth=["awe"] * 4) == [-5.0] * 4


def test_trl_keyword_call_with_extra_columns():
    logged: dict[str, float] = {}
    texts = [resp("awe", "0.9"), resp("fear", "0.05"), "garbage"]
    kwargs = {"prompts": [[{"role": "user", "content": "q"}]] * 3, "completion_ids": [[1, 2]] * 3,
              "ground_truth": ["awe", "awe", "awe"], "candidates": [CANDS] * 3, "task": ["EmoSet-8"] * 3,
              "trainer_state": None, "log_extra": lambda column, values: None,
              "log_metric": lambda name, value: logged.__setitem__(name, value)}
    for name, func in R.REWARDS.items():
        out = func(completions=texts, **kwargs)
        assert len(out) == 3 and all(isinstance(x, float) for x in out), name
    assert logged["calibration/format_rate"] == pytest.approx(2 / 3)
    assert logged["calibration/confidence_mean"] == pytest.approx((0.9 + 0.05) / 2)
    assert logged["calibration/low_confidence_rate"] == pytest.approx(0.5)
    assert logged["calibration/accuracy_valid"] == pytest.approx(0.5)


def test_a_failing_log_metric_does_not_fail_the_reward():
    def broken(name, value):
        raise RuntimeError("logger down")

    with pytest.warns(RuntimeWarning, match="log_metric failed"):
        assert R.spherical_reward([resp()], ["awe"], log_metric=broken) == [2 + spherical(0.9, 1)]


def test_missing_or_short_ground_truth_warns_and_scores_as_wrong():
    with pytest.warns(RuntimeWarning, match="ground_truth"):
        assert R.accuracy_reward([resp(), resp()], ground_truth=None) == [0.0, 0.0]
    with pytest.warns(RuntimeWarning) as caught:
        assert R.release_reward([resp(), resp()], ground_truth=["awe"]) == pytest.approx(
            [2 + 2 * math.log(0.9), 1 + 2 * math.log(0.1)])
    assert any("1 rows for 2 completions" in str(w.message) for w in caught)


@pytest.mark.parametrize("name", ["brier", "spherical", "calibrated_log"])
def test_components_with_weights_sum_to_the_combined_reward(name):
    reward = R.REWARDS[name]
    funcs, weights = reward.components()
    rng = random.Random(3)
    texts = [random_response(rng) for _ in range(300)] + [resp(a, c) for a in CANDS for c in ("0", "0.3", "1")]
    truths = [rng.choice(CANDS) for _ in texts]
    total = sum(w * np.array(f(completions=texts, ground_truth=truths, candidates=[CANDS] * len(texts)))
                for f, w in zip(funcs, weights))
    assert np.allclose(total, reward(completions=texts, ground_truth=truths, candidates=[CANDS] * len(texts)))
    assert [f.__name__ for f in funcs] == ["format_reward", "accuracy_reward", f"calibration_reward_{reward.rule}"]


def test_registry_names_are_distinct_and_rewards_picklable():
    """TRL names reward columns by ``__name__`` (and needs picklable rewards for multi-process runs)."""
    names = [f.__name__ for f in R.REWARDS.values()]
    assert len(set(names)) == len(names)
    assert R.DEFAULT_REWARD in R.REWARDS
    restored = pickle.loads(pickle.dumps(R.calibrated_log_reward))
    assert restored.__name__ == "calibrated_log_reward"
    assert restored([resp()], ["awe"]) == R.calibrated_log_reward([resp()], ["awe"])


@pytest.mark.slow  # importing TRL takes 10+ s of CPU
def test_trl_names_the_reward_columns_as_we_do():
    from trl.trainer.utils import get_callable_name

    assert [get_callable_name(f) for f in R.REWARDS.values()] == [f.__name__ for f in R.REWARDS.values()]


def test_get_reward_funcs():
    assert R.get_reward_funcs(["release", "format"]) == [R.release_reward, R.format_reward]
    assert R.get_reward_funcs("format, accuracy,calibration_log") == [R.format_reward, R.accuracy_reward,
                                                                      R.calibration_reward_log]
    with pytest.raises(KeyError, match="registered rewards: release"):
        R.get_reward_funcs(["emocalibur"])


def test_weighted_reward_rejects_bad_settings():
    with pytest.raises(KeyError, match="scoring rule"):
        R.WeightedReward("hinge")
    with pytest.raises(ValueError, match="finite and >= 0"):
        R.WeightedReward("brier", accuracy_weight=float("nan"))
    with pytest.raises(ValueError, match="eps"):
        R.WeightedReward("log", eps=0.5)
    with pytest.raises(ValueError, match="eps=0.05"):
        R.WeightedReward("log", eps=0.1).components()


# --- every input gives finite floats ---------------------------------------------------------------------------

COMPLETION_FORMS = st.one_of(
    RESPONSES, st.none(), st.integers(), RESPONSES.map(lambda t: [{"role": "assistant", "content": t}]),
    RESPONSES.map(lambda t: [{"role": "assistant", "content": [{"type": "text", "text": t}, {"type": "image"}]}]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(COMPLETION_FORMS, max_size=6), st.one_of(st.none(), st.lists(st.one_of(st.none(), st.text()))),
       st.one_of(st.none(), CANDIDATES, st.lists(CANDIDATES)))
def test_rewards_are_finite_for_any_input(completions, truths, candidates):
    # numpy errors raise, so no NaN is produced and then hidden; bad columns only warn
    with np.errstate(invalid="raise", divide="raise", over="raise"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, func in R.REWARDS.items():
            out = func(completions=completions, ground_truth=truths, candidates=candidates)
            assert len(out) == len(completions) and all(math.isfinite(x) for x in out), name


@settings(max_examples=25, deadline=None)
@given(SEEDS)
def test_rewards_are_finite_in_bulk(seed):
    """5,000 generated completions per run through every reward."""
    rng = random.Random(seed)
    texts = [random_response(rng) for _ in range(200)]
    candidates = [random_candidates(rng) for _ in texts]
    truths = [rng.choice(c) if c and rng.random() < 0.9 else "awe" for c in candidates]
    for name, func in R.REWARDS.items():
        out = func(completions=texts, ground_truth=truths, candidates=candidates)
        assert len(out) == len(texts) and all(math.isfinite(x) for x in out), name


# --- incentives ------------------------------------------------------------------------------------------------


def test_expected_reward_hand_computed():
    assert R.expected_reward("release", 0.8, 0.8) == pytest.approx(
        1 + 0.8 + 2 * (0.8 * math.log(0.8) + 0.2 * math.log(0.2)))
    assert R.expected_reward("brier", 0.7, 0.6) == pytest.approx(1 + 0.7 - 0.7 * 0.4**2 - 0.3 * 0.6**2)
    assert R.expected_reward("release", 0.3, 1.0) == -5.0
    assert R.expected_reward("brier", 0.3, 1.5) == -1.0


def test_the_release_reward_rewards_sandbagging():
    """docs/rewards.md, "Incentive analysis": an honest answer right half the time (best c = 0.5) earns
    1.5 + 2 ln 0.5; a label known to be wrong stated with c = 0.01 earns 1 + 2 ln 0.99 -- more."""
    honest, sandbag = 1 + 0.5 + 2 * math.log(0.5), 1 + 2 * math.log(0.99)
    assert R.expected_reward("release", 0.5, 0.5) == pytest.approx(honest)
    assert R.expected_reward("release", 0.0, 0.01) == pytest.approx(sandbag)
    assert honest < sandbag
    assert 0.84 < R.sandbag_region("release") < 0.86  # docs/rewards.md: p < 0.848


def test_the_release_reward_makes_format_breaking_pay_when_confidently_wrong():
    """1 + 2 ln(1 - c) < -5 exactly when c > 1 - e^-3."""
    assert R.expected_reward("release", 0.0, 0.99) == pytest.approx(1 + 2 * math.log(0.01))
    assert 1 + 2 * math.log(0.01) < -5
    assert R.format_break_threshold("release") == pytest.approx(1 - math.exp(-3), abs=2e-4)


@pytest.mark.parametrize("name", ["brier", "spherical", "calibrated_log", R.DEFAULT_REWARD])
def test_project_rewards_are_proper_and_have_neither_escape_route(name):
    p = np.linspace(0.01, 0.99, 99)
    best_c, _ = R.best_response(name, p)
    assert np.allclose(best_c, p, atol=1e-4)  # strictly proper: the best confidence is p
    assert R.sandbag_region(name) == 0.0
    assert R.format_break_threshold(name) is None
    c = np.linspace(0, 1, 1001)
    worst_valid = min(R.outcome_reward(name, 0, c).min(), R.outcome_reward(name, 1, c).min())
    assert worst_valid - R.failure_score(name) == pytest.approx(1.0)  # the format weight


def test_sandbag_check_bites_when_the_log_weight_is_too_large():
    assert R.sandbag_region(R.WeightedReward("log", 1, 1, 1.0)) > 0.5
    assert R.sandbag_region(R.WeightedReward("log", 1, 1, 0.25)) == 0.0


@pytest.mark.parametrize("rule", R.RULES)
def test_rules_are_bounded_continuous_and_maximal_when_right_and_sure(rule):
    c = np.linspace(0, 1, 100001)
    for i in (0, 1):
        s = R.rule_score(rule, c, i)
        assert np.isfinite(s).all() and s.max() <= 0
        assert np.abs(np.diff(s)).max() < 1e-3  # no jumps, e.g. at eps and 1 - eps for the log rule
    assert R.rule_score(rule, 1.0, 1) == pytest.approx(max(R.rule_score(rule, c, 1)))
    assert R.rule_worst(rule) == pytest.approx(min(R.rule_score(rule, c, 0)))


def test_log_rule_is_the_log_score_inside_its_range():
    c = np.linspace(0.05, 0.95, 91)
    assert np.allclose(R.rule_score("log", c, 1), np.log(c))
    assert np.allclose(R.rule_score("log", c, 0), np.log(1 - c))

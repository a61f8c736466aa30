"""The one response parser: strict rules, the release's evaluation rules, robustness and round trips."""

from __future__ import annotations

import dataclasses
import math
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from response_strategies import CANDIDATES, RESPONSES, SEEDS, random_candidates, random_response

from emocaliber.parsing import (
    ParsedResponse,
    first_line_span,
    first_span,
    format_response,
    last_span,
    parse_response,
    release_format,
)
from emocaliber.prompts import record_target
from emocaliber.records import REASONING_PARTS, Record
from emocaliber.tasks import MIKELS_8, WEBEMO_25

PARTS = {p: f"{p} text" for p in REASONING_PARTS}
THINK = "<think>" + "".join(f"<{p}>{p} text</{p}>" for p in REASONING_PARTS) + "</think>"


def resp(answer: str = "awe", confidence: str = "0.85", think: str = THINK) -> str:
    return f"{think}<answer>{answer}</answer><confidence>{confidence}</confidence>"


# --- strict mode ----------------------------------------------------------------------------------------------


def test_canonical_response_parses_completely():
    assert parse_response(resp("Awe", "0.85"), MIKELS_8) == ParsedResponse(
        label="awe", confidence=0.85, answer_text="Awe", reasoning=PARTS, valid_format=True, problems=())


@pytest.mark.parametrize("answer, label", [
    ("awe", "awe"), ("Awe", "awe"), ("  AWE!! ", "awe"), ("awe.", "awe"), ("Awe\u3002", "awe"),
    ("The answer is awe", "awe"), ("**Awe**", "awe"), ("'fear'", "fear"), ("Disgust, clearly", "disgust"),
    ("awe or fear", None), ("awesome", None), ("happiness", None), ("sad", None),
])
def test_strict_label_exact_or_unique_whole_word(answer, label):
    parsed = parse_response(resp(answer), MIKELS_8)
    assert parsed.label == label
    assert parsed.valid_format  # the label does not decide the format
    assert (label is None) == bool(parsed.problems)


def test_strict_label_keeps_released_spellings_and_prefers_the_longer_candidate():
    assert parse_response(resp("Cheerfullness"), WEBEMO_25).label == "cheerfullness"
    assert parse_response(resp("cheerfulness"), WEBEMO_25).label is None  # no alias table in strict mode
    assert parse_response(resp("self love"), ["love", "self love"]).label == "self love"
    assert parse_response(resp("it is love"), ["love", "self love"]).label == "love"
    # A separate mention of the shorter one is a hedge, not the longer candidate.
    for hedge in ("self love, not love", "love. self love is wrong"):
        hedged = parse_response(resp(hedge), ["love", "self love"])
        assert hedged.label is None and "several candidates" in hedged.problems[0]


def test_strict_last_answer_and_last_confidence_win():
    text = "<answer>fear</answer><confidence>0.2</confidence>" + resp("awe", "0.7")
    parsed = parse_response(text, MIKELS_8)
    assert (parsed.label, parsed.confidence) == ("awe", 0.7)


def test_strict_several_candidates_is_no_label_and_says_why():
    parsed = parse_response(resp("awe or fear"), MIKELS_8)
    assert parsed.label is None and "awe, fear" in parsed.problems[0]


@pytest.mark.parametrize("raw, value", [
    ("0.85", 0.85), (".85", 0.85), ("85%", 0.85), ("{0.8}", 0.8), (" 0.8\n", 0.8), ("0.850", 0.85), ("1", 1.0),
    ("1.0", 1.0), ("0", 0.0), ("100%", 1.0), ("'0.6'", 0.6), ("{ 55% }", 0.55), ("1.5%", 0.015), ("0%", 0.0),
])
def test_strict_confidence_accepted(raw, value):
    parsed = parse_response(resp(confidence=raw), MIKELS_8)
    assert parsed.confidence == pytest.approx(value, abs=1e-12)
    assert parsed.valid_format


@pytest.mark.parametrize("raw", ["high", "0.7-0.8", "-0.1", "150", "85", "1.5", "101%", "nan", "inf", "1e-3", "",
                                 "0.5 0.6", "1_0", "\u0661", "9" * 400, "0.85%", ".5%"])
def test_strict_confidence_rejected(raw):
    parsed = parse_response(resp(confidence=raw), MIKELS_8)
    assert parsed.confidence is None and not parsed.valid_format
    assert any("confidence" in p for p in parsed.problems)


@pytest.mark.parametrize("text, missing", [
    (resp(think=THINK.replace("</human>", "")), "human"),
    (resp(think=THINK.replace("<analysis>", "<analysys>")), "analysis"),
    (resp(think=""), "<think>"),
    (THINK + "<confidence>0.5</confidence>", "<answer>"),
    (resp(answer="  "), "empty <answer>"),
    (THINK + "<answer>awe</answer>", "<confidence>"),
    (resp().replace("<answer>", "<ANSWER>").replace("</answer>", "</ANSWER>"), "<answer>"),
])
def test_strict_format_problems_are_named(text, missing):
    parsed = parse_response(text, MIKELS_8)
    assert not parsed.valid_format
    assert any(missing in p for p in parsed.problems), parsed.problems


def test_strict_parts_in_any_order_are_found():
    think = "<think>" + "".join(f"<{p}>{p} text</{p}>" for p in reversed(REASONING_PARTS)) + "</think>"
    parsed = parse_response(resp(think=think), MIKELS_8)
    assert parsed.valid_format and parsed.reasoning == PARTS


# --- release mode: the released evaluation -----------------------------------------------------------------


def released_label(response: str, candidates: list[str]) -> str:
    """The release's per-task prediction, restated from evaluate_multi_task_conf_from_merged.py."""
    response = response.lower()
    m = re.search(r"<answer>(.*?)</answer>", response)
    content = m.group(1).lower() if m else None
    scanned = content if content else response
    return next((c.lower() for c in candidates if c.lower() in scanned), "unknown")


def released_confidence(response: str) -> float | None:
    """extract_verb_confidence.py plus the metric script's clipping (which keeps NaN); ValueError where the
    release fails."""
    m = re.search(r"<confidence>(.*?)</confidence>", response)
    if m is None:
        return None
    value = float(m.group(1).replace("{", "").replace("}", ""))
    return value if math.isnan(value) else min(1.0, max(0.0, value))


@pytest.mark.parametrize("text, label", [
    (resp("contentment and awe"), "awe"),  # list order, not text order
    (resp("Awesome"), "awe"),  # substring
    (resp("<b>FEAR</b>"), "fear"),
    ("<answer>fear</answer> then <answer>awe</answer>", "fear"),  # first answer, not last
    ("the analysis says fear.<ANSWER>Sadness</ANSWER>", "sadness"),
    ("about awe <answer>\nfear</answer>", "awe"),  # no DOTALL: no answer match, whole response scanned
    ("fear fills it <answer></answer>", "fear"),  # empty answer: whole response scanned
    ("fear fills it <answer>joy</answer>", None),  # answer matched, nothing in it: 'unknown', no fallback
    ("<answer>x\n</answer> <answer>anger</answer>", "anger"),  # first match that fits on one line
])
def test_release_label_rule(text, label):
    parsed = parse_response(text, MIKELS_8, mode="release")
    assert parsed.label == label
    assert released_label(text, list(MIKELS_8)) == (label or "unknown")


def test_release_unknown_keeps_the_answer_text():
    parsed = parse_response("<answer>Joy</answer>", MIKELS_8, mode="release")
    assert parsed.label is None and parsed.answer_text == "joy"


@pytest.mark.parametrize("text, value", [
    ("<confidence>{0.8}</confidence>", 0.8), ("<confidence> 0.7 </confidence>", 0.7),
    ("<confidence>1.5</confidence>", 1.0), ("<confidence>-0.2</confidence>", 0.0),
    ("<confidence>inf</confidence>", 1.0), ("<confidence>1e-1</confidence>", 0.1),
    ("<confidence>0.3</confidence><confidence>0.9</confidence>", 0.3),
    ("<confidence>85%</confidence>", None), ("<confidence>nan</confidence>", None),
    ("<confidence>\n0.7</confidence>", None), ("<CONFIDENCE>0.7</CONFIDENCE>", None),
    ("<confidence>high</confidence>", None), ("no tag", None),
])
def test_release_confidence_rule(text, value):
    assert parse_response(text, MIKELS_8, mode="release").confidence == value


@pytest.mark.parametrize("confidence, valid", [("0.5", True), (" 0.5 ", True), ("1e-2", True), ("1.0", False),
                                               ("1", False), ("0", False), ("85%", False), ("{0.8}", False),
                                               ("nan", False), ("-0.5", False)])
def test_release_format_gate(confidence, valid):
    text = resp("Awe!", confidence)
    assert release_format(text)[0] is valid
    assert parse_response(text, MIKELS_8, mode="release").valid_format is valid


def test_release_format_needs_parts_inside_think():
    outside = "<think></think>" + "".join(f"<{p}>x</{p}>" for p in REASONING_PARTS)
    assert not release_format(outside + "<answer>awe</answer><confidence>0.5</confidence>")[0]
    valid, answer, c, problems = release_format(resp(" Awe! ", "0.25"))
    assert (valid, answer, c, problems) == (True, " Awe! ", 0.25, [])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(RESPONSES, min_size=5, max_size=5), CANDIDATES)
def test_release_mode_matches_the_released_code(texts, candidates):
    """Against the release's own regular expressions (restated above)."""
    for text in texts:
        assert_matches_release(text, candidates)


@settings(max_examples=25, deadline=None)
@given(SEEDS)
def test_release_mode_matches_the_released_code_in_bulk(seed):
    rng = random.Random(seed)
    for _ in range(200):
        assert_matches_release(random_response(rng), random_candidates(rng))


def assert_matches_release(text: str, candidates: list[str]) -> None:
    parsed = parse_response(text, candidates, mode="release")
    assert (parsed.label.lower() if parsed.label else "unknown") == released_label(text, candidates)
    try:
        expected = released_confidence(text)
    except ValueError:
        expected = None
    if expected is not None and math.isnan(expected):
        expected = None
    assert parsed.confidence == expected


# --- span helpers equal the regular expressions they replace --------------------------------------------------

SPAN_TEXT = st.lists(st.sampled_from(["<a>", "</a>", "\n", "x", "<", "a>", "</"]), max_size=16).map("".join)


@settings(max_examples=300, deadline=None)
@given(SPAN_TEXT)
def test_span_helpers_equal_regex(text):
    def group(m):
        return m.group(1) if m else None

    assert first_span(text, "<a>", "</a>") == group(re.search(r"<a>(.*?)</a>", text, re.DOTALL))
    assert first_line_span(text, "<a>", "</a>") == group(re.search(r"<a>(.*?)</a>", text))
    # last_span: the pair opened last among the opening tags that have a closing tag after them
    pairs = [m.group(1) for m in re.finditer(r"(?=<a>(.*?)</a>)", text, re.DOTALL)]
    assert last_span(text, "<a>", "</a>") == (pairs[-1] if pairs else None)


# --- robustness -----------------------------------------------------------------------------------------------

ODD_INPUTS = [None, b"<answer>awe</answer>", b"\xff\xfe<answer>", bytearray(b"x"), 3, 2.5, ["awe"], {"a": 1},
              object(), "", "\x00", "\ud800", "İ<answer>AWE</answer>", "<think>" * 10]


@pytest.mark.parametrize("mode", ["strict", "release"])
@pytest.mark.parametrize("text", ODD_INPUTS)
def test_never_raises_on_odd_input(text, mode):
    for candidates in (MIKELS_8, None, "awe", [1, None, "awe", ""], [["unhashable"]], iter(["awe"]), 5):
        parsed = parse_response(text, candidates, mode)
        assert isinstance(parsed, ParsedResponse)
        assert not any("internal" in p for p in parsed.problems)


def test_non_text_inputs_say_so():
    assert parse_response(None, MIKELS_8).problems[0] == "no response (None)"
    assert "not text" in parse_response(3, MIKELS_8).problems[0]
    assert parse_response(b"<answer>Fear</answer>", MIKELS_8).label == "fear"


ADVERSARIAL = [
    "<answer>" * 150_000, "<answer>\n" * 120_000 + "</answer>", "<think>" * 140_000 + "</think>",
    "<think>" + "<element>" * 120_000, "<confidence>" + "9" * 1_000_000 + "</confidence>",
    "<answer>" + "awe " * 250_000 + "</answer>", "<confidence>" + "0." * 500_000,
    "<answer>" + "a" * 1_000_000 + "</answer>",
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_megabyte_adversarial_input_returns(text):
    for mode in ("strict", "release"):
        parsed = parse_response(text, WEBEMO_25, mode)
        assert not parsed.valid_format


def test_unknown_mode_is_a_programming_error():
    with pytest.raises(ValueError, match="strict"):
        parse_response("x", MIKELS_8, mode="lenient")


def test_parsed_response_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse_response(resp(), MIKELS_8).label = "fear"


def check_invariants(text: str, candidates: list[str]) -> None:
    for mode in ("strict", "release"):
        parsed = parse_response(text, candidates, mode)
        assert not any("internal" in p for p in parsed.problems), parsed.problems
        assert parsed.label is None or parsed.label in candidates
        assert parsed.confidence is None or 0.0 <= parsed.confidence <= 1.0
        assert set(parsed.reasoning) <= set(REASONING_PARTS)
        assert all(isinstance(p, str) for p in parsed.problems)
        if mode == "strict":
            assert parsed.valid_format == (set(parsed.reasoning) == set(REASONING_PARTS)
                                           and bool(parsed.answer_text) and parsed.confidence is not None)
            assert (not parsed.problems) == (parsed.valid_format and parsed.label is not None)
        else:
            assert parsed.valid_format == release_format(text)[0]


@settings(max_examples=50, deadline=None)
@given(SEEDS)
def test_bulk_generated_responses_keep_the_invariants(seed):
    """10,000 generated responses per run (200 per example), both modes; a failure prints the seed."""
    rng = random.Random(seed)
    for _ in range(200):
        text, candidates = random_response(rng), random_candidates(rng)
        check_invariants(text, candidates)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(RESPONSES, min_size=5, max_size=5), CANDIDATES)
def test_structured_generated_responses_keep_the_invariants(texts, candidates):
    """Fewer, but hypothesis shrinks a failure to a minimal response."""
    for text in texts:
        check_invariants(text, candidates)


# --- format_response round trips -----------------------------------------------------------------------------

PART_TEXT = st.text(st.characters(exclude_characters="<", exclude_categories=["Cs"]), max_size=30).map(str.strip)


@st.composite
def valid_parses(draw: st.DrawFn) -> tuple[ParsedResponse, list[str]]:
    candidates = draw(st.sampled_from([list(MIKELS_8), list(WEBEMO_25), ["positive", "negative"]]))
    label = draw(st.sampled_from(candidates))
    answer = draw(st.sampled_from([label, label.upper(), f"{label.capitalize()}.", f"The answer is {label}"]))
    confidence = draw(st.integers(0, 100)) / 100
    reasoning = {p: draw(PART_TEXT) for p in REASONING_PARTS}
    return ParsedResponse(label, confidence, answer, reasoning, True, ()), candidates


@settings(max_examples=200, deadline=None)
@given(valid_parses())
def test_parse_of_format_is_identity_for_valid_parses(case):
    parsed, candidates = case
    assert parse_response(format_response(parsed), candidates) == parsed


def test_format_response_of_partial_parses():
    assert format_response(ParsedResponse(label="awe")) == "<answer>awe</answer>"
    assert format_response(ParsedResponse(confidence=0.5)) == "<confidence>0.50</confidence>"
    partial = ParsedResponse(reasoning={"human": "h", "element": "e"}, answer_text="Fear", confidence=0.25)
    text = format_response(partial)
    assert text == "<think><element>e</element><human>h</human></think><answer>Fear</answer><confidence>0.25</confidence>"
    again = parse_response(text, MIKELS_8)
    assert (again.reasoning, again.label, again.confidence, again.valid_format) == (partial.reasoning, "fear", 0.25,
                                                                                     False)


def test_sft_targets_parse_back_to_their_record():
    record = Record(id="r1", task="EmoSet-8", image="a/b.jpg", candidates=list(MIKELS_8), ground_truth="sadness",
                    split="train", source="EmoSet", reasoning=PARTS, confidence=0.35)
    parsed = parse_response(record_target(record, with_confidence=True), record.candidates)
    assert (parsed.label, parsed.confidence, parsed.reasoning, parsed.problems) == ("sadness", 0.35, PARTS, ())
    released = parse_response(record_target(record, with_confidence=True), record.candidates, mode="release")
    assert (released.label, released.confidence, released.valid_format) == ("sadness", 0.35, True)

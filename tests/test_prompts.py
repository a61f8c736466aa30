"""Prompts and targets: the released wording, written out in full, and the target layout the parser reads."""

from __future__ import annotations

import pytest

from emocaliber import prompts as P
from emocaliber.records import REASONING_PARTS, Record
from emocaliber.tasks import MIKELS_8

# The released VECBench EmoSet-8 question, as the dataset viewer of huggingface.co/datasets/wudq/VECBench
# shows it (closing period included).
RELEASED_EMOSET = (
    "Which emotion might this image evoke? Choose the most likely one from ['awe', 'amusement', 'contentment', "
    "'excitement', 'anger', 'sadness', 'fear', 'disgust']. Think step by step. Respond in the format: "
    "<think>{your reasoning}</think><answer>{your final answer}</answer>."
)
PARTS = {p: f"{p} text" for p in REASONING_PARTS}


def record(task="EmoSet-8", candidates=MIKELS_8, truth="awe", confidence=0.85, reasoning=PARTS) -> Record:
    return Record(id="x/1.jpg", task=task, image="x/1.jpg", candidates=list(candidates), ground_truth=truth,
                  split="train", source="EmoSet", reasoning=reasoning, confidence=confidence)


def test_stage1_prompt_is_the_released_wording():
    assert P.build_prompt(MIKELS_8, with_confidence=False) == RELEASED_EMOSET


def test_confidence_prompt_adds_the_confidence_tag_before_the_period():
    assert P.build_prompt(MIKELS_8, with_confidence=True) == (
        RELEASED_EMOSET[:-1] + "<confidence>{your confidence}</confidence>.")


def test_sentiment_prompt_swaps_one_word():
    assert P.build_prompt(["positive", "negative"], with_confidence=False, sentiment=True) == (
        "Which sentiment might this image evoke? Choose the most likely one from ['positive', 'negative']. "
        "Think step by step. Respond in the format: <think>{your reasoning}</think><answer>{your final answer}"
        "</answer>.")


def test_record_prompt_follows_the_task_kind_and_candidate_order():
    fi2 = record(task="FI-2", candidates=["negative", "positive"], truth="negative")
    assert P.record_prompt(fi2, with_confidence=False).startswith(
        "Which sentiment might this image evoke? Choose the most likely one from ['negative', 'positive'].")
    assert P.record_prompt(record(), with_confidence=False) == RELEASED_EMOSET


def test_format_candidates():
    assert P.format_candidates(["awe", "fear"]) == "['awe', 'fear']"
    assert P.format_candidates([]) == "[]"


@pytest.mark.parametrize("c, text", [(0.85, "0.85"), (0.5, "0.50"), (0.05, "0.05"), (0.123, "0.12"),
                                     (0.99, "0.99")])
def test_format_confidence_two_decimals(c, text):
    assert P.format_confidence(c) == text


def test_format_reasoning_is_canonical_order():
    shuffled = {p: PARTS[p] for p in reversed(REASONING_PARTS)}
    assert P.format_reasoning(shuffled) == (
        "<think><element>element text</element><human>human text</human><context>context text</context>"
        "<interaction>interaction text</interaction><analysis>analysis text</analysis></think>")


def test_format_target():
    think = P.format_reasoning(PARTS)
    assert P.format_target(PARTS, "awe") == think + "<answer>awe</answer>"
    assert P.format_target(PARTS, "awe", 0.3) == think + "<answer>awe</answer><confidence>0.30</confidence>"
    assert P.format_target(None, "fear", 0.7) == "<answer>fear</answer><confidence>0.70</confidence>"


def test_record_target():
    r = record()
    assert P.record_target(r, with_confidence=True) == P.format_target(PARTS, "awe", 0.85)
    assert P.record_target(r, with_confidence=False) == P.format_target(PARTS, "awe")
    with pytest.raises(ValueError, match="build_confidence_targets"):
        P.record_target(record(confidence=None), with_confidence=True)


def test_build_messages_shape():
    r = record()
    messages = P.build_messages(r, with_confidence=True)
    assert messages == [
        {"role": "system", "content": [{"type": "text", "text": "You are a helpful assistant."}]},
        {"role": "user", "content": [{"type": "image"},
                                     {"type": "text", "text": P.record_prompt(r, with_confidence=True)}]},
    ]
    full = P.build_messages(r, with_confidence=False, image="x/1.jpg", system_prompt=None, target=True)
    assert [m["role"] for m in full] == ["user", "assistant"]
    assert full[0]["content"][0] == {"type": "image", "image": "x/1.jpg"}
    assert full[1]["content"] == [{"type": "text", "text": P.record_target(r, with_confidence=False)}]


def test_teacher_structure_names_the_five_parts_in_order():
    positions = [P.TEACHER_STRUCTURE.index(f"<{p}>") for p in REASONING_PARTS]
    assert positions == sorted(positions)
    assert all(f"</{p}>" in P.TEACHER_STRUCTURE for p in REASONING_PARTS)


@pytest.mark.parametrize("c, text", [(0.996, "0.99"), (0.004, "0.01"), (0.5, "0.50")])
def test_sft_target_never_states_certainty(c, text):
    record = Record(id="r", task="FI-2", image="a.png", candidates=["positive", "negative"], ground_truth="positive",
                    split="train", source="FI", confidence=c)
    assert P.record_target(record, with_confidence=True) == f"<answer>positive</answer><confidence>{text}</confidence>"


def test_unhashable_task_name_is_a_key_error():
    from emocaliber.tasks import get_task

    with pytest.raises(KeyError, match="must be a string"):
        get_task(["FI-8"])

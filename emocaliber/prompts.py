"""What the model is asked and what it is trained to answer, in one place so prompt and target never disagree.

The question wording is the released VECBench prompt ("Which emotion might this image evoke? Choose the most
likely one from [...]. Think step by step. Respond in the format: ..."). The released sentiment wording is not
public; the sentiment variant swaps "emotion" for "sentiment" and is marked as this project's choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from emocaliber.records import REASONING_PARTS, Record, RecordError
from emocaliber.tasks import get_task

#: The system prompt used for SFT in the release (and Qwen2.5-VL's default).
SYSTEM_PROMPT = "You are a helpful assistant."

_QUESTION = "Which {noun} might this image evoke? Choose the most likely one from {candidates}. Think step by step."
_FORMAT = "Respond in the format: <think>{your reasoning}</think><answer>{your final answer}</answer>"
_FORMAT_CONF = _FORMAT + "<confidence>{your confidence}</confidence>"
#: Extra instruction for a teacher model writing the five-part reasoning (build_cot), not part of training prompts.
TEACHER_STRUCTURE = (
    "Inside <think>, write five parts in this order: <element>the prominent visual elements</element>"
    "<human>the people and their expressions, or 'no people present'</human><context>the setting beyond the "
    "subjects</context><interaction>how the elements interact</interaction><analysis>the emotion these evoke"
    "</analysis>. Do not name the answer before the analysis."
)


def format_candidates(candidates: Sequence[str]) -> str:
    """Python-list rendering, as the released prompts show: ['awe', 'amusement']."""
    return "[" + ", ".join(f"'{c}'" for c in candidates) + "]"


def build_prompt(candidates: Sequence[str], *, with_confidence: bool, sentiment: bool = False) -> str:
    """The user question for stage 1 (``with_confidence=False``) or stages 2/3 and evaluation (``True``)."""
    question = _QUESTION.format(noun="sentiment" if sentiment else "emotion",
                                candidates=format_candidates(candidates))
    return f"{question} {_FORMAT_CONF if with_confidence else _FORMAT}."


_TOP_TWO = ("Which two {noun}s might this image evoke most? Choose the two most likely from {candidates}, the more "
            "likely first, separated by a comma. Think step by step.")


def build_top_two_prompt(candidates: Sequence[str], *, sentiment: bool = False) -> str:
    """The question of the blend-rank evaluation's recall pass: the two most likely labels in one answer and no
    confidence (read with :func:`emocaliber.parsing.named_labels`). This project's wording."""
    question = _TOP_TWO.format(noun="sentiment" if sentiment else "emotion", candidates=format_candidates(candidates))
    return f"{question} {_FORMAT}."


_VERIFY = "Does the face in this image show {emotion} ({descriptors})? Answer yes or no. Think step by step."


def build_verification_prompt(emotion: str, descriptors: Sequence[str] = (), *, with_confidence: bool) -> str:
    """A yes/no question about one emotion (EmoNet-Face verification), in the same response format as the
    classification prompt, so the one parser, reward and evaluation read it; the answer candidates are
    ``yes`` and ``no``, and the confidence is the confidence in the stated answer. This project's wording."""
    question = _VERIFY.format(emotion=emotion, descriptors=", ".join(descriptors)).replace(" ()", "")
    return f"{question} {_FORMAT_CONF if with_confidence else _FORMAT}."


def record_prompt(record: Record, *, with_confidence: bool) -> str:
    """The prompt for a record, using its own candidate order and its task's kind (a verification task asks
    about ``meta["emotion"]``, described by ``meta["descriptors"]``)."""
    if get_task(record.task).kind == "verification":
        emotion = record.meta.get("emotion")
        if not isinstance(emotion, str) or not emotion:
            raise RecordError(f"record {record.id!r}: task {record.task} asks about meta['emotion'], which is "
                              f"missing or not text")
        return build_verification_prompt(emotion, record.meta.get("descriptors", ()),
                                         with_confidence=with_confidence)
    return build_prompt(record.candidates, with_confidence=with_confidence, sentiment=get_task(record.task).is_sentiment)


def format_confidence(confidence: float) -> str:
    """Two decimals, the granularity of the stage-2 targets."""
    return f"{confidence:.2f}"


def format_reasoning(reasoning: Mapping[str, str]) -> str:
    """The <think> block from the five parts, in the canonical order."""
    return "<think>" + "".join(f"<{p}>{reasoning[p]}</{p}>" for p in REASONING_PARTS) + "</think>"


def format_target(reasoning: Mapping[str, str] | None, answer: str, confidence: float | None = None) -> str:
    """The assistant's text: reasoning, answer and (from stage 2 on) confidence.

    ``reasoning=None`` gives an answer-only target (used by ablations without chain of thought).
    """
    text = (format_reasoning(reasoning) if reasoning is not None else "") + f"<answer>{answer}</answer>"
    if confidence is not None:
        text += f"<confidence>{format_confidence(confidence)}</confidence>"
    return text


def record_target(record: Record, *, with_confidence: bool) -> str:
    """SFT target for a record: its reasoning, its answer (the ground truth unless the record says otherwise) and
    (if asked) its confidence target."""
    if with_confidence and record.confidence is None:
        raise ValueError(f"record {record.id!r} has no confidence target; build them with build_confidence_targets")
    # Kept inside [0.01, 0.99]: rounding alone would write 0.996 as "1.00", which the release's 0 < c < 1 format
    # gate rejects and which teaches a model to claim certainty.
    confidence = min(max(record.confidence, 0.01), 0.99) if with_confidence else None
    return format_target(record.reasoning, record.stated_answer, confidence)


def build_messages(
    record: Record,
    *,
    with_confidence: bool,
    image: Any = None,
    system_prompt: str | None = SYSTEM_PROMPT,
    target: bool = False,
    prompt_text: str | None = None,
    target_text: str | None = None,
) -> list[dict[str, Any]]:
    """Chat messages in the content-list form TRL, transformers' chat templates and vLLM's chat API accept.

    ``image`` (a path or PIL image) goes into the image part when given; TRL instead pairs a bare
    ``{"type": "image"}`` part with its ``images`` column. ``target=True`` appends the assistant's SFT target.
    ``prompt_text`` / ``target_text`` replace the rendered question / target (a released file's own text, which
    ``emocaliber.formats.released_prompt`` and ``released_target`` vouch for).
    """
    image_part: dict[str, Any] = {"type": "image"}
    if image is not None:
        image_part["image"] = image
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    question = prompt_text if prompt_text is not None else record_prompt(record, with_confidence=with_confidence)
    messages.append({"role": "user", "content": [image_part, {"type": "text", "text": question}]})
    if target:
        text = target_text if target_text is not None else record_target(record, with_confidence=with_confidence)
        messages.append({"role": "assistant", "content": [{"type": "text", "text": text}]})
    return messages

"""How a model's answers become P(present) for (image, emotion) cells: three readouts.

* ``verbal`` -- one verification question per emotion (the ``EmoNet-Verify`` prompt, the project's
  reasoning/answer/confidence format), read by the project's parser: P(present) = c for "yes" and 1 - c for
  "no", where c is the stated confidence. A response without a valid answer and confidence is missing (NaN).
* ``first_token`` -- the bare question "Does this face show {emotion}? Answer yes or no." and the softmax of
  the first answer token restricted to the yes/no tokens (the third-party "verification" readout). Needs the
  model's logits, so it runs under the transformers backend only.
* ``generative`` -- one question per image asking for up to k emotions with a confidence each; an emotion not
  listed gets P = 0; an answer in which nothing parses is missing for the whole image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from emocaliber.emonet.corpus import VERIFY_TASK, YES_NO
from emocaliber.emonet.taxonomy import BY_NAME, NAMES, canonical, emotions_in_text
from emocaliber.generation import GenerationRequest
from emocaliber.images import load_record_image
from emocaliber.parsing import last_span, parse_confidence, parse_response
from emocaliber.prompts import SYSTEM_PROMPT, format_candidates
from emocaliber.records import Record

READOUTS = ("verbal", "first_token", "generative")
BARE_QUESTION = "Does this face show {emotion}? Answer yes or no."
_GENERATIVE = ("Which emotions does the face in this image show? Choose up to {k} from {candidates}. Think step "
               "by step. For each emotion you choose, give your confidence (0 to 1) that it is present. Respond "
               "in the format: <think>{{your reasoning}}</think><answer>{{emotion}}: {{confidence}}; "
               "{{emotion}}: {{confidence}}</answer>.")


def verification_record(image: str, emotion: str, present: bool | None = None) -> Record:
    """An ``EmoNet-Verify`` record for one cell (``present`` sets the ground truth; unknown -> "yes")."""
    e = BY_NAME[emotion]
    return Record(id=f"{image}|{e.snake}", task=VERIFY_TASK, image=image, candidates=list(YES_NO),
                  ground_truth="no" if present is False else "yes", split="test", source="EmoNet-Face HQ",
                  meta={"emotion": e.name, "descriptors": list(e.descriptors)})


def _messages(text: str, system_prompt: str | None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]})
    return messages


def bare_request(image: Any, emotion: str, system_prompt: str | None = SYSTEM_PROMPT) -> GenerationRequest:
    return GenerationRequest(_messages(BARE_QUESTION.format(emotion=emotion), system_prompt), [image])


def generative_request(image: Any, emotions: Sequence[str], k: int,
                       system_prompt: str | None = SYSTEM_PROMPT) -> GenerationRequest:
    text = _GENERATIVE.format(k=k, candidates=format_candidates(emotions))
    return GenerationRequest(_messages(text, system_prompt), [image])


def verbal_p_present(text: str | None) -> float:
    """P(present) from a verification response (NaN when it has no valid yes/no answer and confidence)."""
    if text is None:
        return float("nan")
    parsed = parse_response(text, list(YES_NO))
    if parsed.label is None or parsed.confidence is None:
        return float("nan")
    return parsed.confidence if parsed.label == "yes" else 1.0 - parsed.confidence


def parse_generative(text: str | None, emotions: Sequence[str]) -> np.ndarray:
    """P(present) over ``emotions`` from a generative answer ``Name: conf; Name: conf``. A name is matched
    exactly (any release spelling), else through the descriptors when they point at exactly one emotion; a
    name listed twice keeps its highest confidence. NaN everywhere when no entry parses."""
    out = np.full(len(emotions), np.nan)
    answer = last_span(text, "<answer>", "</answer>") if text else None
    if answer is None:
        return out
    position = {e: i for i, e in enumerate(emotions)}
    found = {}
    for entry in answer.replace("\n", ";").split(";"):
        name, sep, value = entry.rpartition(":")
        if not sep:
            continue
        confidence, _ = parse_confidence(value)
        if confidence is None:
            continue
        emotion = canonical(name)
        if emotion is None:
            hits = emotions_in_text(name)
            emotion = next(iter(hits)) if len(hits) == 1 else None
        if emotion in position:
            found[emotion] = max(confidence, found.get(emotion, 0.0))
    if found:
        out[:] = 0.0
        for emotion, confidence in found.items():
            out[position[emotion]] = confidence
    return out


def _first_token_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    ids = set()
    for w in words:
        for variant in (w, w.capitalize(), " " + w, " " + w.capitalize()):
            tokens = tokenizer.encode(variant, add_special_tokens=False)
            if tokens:
                ids.add(tokens[0])
    return sorted(ids)


def first_token_p_yes(backend: Any, requests: Sequence[GenerationRequest]) -> list[float]:
    """P(yes) = the softmax mass of the yes tokens among the yes and no tokens at the first generated
    position ("yes", "Yes", " yes", " Yes" and the same for no). Only for backends that hold a transformers
    model (``backend.model``, ``backend.processor``); raises ``NotImplementedError`` otherwise."""
    import torch

    from emocaliber.generation import render_prompt

    model, processor = getattr(backend, "model", None), getattr(backend, "processor", None)
    if model is None or processor is None or not hasattr(backend, "_encode"):
        raise NotImplementedError(f"the {getattr(backend, 'name', '?')} backend does not expose first-token "
                                  "logits; run the first_token readout with --backend transformers")
    tokenizer = processor.tokenizer
    yes, no = _first_token_ids(tokenizer, ["yes"]), _first_token_ids(tokenizer, ["no"])
    saved, tokenizer.padding_side = tokenizer.padding_side, "left"
    out: list[float] = []
    try:
        with torch.inference_mode():
            for lo in range(0, len(requests), backend.batch_size):
                batch = requests[lo: lo + backend.batch_size]
                inputs = backend._encode([render_prompt(processor, r) for r in batch],
                                         [im for r in batch for im in r.images]).to(model.device)
                logits = model(**inputs).logits[:, -1, :].float()
                pair = torch.stack([torch.logsumexp(logits[:, yes], -1), torch.logsumexp(logits[:, no], -1)], -1)
                out += torch.softmax(pair, -1)[:, 0].tolist()
    finally:
        tokenizer.padding_side = saved
    return out


def load_cell_image(image: str, image_root: Any):
    """The RGB image of an hq.csv image path (relative to the image root; never outside it)."""
    record = Record(id=image, task=VERIFY_TASK, image=image, candidates=list(YES_NO), ground_truth="yes",
                    split="test", source="EmoNet-Face HQ", meta={"emotion": NAMES[0]})
    return load_record_image(record, image_root)


"""The one response parser: the stage-3 reward and the evaluation read model outputs through it.

Sharing one parser means training optimises exactly what evaluation measures. It never raises on model output:
whatever the text, it returns a :class:`ParsedResponse` that says what was found and lists, in ``problems``,
why a response is invalid.

Two modes:

``"strict"`` (the project's rules; as in VLMEvalKit's ``can_infer_text``, exactly one candidate may match)
    * reasoning: the first ``<think>...</think>`` block; each of the five parts is the first
      ``<part>...</part>`` inside it (content stripped). Tags are case-sensitive.
    * answer: the *last* complete ``<answer>...</answer>`` pair (see :func:`last_span`), stripped. No fallback
      to the rest of the text: reasoning names many emotions.
    * label: the candidate equal to the answer (case-insensitive, trailing punctuation removed), otherwise the
      one candidate that occurs in it as a whole word (the longest at each place: "self love" is not also
      "love"); several or none -> ``None``.
    * confidence: the last ``<confidence>`` span; ``0.85``, ``.85``, ``85%`` and ``{0.8}`` are accepted,
      anything else (words, ranges, signs, NaN, infinity, values outside [0, 1], and a fraction below 1 with a
      percent sign such as ``0.85%``, which may mean 0.85 or 0.0085) is ``None``.
    * ``valid_format``: a think block with all five parts closed, a non-empty answer and a valid confidence.

``"release"`` (the released evaluation, ``evaluate_multi_task_conf_from_merged.py`` and
``extract_verb_confidence.py``, reproduced exactly)
    * label: lower-case the whole response; take the first ``<answer>(.*?)</answer>`` match *without* DOTALL
      (the content may not span a newline). If its content is non-empty, the label is the first candidate in
      list order whose lower-cased form is a substring of it, and nothing else is scanned; if there is no match
      or the content is empty, the same scan runs over the whole lower-cased response. No candidate -> the
      release's ``"unknown"``, represented as ``label=None`` (``answer_text`` keeps the matched content).
      Blank candidates are ignored (in both modes).
      (Paper section 6.2 reads as if a failed answer scan fell back to the whole response; the released code
      does not, and this mode follows the code. The release's "Overall" row uses yet another rule, a scan of
      the whole response for the candidates as given; it is not reproduced.)
    * confidence: the first ``<confidence>(.*?)</confidence>`` without DOTALL in the *original-case* text,
      ``{`` and ``}`` removed, ``float()``; clipped to [0, 1] as the release's metrics do. What ``float()``
      rejects is ``None`` (the release's script then drops the whole row, which a per-response parser cannot
      express); NaN is ``None`` too, since clipping would keep it NaN.
    * ``valid_format``: the release reward's gate (see :func:`release_format`).
    * reasoning: as in strict mode, from the original-case text.

Both modes work by ``str.find`` rather than lazy regular expressions: ``<t>(.*?)</t>`` re-scans the text from
every opening tag and is quadratic on adversarial input; the find-based helpers return the same spans in linear
time.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from emocaliber.prompts import format_confidence, format_reasoning, format_target
from emocaliber.records import REASONING_PARTS

MODES = ("strict", "release")

_PART_TAGS = tuple((p, f"<{p}>", f"</{p}>") for p in REASONING_PARTS)
_TRAILING = string.punctuation + string.whitespace + "\u3002\uff01\uff1f\uff0c\u2026\u201d\u2019"
_CONFIDENCE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(%?)", re.ASCII)
_SHOWN = 60  # characters of a bad value quoted in a problem message


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    """What a response says. ``problems`` is empty only for a valid response whose answer is a candidate."""

    label: str | None = None
    confidence: float | None = None
    answer_text: str | None = None
    reasoning: dict[str, str] = field(default_factory=dict, hash=False)
    valid_format: bool = False
    problems: tuple[str, ...] = ()


def first_span(text: str, open_tag: str, close_tag: str) -> str | None:
    """Content of the first ``open...close`` pair: what ``re.search(open(.*?)close, text, re.DOTALL)`` finds."""
    start = text.find(open_tag)
    if start < 0:
        return None
    start += len(open_tag)
    end = text.find(close_tag, start)
    return None if end < 0 else text[start:end]


def first_line_span(text: str, open_tag: str, close_tag: str) -> str | None:
    """What ``re.search(open(.*?)close, text)`` finds *without* DOTALL: the content may not contain a newline."""
    start, end = text.find(open_tag), -1
    while start >= 0:
        start += len(open_tag)
        if end < start:  # the first closing tag after an earlier opening one is also the first after this one
            end = text.find(close_tag, start)
            if end < 0:
                return None
        newline = text.find("\n", start, end)
        if newline < 0:
            return text[start:end]
        # Every opening tag before this newline has the same first closing tag, beyond the newline.
        start = text.find(open_tag, newline + 1)
    return None


def last_span(text: str, open_tag: str, close_tag: str) -> str | None:
    """Content from the last ``open`` that has a ``close`` after it to the first such ``close``.

    The last complete pair, innermost when tags nest: ``<a>x</a>y</a>`` gives ``x``, ``<a><a>x</a>`` gives ``x``.
    """
    last_close = text.rfind(close_tag)
    if last_close < 0:
        return None
    start = text.rfind(open_tag, 0, last_close)
    if start < 0:
        return None
    start += len(open_tag)
    return text[start:text.find(close_tag, start)]


def _shown(value: str) -> str:
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "...")


def _as_text(text: object) -> tuple[str, str | None]:
    """The response as ``str`` and a problem if it was not text."""
    if isinstance(text, str):
        return text, None
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("utf-8", errors="replace"), None
    if text is None:
        return "", "no response (None)"
    return "", f"response is not text (got {type(text).__name__})"


@dataclass(frozen=True)
class _Candidates:
    """A candidate list prepared once: the usable labels in order, a lower-case index, a whole-word pattern."""

    labels: tuple[str, ...]
    lowered: dict[str, str]
    pattern: re.Pattern[str] | None


@lru_cache(maxsize=1024)
def _prepare(candidates: tuple[object, ...]) -> _Candidates:
    labels = tuple(c for c in candidates if isinstance(c, str) and c.strip())
    lowered: dict[str, str] = {}
    for c in labels:
        lowered.setdefault(c.strip().lower(), c)
    if not lowered:
        return _Candidates(labels, lowered, None)
    words = "|".join(re.escape(c) for c in sorted(lowered, key=len, reverse=True))
    return _Candidates(labels, lowered, re.compile(rf"(?<!\w)(?:{words})(?!\w)"))


def _candidates(candidates: object) -> _Candidates:
    """Candidates as given by a caller: a list or tuple of labels; a lone string is one label; others ignored."""
    if isinstance(candidates, str):
        key: tuple[object, ...] = (candidates,)
    elif isinstance(candidates, tuple):
        key = candidates
    else:
        try:
            key = tuple(candidates)  # type: ignore[arg-type]
        except TypeError:
            key = ()
    try:
        return _prepare(key)
    except TypeError:  # unhashable items: keep the strings
        return _prepare(tuple(c for c in key if isinstance(c, str)))


def normalize_answer(answer: str) -> str:
    """Lower-cased, stripped, trailing punctuation removed: the form compared for an exact label match."""
    return answer.strip().lower().rstrip(_TRAILING)


def match_label(answer: str, candidates: Iterable[str]) -> tuple[str | None, str | None]:
    """Strict label rule: ``(candidate, None)`` or ``(None, why not)``."""
    prepared = _candidates(candidates)
    lowered, pattern = prepared.lowered, prepared.pattern
    if pattern is None:
        return None, "no candidates given"
    norm = normalize_answer(answer)
    if norm in lowered:
        return lowered[norm], None
    # Longer candidates come first in the pattern, so "love" is never found inside "self love"; a separate
    # "love" is a second candidate named, a hedge.
    found = set(pattern.findall(answer.lower()))
    if len(found) == 1:
        return lowered[found.pop()], None
    if found:
        return None, f"answer {_shown(answer)} names several candidates {_shown(', '.join(sorted(found)))}"
    return None, f"answer {_shown(answer)} is not one of the candidates"


def named_labels(text: object, candidates: object) -> list[str]:
    """The candidates the last ``<answer>`` span names, in the order they first appear, each once: the reading of
    a top-two answer (``<answer>awe, fear</answer>``), where naming several candidates is asked for rather than a
    hedge. Uses the strict rule's candidate pattern (longer labels first); no answer span gives ``[]``."""
    text, _ = _as_text(text)
    answer = last_span(text, "<answer>", "</answer>")
    prepared = _candidates(candidates)
    if answer is None or prepared.pattern is None:
        return []
    named: list[str] = []
    for found in prepared.pattern.findall(answer.lower()):
        label = prepared.lowered[found]
        if label not in named:
            named.append(label)
    return named


def parse_confidence(raw: str) -> tuple[float | None, str | None]:
    """Strict confidence rule: ``(value in [0, 1], None)`` or ``(None, why not)``."""
    s = raw.strip()
    if len(s) >= 2 and s[0] == "{" and s[-1] == "}":
        s = s[1:-1]
    s = s.strip().strip("\"'").strip()
    m = _CONFIDENCE.fullmatch(s)
    if m is None:
        return None, f"confidence {_shown(raw)} is not a number like 0.85 or 85%"
    if m.group(2) and "." in m.group(1) and float(m.group(1)) < 1.0:
        return None, f"confidence {_shown(raw)} is ambiguous (0.85 or 0.0085?); write 0.85 or 85%"
    value = float(m.group(1)) / (100.0 if m.group(2) else 1.0)
    if not 0.0 <= value <= 1.0:
        return None, f"confidence {_shown(raw)} is outside [0, 1]"
    return value, None


def _reasoning(text: str) -> tuple[dict[str, str], list[str]]:
    """The five parts found in the first think block, and what is missing."""
    think = first_span(text, "<think>", "</think>")
    if think is None:
        return {}, ["no <think>...</think> block"]
    parts: dict[str, str] = {}
    missing = []
    for p, open_tag, close_tag in _PART_TAGS:  # first_span, inlined: this loop is the parser's hot spot
        start = think.find(open_tag)
        end = -1 if start < 0 else think.find(close_tag, start + len(open_tag))
        if end < 0:
            missing.append(p)
        else:
            parts[p] = think[start + len(open_tag):end].strip()
    problems = [f"<think> lacks closed part(s): {', '.join(missing)}"] if missing else []
    return parts, problems


def release_format(text: str) -> tuple[bool, str | None, float | None, list[str]]:
    """The released reward's format gate (``cus_reward.py``): ``(valid, answer content, confidence, problems)``.

    Valid means: ``<think>``, ``<answer>`` and ``<confidence>`` pairs present (first matches, DOTALL), all five
    parts inside the think content, and the stripped confidence text parsing with ``float()`` to 0 < c < 1
    (so "1.0", "0", "85%" and "{0.8}" fail). The answer content is returned raw, as the reward receives it.
    """
    valid, answer, c, problems, _ = _release_gate(text)
    return valid, answer, c, problems


def _release_gate(text: str) -> tuple[bool, str | None, float | None, list[str], dict[str, str]]:
    reasoning, problems = _reasoning(text)
    answer = first_span(text, "<answer>", "</answer>")
    if answer is None:
        problems.append("no <answer>...</answer>")
    c: float | None = None
    conf_text = first_span(text, "<confidence>", "</confidence>")
    if conf_text is None:
        problems.append("no <confidence>...</confidence>")
    else:
        try:
            c = float(conf_text.strip())
        except ValueError:
            problems.append(f"confidence {_shown(conf_text)} is not a float")
        else:
            if not 0.0 < c < 1.0:
                problems.append(f"confidence {_shown(conf_text)} is not strictly between 0 and 1")
                c = None
    return not problems, answer, c, problems, reasoning


def _parse_strict(text: str, candidates: object, problems: list[str]) -> ParsedResponse:
    reasoning, reasoning_problems = _reasoning(text)
    problems += reasoning_problems
    label = None
    answer = last_span(text, "<answer>", "</answer>")
    if answer is None:
        problems.append("no <answer>...</answer>")
    else:
        answer = answer.strip()
        if not answer:
            problems.append("empty <answer>")
        else:
            label, why = match_label(answer, candidates)
            if why:
                problems.append(why)
    confidence = None
    raw = last_span(text, "<confidence>", "</confidence>")
    if raw is None:
        problems.append("no <confidence>...</confidence>")
    else:
        confidence, why = parse_confidence(raw)
        if why:
            problems.append(why)
    valid = not reasoning_problems and bool(answer) and confidence is not None
    return ParsedResponse(label, confidence, answer, reasoning, valid, tuple(problems))


def _parse_release(text: str, candidates: object, problems: list[str]) -> ParsedResponse:
    lowered = text.lower()
    answer = first_line_span(lowered, "<answer>", "</answer>")
    scanned = answer if answer else lowered
    label = next((c for c in _candidates(candidates).labels if c.lower() in scanned), None)
    if label is None:
        problems.append("no candidate found (the released evaluation predicts 'unknown')")
    confidence = None
    raw = first_line_span(text, "<confidence>", "</confidence>")
    if raw is None:
        problems.append("no <confidence>...</confidence> on one line")
    else:
        try:
            value = float(raw.replace("{", "").replace("}", ""))
        except ValueError:
            problems.append(f"confidence {_shown(raw)} is not a float (the release drops such rows)")
        else:
            if math.isnan(value):
                problems.append(f"confidence {_shown(raw)} is NaN")
            else:
                confidence = min(1.0, max(0.0, value))
    valid, _, _, gate_problems, reasoning = _release_gate(text)
    problems += [f"release format gate: {p}" for p in gate_problems]
    return ParsedResponse(label, confidence, answer, reasoning, valid, tuple(problems))


def parse_response(text: object, candidates: object = (), mode: str = "strict") -> ParsedResponse:
    """Parse one model response. Never raises on any ``text`` or ``candidates``; an unknown ``mode`` is a
    programming error and raises ``ValueError``.

    ``candidates`` is the record's label list in prompt order (strings; anything else is ignored).
    """
    if mode not in MODES:
        raise ValueError(f"unknown parse mode {mode!r}; use one of {MODES}")
    text, why = _as_text(text)
    problems = [why] if why else []
    try:
        if mode == "strict":
            return _parse_strict(text, candidates, problems)
        return _parse_release(text, candidates, problems)
    except Exception as exc:  # noqa: BLE001 -- a parser bug must not end a long evaluation; it is reported
        return ParsedResponse(problems=(f"internal parser error: {type(exc).__name__}: {exc}",))


def format_response(parsed: ParsedResponse) -> str:
    """The response text a :class:`ParsedResponse` stands for, in the training target's layout.

    ``parse_response(format_response(x), candidates) == x`` for every valid strict parse ``x`` whose confidence
    has at most two decimals (the granularity of :func:`emocaliber.prompts.format_confidence`).
    """
    reasoning = parsed.reasoning or {}
    answer = parsed.answer_text if parsed.answer_text is not None else parsed.label
    if all(p in reasoning for p in REASONING_PARTS):
        think: str = format_reasoning(reasoning)
    elif reasoning:
        think = "<think>" + "".join(f"<{p}>{reasoning[p]}</{p}>" for p in REASONING_PARTS if p in reasoning)
        think += "</think>"
    else:
        think = ""
    if answer is not None:
        return think + format_target(None, answer, parsed.confidence)
    if parsed.confidence is not None:
        return think + f"<confidence>{format_confidence(parsed.confidence)}</confidence>"
    return think

"""Training corpora: structured chain-of-thought from a teacher (stages 1-3) and stage-2 confidence targets.

Both builders first write every raw response to a samples file through :func:`emocaliber.resume.run_chunked`
(one row per record: ``{"id", "responses": [K texts], "error"}``) and only then derive their outputs from it.
A killed run therefore resumes where it stopped, and the derived files are the same bytes as an uninterrupted
run's; changing a filter, a pool split or a target definition re-derives them without sampling again.

CoT (``build_cot``): a teacher writes the five-part reasoning for each training record (K tries); a try is
kept when it parses (strict rules) with all five parts and an answer that is the gold label. Kept records are
split per task into stage-1 / stage-2 / stage-3 pools (the paper's 60/30/10).

Confidence targets (``build_confidence_targets``): the stage-1 model answers each stage-2 record K times and
the target is one of :data:`DEFINITIONS` (arithmetic in :func:`confidence_target`). The default, ``agreement``
without a prior, was chosen by measuring both against SynthEmo's oracle confidence
(:func:`compare_with_oracle`; answer-only stage-1 tiny model, 334 stage-2 records, K=16, temperature 1). Stage
1 trained 5 epochs: agreement mean absolute error 0.115 (bias -0.056), accuracy 0.170 (bias -0.128); on the
most ambiguous images (w in [0.55, 0.65)) oracle 0.57, agreement 0.62, accuracy 0.38: sampled accuracy is biased
low (a sample is right with probability sum_k q_k p_k, below the greedy answer's max_k p_k). Stage 1 trained 10
epochs (sharper answers): agreement 0.093 (+0.029), accuracy 0.142 (-0.051). Accuracy ranks images slightly
better in both (Pearson 0.57/0.56 vs 0.46/0.51: the gold label carries information), agreement inherits the
stage-1 model's own over- or under-confidence, and a Laplace prior did not help (it pulls toward 0.5 while most
targets are high). With the five-part reasoning (the demo), one temperature-1 sample in seven leaves the format;
agreement therefore counts only answered samples (bias -0.11 -> -0.01 against the oracle, Pearson 0.70 -> 0.79;
docs/demo.md). ``local_accuracy`` (:mod:`emocaliber.local_accuracy`) lets the gold labels calibrate the target;
the demo uses it, because agreement cannot see label ambiguity that the stage-1 model does not show (docs/demo.md
has the measurements).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from emocaliber.argtypes import float_pair, whole_number
from emocaliber.generation import GenerationBackend, SamplingSettings, record_request
from emocaliber.images import ImageLoadError
from emocaliber.locking import LockedError
from emocaliber.parsing import ParsedResponse, parse_response
from emocaliber.prompts import format_target
from emocaliber.records import REASONING_PARTS, Record, RecordError, iter_jsonl, write_jsonl
from emocaliber.resume import run_chunked

#: A responder turns a chunk of records and the chunk's seed into one samples row per record.
Responder = Callable[[list[Record], int], list[dict[str, Any]]]

#: The instruction shown to a model teacher with ``show_gold``.
GOLD_HINT = ("The correct answer is '{label}'. Reason from what is visible toward it, name it only in the "
             "analysis, and end with <answer>{label}</answer>.")
CONFIG_SUFFIX = ".config.json"


class CorpusError(ValueError):
    """A corpus build cannot go on as asked (mismatched resume, unusable records); the message says why."""


# ------------------------------------------------------------------------------------------------- responders

@dataclass
class BackendResponder:
    """K responses per record from a generation backend (a teacher model or the stage-1 model).

    An image that fails to load yields an error row instead of responses; the rest of the chunk goes on.
    ``constrained`` forces the output contract (a teacher then never loses a try to format; do not use it to
    sample confidence targets, since it changes the answer distribution being measured).
    """

    backend: GenerationBackend
    image_root: str | os.PathLike
    settings: SamplingSettings
    teacher: bool = False
    show_gold: bool = False
    with_confidence: bool = False
    constrained: bool = False

    def __call__(self, records: list[Record], seed: int) -> list[dict[str, Any]]:
        requests, errors = [], {}
        for i, r in enumerate(records):
            try:
                hint = GOLD_HINT.format(label=r.ground_truth) if self.show_gold else None
                requests.append(record_request(
                    r, image_root=self.image_root, with_confidence=self.with_confidence, teacher=self.teacher,
                    hint=hint, constrained=self.constrained))
            except ImageLoadError as e:
                errors[i] = str(e)
        texts = iter(self.backend.generate(requests, replace(self.settings, seed=seed)) if requests else [])
        rows = []
        for i, r in enumerate(records):
            responses = None if i in errors else list(next(texts))
            if responses is not None and len(responses) != self.settings.n:
                raise RuntimeError(f"backend returned {len(responses)} responses for {r.id!r}, "
                                   f"expected {self.settings.n}")
            rows.append(_row(r.id, responses, errors.get(i), "image_error"))
        return rows


@dataclass
class SynthEmoTeacher:
    """The rule-based SynthEmo teacher: reasoning from the image's generating parameters (``meta.mix``).

    Without ``show_gold`` it answers like a calibrated teacher sampled at temperature 1: each try draws its
    answer from the image's label distribution and the correctness filter keeps the record when a try names
    the gold label. That filter makes the kept labels *less* ambiguous than the data: with one try, an image
    whose likelier label has probability p keeps it as gold with probability p^2 / (p^2 + (1 - p)^2), 0.73
    instead of 0.62 for p = 0.62, so every pool (and the stage-3 reward) sees the confusable classes as easier
    than the test set is. With ``show_gold`` it answers the gold label and every record is kept with its
    label as drawn. Records without ``meta.mix`` get an error row.
    """

    samples: int = 1
    show_gold: bool = False
    name: str = "synthemo"

    def __call__(self, records: list[Record], seed: int) -> list[dict[str, Any]]:
        import numpy as np

        from emocaliber import synthemo
        from emocaliber.tasks import MIKELS_TO_POLARITY

        rows = []
        for r in records:
            mix = r.meta.get("mix")
            if not isinstance(mix, dict):
                why = f"record {r.id!r} has no meta.mix; the synthemo teacher needs SynthEmo records"
                rows.append(_row(r.id, None, why, "teacher_error"))
                continue
            sentiment = r.task_spec.is_sentiment
            responses = []
            for k in range(self.samples):
                rng = np.random.default_rng([seed, _stable_int(r.id), k])
                reasoning = synthemo.teacher_reasoning(mix, rng, sentiment=sentiment)
                if self.show_gold:
                    answer = r.ground_truth
                else:
                    answer = synthemo.draw_emotion(mix, float(r.meta.get("label_noise", 0.05)), rng)
                    answer = MIKELS_TO_POLARITY[answer] if sentiment else answer
                responses.append(format_target(reasoning, answer))
            rows.append(_row(r.id, responses))
        return rows


def read_input_records(path: str, *, strict: bool) -> tuple[list[Record], int]:
    """The input records of a corpus builder: with ``strict`` the first bad line raises; otherwise each bad line
    is reported on stderr as ``skipped: <file>:<line>: <why>`` and counted, and the rest is kept."""
    import sys

    from emocaliber.records import read_records

    errors: list[str] | None = None if strict else []
    records = read_records(path, errors=errors)
    for message in errors or []:
        print(f"skipped: {message}", file=sys.stderr)
    return records, len(errors or [])


def sampling_from_args(args: Any):
    """``SamplingSettings`` from the builders' shared --samples/--temperature/--top-p/--max-new-tokens/--seed."""
    from emocaliber.generation import SamplingSettings

    return SamplingSettings(n=args.samples, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, seed=args.seed)


def _row(record_id: str, responses: list[str] | None, error: str | None = None,
         kind: str = "image_error") -> dict[str, Any]:
    """One samples-file row; ``error_kind`` says why a record has no responses (counted as a drop reason)."""
    return {"id": record_id, "responses": responses, "error": error, "error_kind": kind if error else None}


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


# ----------------------------------------------------------------------------------------------- samples file

def collect_samples(
    records: Sequence[Record],
    responder: Responder,
    samples_path: str | os.PathLike,
    *,
    config: dict[str, Any],
    seed: int,
    chunk_size: int,
    overwrite: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run (or resume) ``responder`` over ``records`` into ``samples_path``; return its rows in record order.

    ``config`` (everything that decides the samples: model, K, temperature, seed, chunk size, the record ids)
    is stored beside the file; resuming with a different one raises :class:`CorpusError` instead of mixing
    runs.
    """
    from tqdm.auto import tqdm

    from emocaliber.fingerprint import model_fingerprint

    path = Path(samples_path)
    config_path = path.with_name(path.name + CONFIG_SUFFIX)
    model = config.get("model")
    if isinstance(model, str) and Path(model).is_dir():  # other weights at the same path are another run
        config = {**config, "model_sha256": model_fingerprint(model)["sha256"]}
    config = json.loads(json.dumps({  # JSON round trip: compares equal to what a resumed run reads back
        **config, "seed": seed, "chunk_size": chunk_size,
        "records_sha256": hashlib.sha256("\n".join(r.id for r in records).encode()).hexdigest()}))
    if path.exists() and not overwrite:
        try:
            previous = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous != config:
            changed = sorted(k for k in config if previous is None or previous.get(k) != config[k])
            raise CorpusError(f"{path} was written by a run with other settings (differs in: {changed}); run "
                              "the same command to resume, or pass --overwrite to start again")
    path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    with tqdm(total=len(records), desc="sampling", unit="item", disable=not progress) as bar:
        try:
            run_chunked(list(records), path, responder, chunk_size=chunk_size, seed=seed, overwrite=overwrite,
                        progress=bar.update)
        except LockedError as e:  # another build is appending to the same samples file
            raise CorpusError(str(e)) from None
    # Line by line, not str.splitlines(): a response may hold U+2028 or U+0085, which JSON leaves unescaped.
    rows = [row for _, row in iter_jsonl(path)]
    for r, row in zip(records, rows):
        if row["id"] != r.id:
            raise CorpusError(f"{path}: row for {row['id']!r} where {r.id!r} was expected; pass --overwrite")
    return rows


# ------------------------------------------------------------------------------------------------- CoT corpus

COT_REASONS = ("image_error", "teacher_error", "invalid_format", "not_a_candidate", "wrong_answer")


def judge_cot(text: str | None, record: Record) -> tuple[str, dict[str, str] | None]:
    """``("kept", reasoning)`` or ``(reason, None)`` for one teacher response.

    Kept: a think block with all five parts non-empty, an answer naming exactly one candidate, and that
    candidate is the gold label (strict parsing; a confidence is neither needed nor used for stage 1).
    """
    parsed = parse_response(text, record.candidates, mode="strict")
    flaw = _cot_flaw(parsed)
    if flaw:
        return flaw, None
    if parsed.label != record.ground_truth:
        return "wrong_answer", None
    return "kept", dict(parsed.reasoning)


def _cot_flaw(parsed: ParsedResponse) -> str | None:
    """Why a parsed response is no usable five-part CoT with a candidate answer (a COT_REASONS entry), or None."""
    parts = parsed.reasoning
    if len(parts) != len(REASONING_PARTS) or not all(parts.values()) or not parsed.answer_text:
        return "invalid_format"
    if parsed.label is None:
        return "not_a_candidate"
    return None


def split_pools(records: Sequence[Record], fractions: Sequence[float], seed: int) -> list[list[Record]]:
    """A seeded shuffle of the images cut into ``len(fractions)`` pools by largest remainder; input order kept
    within each pool.

    An image goes to one pool with all its records: tasks that share images (FI-8 and FI-2, SynthEmo-8 and
    SynthEmo-2) would otherwise put an image the stage-1 model trained on among the stage-2 or stage-3 items.
    Images are cut per set of tasks they carry, so every task gets the same proportions, as in VEC-CoT; where
    each image has one task, this is a per-task split."""
    if not fractions or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"pool fractions must be non-negative and sum to 1, got {list(fractions)}")
    position = {id(r): i for i, r in enumerate(records)}
    by_image: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_image[r.image].append(r)
    by_tasks: dict[str, list[str]] = defaultdict(list)  # "+"-joined task set -> its images, in input order
    for image, rs in by_image.items():
        by_tasks["+".join(sorted({r.task for r in rs}))].append(image)
    pools: list[list[Record]] = [[] for _ in fractions]
    for tasks in sorted(by_tasks):
        images = list(by_tasks[tasks])
        random.Random(f"{seed}/{tasks}").shuffle(images)
        sizes = _largest_remainder(len(images), fractions)
        lo = 0
        for pool, size in zip(pools, sizes):
            pool.extend(r for image in images[lo: lo + size] for r in by_image[image])
            lo += size
    return [sorted(p, key=lambda r: position[id(r)]) for p in pools]


def _largest_remainder(n: int, fractions: Sequence[float]) -> list[int]:
    exact = [n * f for f in fractions]
    sizes = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in by_remainder[: n - sum(sizes)]:
        sizes[i] += 1
    return sizes


def build_cot(
    records: Sequence[Record],
    responder: Responder,
    out_dir: str | os.PathLike,
    *,
    pools: Sequence[float] = (0.6, 0.3, 0.1),
    seed: int = 0,
    chunk_size: int = 64,
    config: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    skipped_lines: int = 0,
) -> dict[str, Any]:
    """Teacher responses -> stage1.jsonl, stage2_pool.jsonl, stage3.jsonl and summary.json/md in ``out_dir``.

    The first kept try of a record is used. A dropped record's reason is the best any of its tries reached
    (wrong_answer over not_a_candidate over invalid_format). Stage-3 records carry no reasoning (GRPO needs
    the prompt and the label only). Returns the summary.
    """
    if len(pools) != 3:
        raise ValueError(f"--pools needs three fractions (stage 1, stage 2, stage 3), got {list(pools)}")
    out = Path(out_dir)
    rows = collect_samples(records, responder, out / "teacher_samples.jsonl", config=dict(config or {}),
                           seed=seed, chunk_size=chunk_size, overwrite=overwrite, progress=progress)
    kept: list[Record] = []
    per_task: dict[str, Counter] = defaultdict(Counter)
    tries: Counter = Counter()
    for record, row in zip(records, rows):
        counts = per_task[record.task]
        counts["records"] += 1
        if row["error"] is not None:
            counts[row["error_kind"]] += 1
            continue
        verdicts = [judge_cot(text, record) for text in row["responses"]]
        tries.update(v for v, _ in verdicts)
        reasoning = next((r for v, r in verdicts if v == "kept"), None)
        if reasoning is None:
            counts[max((v for v, _ in verdicts), key=COT_REASONS.index, default="invalid_format")] += 1
            continue
        counts["kept"] += 1
        kept.append(Record.from_dict({**record.to_dict(), "reasoning": reasoning}))
    stage1, stage2, stage3 = split_pools(kept, pools, seed)
    stage3 = [replace(r, reasoning=None) for r in stage3]
    for name, pool in (("stage1", stage1), ("stage2_pool", stage2), ("stage3", stage3)):
        write_jsonl(out / f"{name}.jsonl", pool)
        for r in pool:
            per_task[r.task][name] += 1
    summary = _cot_summary(per_task, tries, config or {}, pools, seed, skipped_lines)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(_cot_markdown(summary), encoding="utf-8")
    return summary


def _cot_summary(per_task: dict[str, Counter], tries: Counter, config: dict[str, Any], pools: Sequence[float],
                 seed: int, skipped_lines: int) -> dict[str, Any]:
    columns = ("records", "kept", *COT_REASONS, "stage1", "stage2_pool", "stage3")
    tasks = {t: {c: per_task[t][c] for c in columns} for t in sorted(per_task)}
    total = {c: sum(t[c] for t in tasks.values()) for c in columns}
    return {"config": config, "pools": list(pools), "seed": seed, "skipped_lines": skipped_lines,
            "total": total, "dropped": {c: total[c] for c in COT_REASONS}, "per_task": tasks,
            "tries": {k: tries[k] for k in ("kept", *COT_REASONS[2:])}}


def _cot_markdown(summary: dict[str, Any]) -> str:
    cols = ("records", "kept", *COT_REASONS, "stage1", "stage2_pool", "stage3")
    cfg = summary["config"]
    header = (f"Teacher: `{cfg.get('teacher', '?')}`, gold shown: {cfg.get('show_gold', '?')}, tries per "
              f"record: {cfg.get('samples', '?')}, pools {summary['pools']}, seed {summary['seed']}, skipped "
              f"input lines {summary['skipped_lines']}.")
    lines = ["# CoT corpus build", "", header, "",
             "| task | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in [*summary["per_task"].items(), ("**total**", summary["total"])]:
        lines.append(f"| {name} | " + " | ".join(str(row[c]) for c in cols) + " |")
    lines += ["", "Tries (all responses): " + ", ".join(f"{k} {v}" for k, v in summary["tries"].items()), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- confidence

#: ``agreement`` and ``accuracy`` are computed per record (:func:`confidence_target`); ``local_accuracy`` over
#: neighbouring records (:mod:`emocaliber.local_accuracy`).
DEFINITIONS = ("agreement", "accuracy", "local_accuracy")
PER_RECORD = DEFINITIONS[:2]
MISMATCH_POLICIES = ("keep", "drop")


@dataclass(frozen=True)
class SampleCounts:
    """What K sampled answers say about one record: ``answered`` of them name a candidate, ``correct`` name
    the gold label, and ``agree`` name the ``majority`` answer (ties go to the earlier candidate)."""

    samples: int
    answered: int
    correct: int
    majority: str | None
    agree: int


def count_samples(responses: Sequence[str | None], record: Record) -> SampleCounts:
    """Labels by the strict label rule; a response without a usable answer counts in K but for no label."""
    labels = [parse_response(t, record.candidates, mode="strict").label for t in responses]
    votes = Counter(label for label in labels if label is not None)
    majority = max(votes, key=lambda c: (votes[c], -record.candidates.index(c)), default=None)
    return SampleCounts(len(labels), sum(votes.values()), votes[record.ground_truth], majority,
                        votes[majority] if majority else 0)


def confidence_target(
    counts: SampleCounts,
    definition: str = "agreement",
    *,
    prior: tuple[float, float] = (0.0, 0.0),
    clip: tuple[float, float] = (0.05, 0.95),
) -> float:
    """A per-record stage-2 target: (k + a) / (n + a + b), clipped and rounded by :func:`finish_target`.

    ``agreement``: k = ``counts.agree`` of n = ``counts.answered``, how often the model gives its own majority
    answer when it gives one, an estimate of the probability that the answer it will state is right. Samples
    without an answer are left out because they say nothing about that answer: at temperature 1 a 90-token
    reasoning drifts out of format in about one sample in seven (SynthEmo demo), while the answer the model
    states at evaluation is well-formed; counting them as disagreement put the targets 0.11 below the oracle
    confidence (0.01 without them). ``accuracy``: k = ``counts.correct`` of n = K, how often a sample is right,
    an unanswered one counting as wrong (the sampled-decoding reading); for an ambiguous image this sits below
    the majority answer's chance of being right. ``prior=(a, b)`` is a Beta(a, b) pseudo-count prior for small
    K; (1, 1) is Laplace's rule.
    """
    if definition not in PER_RECORD:
        raise ValueError(f"definition must be one of {PER_RECORD}, got {definition!r}")
    a, b = prior
    k, n = (counts.agree, counts.answered) if definition == "agreement" else (counts.correct, counts.samples)
    if a < 0 or b < 0 or n + a + b <= 0:
        raise ValueError(f"prior pseudo-counts must be >= 0 with n + a + b > 0, got {prior} for n = {n}")
    return finish_target((k + a) / (n + a + b), clip)


def finish_target(raw: float, clip: tuple[float, float] = (0.05, 0.95)) -> float:
    """``raw`` clipped into ``clip`` and rounded half-up to two decimals."""
    lo, hi = clip
    # On the two-decimal grid, so that rounding keeps a target inside the bounds and inside (0, 1).
    if not (0.01 <= lo <= hi <= 0.99 and round_half_up(lo) == lo and round_half_up(hi) == hi):
        raise ValueError(f"clip bounds must be two-decimal values with 0.01 <= low <= high <= 0.99, got {clip}")
    return round_half_up(min(hi, max(lo, raw)))


def answered_reasoning(responses: Sequence[str | None], record: Record) -> str:
    """The reasoning of the samples that name a candidate, joined: what the model wrote about the image."""
    parsed = (parse_response(t, record.candidates, mode="strict") for t in responses)
    return " ".join(" ".join(p.reasoning.values()) for p in parsed if p.label is not None)


def round_half_up(x: float) -> float:
    """Two decimals, halves up (0.625 -> 0.63), from the shortest decimal form of ``x``."""
    return float(Decimal(repr(float(x))).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def build_confidence_targets(
    records: Sequence[Record],
    responder: Responder,
    out_path: str | os.PathLike,
    *,
    definition: str = "agreement",
    mismatch: str = "keep",
    prior: tuple[float, float] = (0.0, 0.0),
    clip: tuple[float, float] = (0.05, 0.95),
    neighbours: int = 25,
    seed: int = 0,
    chunk_size: int = 64,
    samples_path: str | os.PathLike | None = None,
    config: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    skipped_lines: int = 0,
    own_responder: Responder | None = None,
) -> dict[str, Any]:
    """Sample (or resume), then write ``out_path``: the records with ``confidence`` set, answer and reasoning
    unchanged (the gold label and the teacher's reasoning for it).

    ``own_responder`` (the stage-1 model decoding greedily) replaces each record's answer and reasoning with its
    response (``Record.answer``; the ground truth stays), so that stage 2 learns a confidence for the text the
    model itself writes. With the teacher's text, stage 2 of the SynthEmo demo also learned its small pool's
    label draws (accuracy moved by up to 5 points against stage 1) and a confidence for reasoning the model does
    not write (docs/demo.md). Its raw responses go to ``<out stem>.own.jsonl`` (resumable like the samples);
    a record whose response lacks a reasoning part or an answer is dropped and counted.

    ``mismatch`` decides records whose majority answer is not the gold label under ``agreement``: ``keep``
    them (the target is how sure the model is of the answer it will give for this image) or ``drop`` them
    (only records where trained answer, reasoning and the counted answer coincide). ``local_accuracy`` is the
    share of right answers among the record's ``neighbours`` nearest records of its task (the greedy answer the
    record states with ``own_responder``, else the samples' majority answer)
    (:mod:`emocaliber.local_accuracy`). Records without an image are dropped, and so are records none of whose
    samples names a candidate under ``agreement`` and ``local_accuracy`` (under ``accuracy`` they score 0 of
    K). ``meta.confidence_samples`` keeps the counts so other definitions can be derived. Writes
    ``<out>.summary.json`` (counts, target histogram, and the comparison with ``meta.oracle_confidence`` when
    the records have it). Returns that summary.
    """
    if mismatch not in MISMATCH_POLICIES:
        raise ValueError(f"mismatch must be one of {MISMATCH_POLICIES}, got {mismatch!r}")
    if definition == "local_accuracy":
        if neighbours < 1 or mismatch != "keep" or tuple(prior) != (0.0, 0.0):
            raise ValueError(f"local_accuracy needs neighbours >= 1 (got {neighbours}), mismatch 'keep' (got "
                             f"{mismatch!r}; dropping wrong majorities would make every neighbour right) and "
                             f"no prior (got {tuple(prior)})")
        finish_target(0.5, clip)  # validate early
    else:
        confidence_target(SampleCounts(1, 1, 1, None, 1), definition, prior=prior, clip=clip)
    out = Path(out_path)
    samples_path = Path(samples_path) if samples_path else out.with_name(out.stem + ".samples.jsonl")
    rows = collect_samples(records, responder, samples_path, config=dict(config or {}), seed=seed,
                           chunk_size=chunk_size, overwrite=overwrite, progress=progress)
    own = (collect_samples(records, own_responder, out.with_name(out.stem + ".own.jsonl"),
                           config={**(config or {}), "responses": "own", "samples": 1, "temperature": 0.0},
                           seed=seed, chunk_size=chunk_size, overwrite=overwrite, progress=progress)
           if own_responder is not None else [None] * len(records))
    kept, dropped, all_counts = [], Counter(), []
    for record, row, own_row in zip(records, rows, own):
        if row["error"] is not None:
            dropped[row["error_kind"]] += 1
            continue
        if own_row is not None:
            if own_row["error"] is not None:
                dropped[own_row["error_kind"]] += 1
                continue
            parsed = parse_response(own_row["responses"][0], record.candidates, mode="strict")
            if _cot_flaw(parsed):  # the same rule as a teacher's CoT
                dropped["own_response_out_of_format"] += 1
                continue
            record = replace(record, reasoning={part: parsed.reasoning[part] for part in REASONING_PARTS},
                             answer=parsed.label)
        counts = count_samples(row["responses"], record)
        all_counts.append((record, counts))
        if counts.answered == 0 and definition != "accuracy":
            dropped["no_answer_in_samples"] += 1  # nothing to agree with; under accuracy it is just 0 of K
            continue
        if definition == "agreement" and mismatch == "drop" and counts.majority != record.ground_truth:
            dropped["majority_not_gold"] += 1
            continue
        kept.append((record, counts, row["responses"]))
    if definition == "local_accuracy":
        from emocaliber.local_accuracy import local_accuracy

        # The target is the chance that the answer the record states is right: with the model's own responses
        # that is its greedy answer, not the samples' majority (temperature 1), which on images the stage-1 model
        # has not seen is right far less often than the greedy answer. With the teacher's text, the majority
        # stands in for the answer the model would give.
        right = ([r.states_ground_truth for r, _, _ in kept] if own_responder is not None
                 else [c.majority == r.ground_truth for r, c, _ in kept])
        raw = local_accuracy(right,
                             [answered_reasoning(responses, r) for r, _, responses in kept],
                             [r.task for r, _, _ in kept], neighbours)
        targets = [finish_target(x, clip) for x in raw]
    else:
        targets = [confidence_target(c, definition, prior=prior, clip=clip) for _, c, _ in kept]
    written = [replace(record, confidence=target, meta={**record.meta, "confidence_samples": {
        "K": counts.samples, "answered": counts.answered, "correct": counts.correct, "majority": counts.majority,
        "agree": counts.agree}}) for (record, counts, _), target in zip(kept, targets)]
    write_jsonl(out, written)
    summary = {
        "config": {**(config or {}), "definition": definition, "mismatch": mismatch, "prior": list(prior),
                   "clip": list(clip), "seed": seed, "responses": "teacher" if own_responder is None else "own",
                   **({"neighbours": neighbours} if definition == "local_accuracy" else {})},
        "records": len(records), "written": len(written), "dropped": dict(sorted(dropped.items())),
        "skipped_lines": skipped_lines,
        "majority_is_gold": _fraction([c.majority == r.ground_truth for r, c in all_counts]),
        "answer_is_gold": _fraction([r.states_ground_truth for r in written]),
        "mean_target": _mean([r.confidence for r in written]),
        "targets": dict(sorted(Counter(f"{r.confidence:.2f}" for r in written).items())),
    }
    if any("oracle_confidence" in r.meta for r, _ in all_counts):
        summary["oracle_comparison"] = compare_with_oracle(all_counts, clip=clip)
        if definition == "local_accuracy":
            summary["oracle_comparison"][f"local_accuracy ({neighbours} neighbours)"] = _against_oracle(
                [(r.confidence, r.meta["oracle_confidence"]) for r in written if "oracle_confidence" in r.meta])
    out.with_name(out.stem + ".summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n",
                                                         encoding="utf-8")
    return summary


def compare_with_oracle(
    counted: Sequence[tuple[Record, SampleCounts]],
    *,
    priors: Sequence[tuple[float, float]] = ((0.0, 0.0), (1.0, 1.0)),
    clip: tuple[float, float] = (0.05, 0.95),
) -> dict[str, dict[str, float]]:
    """How close each target definition comes to the truth, on records with ``meta.oracle_confidence``.

    The oracle confidence is the chance that the best possible answer is right, so the target a calibrated
    stage-2 model should learn for its (greedy) answer. For each definition x prior (and ``agreement`` on the
    records ``mismatch="drop"`` keeps), reports Pearson correlation, mean absolute error and mean signed error
    (target - oracle), with the mean target and oracle.
    """
    usable = [(r, c) for r, c in counted if "oracle_confidence" in r.meta and c.answered > 0]
    variants: dict[str, tuple[str, tuple[float, float], bool]] = {}
    for a, b in priors:
        suffix = "" if (a, b) == (0.0, 0.0) else f" prior({a:g},{b:g})"
        for definition in PER_RECORD:
            variants[definition + suffix] = (definition, (a, b), False)
        variants["agreement, majority=gold only" + suffix] = ("agreement", (a, b), True)
    result = {}
    for name, (definition, prior, only_gold) in variants.items():
        pairs = [(confidence_target(c, definition, prior=prior, clip=clip), r.meta["oracle_confidence"])
                 for r, c in usable if not only_gold or c.majority == r.ground_truth]
        if pairs:
            result[name] = _against_oracle(pairs)
    return result


def _against_oracle(pairs: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Pearson, mean absolute and mean signed error of (target, oracle) pairs, with both means."""
    import numpy as np

    t, o = np.array(pairs, dtype=float).T
    corr = float(np.corrcoef(t, o)[0, 1]) if len(t) > 1 and t.std() > 0 and o.std() > 0 else float("nan")
    return {"n": len(t), "pearson": corr, "mae": float(np.abs(t - o).mean()), "bias": float((t - o).mean()),
            "mean_target": float(t.mean()), "mean_oracle": float(o.mean())}


def _mean(xs: Sequence[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def _fraction(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


# ------------------------------------------------------------------ command line (build_cot.py)
COT_HELP = """Build the structured chain-of-thought corpus (VEC-CoT style) from training records.

A teacher writes the five-part reasoning (<element>, <human>, <context>, <interaction>, <analysis>) and an
answer for each record, shown the image and the candidates (and the gold label with --show-gold), with
--samples tries per record. A try is kept when it parses (strict rules) with all five parts and its answer is
the gold label. Kept records are split by image into three pools (default 60/30/10 of each task, seeded; an
image shared by two tasks goes to one pool), written to --out:

  stage1.jsonl       records with reasoning: the stage-1 SFT corpus
  stage2_pool.jsonl  records with reasoning: input of build_confidence_targets.py (stage 2)
  stage3.jsonl       records without reasoning: the stage-3 GRPO prompts
  summary.json/.md   kept and dropped counts by reason and per task
  teacher_samples.jsonl  every raw teacher response; a killed run resumes from it (same command again)

--teacher is a local checkpoint directory or hub id (generated through emocaliber.generation: vLLM on a GPU,
transformers elsewhere), or 'synthemo' for SynthEmo's rule-based teacher (no model needed).

Example: python data_prep/build_cot.py --records data/synthemo/train.jsonl --image-root data/synthemo \\
             --out data/synthemo/cot --teacher synthemo --samples 4
"""


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three fractions like 0.6,0.3,0.1, got {text!r}") from None


def build_cot_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from emocaliber.generation import add_backend_arguments

    p = argparse.ArgumentParser(prog=prog, description=COT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", required=True, help="training records (JSONL)")
    p.add_argument("--image-root", required=True, help="directory the records' image paths are relative to")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--teacher", default="synthemo", help="checkpoint path, hub id, or 'synthemo' (default)")
    p.add_argument("--show-gold", action="store_true", help="tell the teacher the gold label")
    p.add_argument("--constrained", action="store_true",
                   help="model teacher: force the output format with a regex (needs xgrammar without vLLM)")
    p.add_argument("--samples", type=int, default=1, help="tries per record (default 1)")
    p.add_argument("--pools", type=_fractions, default=(0.6, 0.3, 0.1),
                   help="stage-1,stage-2,stage-3 fractions of each task's kept records (default 0.6,0.3,0.1)")
    p.add_argument("--seed", type=int, default=0, help="seeds sampling and the pool split (default 0)")
    p.add_argument("--temperature", type=float, default=0.7,
                   help="model teacher: sampling temperature (0 = greedy; default 0.7)")
    p.add_argument("--top-p", type=float, default=1.0, help="model teacher: nucleus sampling (default 1.0)")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="model teacher: response length (default 1024)")
    p.add_argument("--chunk-size", type=int, default=64, help="records per resumable chunk (default 64)")
    p.add_argument("--overwrite", action="store_true", help="discard teacher_samples.jsonl and start again")
    p.add_argument("--strict", action="store_true", help="stop at the first bad input line, do not skip it")
    add_backend_arguments(p)
    return p


def cot_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``emocaliber prepare cot`` (``data_prep/build_cot.py``)."""
    from emocaliber.generation import backend_from_args
    from emocaliber.modeling import ModelNotFoundError

    parser = build_cot_parser(prog)
    args = parser.parse_args(argv)
    if args.teacher == "synthemo":  # it draws each answer from the image's label distribution, and samples nothing
        ignored = [f"--{name.replace('_', '-')}" for name in ("temperature", "top_p", "max_new_tokens", "constrained")
                   if getattr(args, name) != parser.get_default(name)]
        if ignored:
            parser.error(f"{', '.join(ignored)} set the sampling of a model teacher; the synthemo teacher draws "
                         "each answer from the image's label distribution, so leave them out")
    try:
        records, n_skipped = read_input_records(args.records, strict=args.strict)
        settings = sampling_from_args(args)
        if args.teacher == "synthemo":
            responder = SynthEmoTeacher(samples=args.samples, show_gold=args.show_gold)
        else:
            backend = backend_from_args(args.teacher, args, progress=False)
            responder = BackendResponder(backend, args.image_root, settings, teacher=True,
                                         show_gold=args.show_gold, constrained=args.constrained)
        config = {"teacher": args.teacher, "show_gold": args.show_gold, "samples": args.samples,
                  "constrained": args.constrained,
                  "temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens}
        summary = build_cot(records, responder, args.out, pools=args.pools, seed=args.seed,
                            chunk_size=args.chunk_size, config=config, overwrite=args.overwrite,
                            skipped_lines=n_skipped)
    except (CorpusError, RecordError, ModelNotFoundError, FileNotFoundError, ValueError) as e:
        print(f"build_cot: error: {e}", file=sys.stderr)
        return 1
    total = summary["total"]
    print(f"kept {total['kept']} of {total['records']} records; stage1 {total['stage1']}, "
          f"stage2_pool {total['stage2_pool']}, stage3 {total['stage3']}; dropped {summary['dropped']}; "
          f"see {args.out}/summary.md")
    return 0


# --------------------------------------------------- command line (build_confidence_targets.py)
TARGETS_HELP = """Give each stage-2 record a confidence target by sampling the stage-1 (scaffold) model K times per image.

Definitions (--target):
  agreement  (default) fraction of the answered samples that give the model's majority answer: how often the
             model says the answer it will state, an estimate of that answer's chance of being right. Samples
             without an answer (out of format) say nothing about that answer and are left out.
  accuracy   fraction of the K samples whose answer is the gold label. For an ambiguous image this sits below
             the chance that the model's own (greedy) answer is right, so targets come out low.
  local_accuracy
             fraction of right answers (the greedy answer with --responses own, else the samples' majority
             answer) among the --neighbours records of the same task whose
             samples' reasoning reads most alike (TF-IDF, cosine), the record included. The gold labels
             calibrate it, so it sees ambiguity that the model answers consistently and agreement misses
             (emocaliber/local_accuracy.py).
Agreement and accuracy are (k + a) / (n + a + b), n the answered samples (K under accuracy), with the Beta
prior --prior a,b (default 0,0: none; 1,1 is Laplace). Every target is clipped into --clip (default
0.05,0.95) and rounded half-up to two decimals. The records' answers and reasoning stay as they are (gold
label, teacher reasoning) unless --responses own: then they are the stage-1 model's greedy response (its own
answer in the record's `answer` field; the gold label stays), so stage 2 learns a confidence for what the model
writes rather than the teacher's text (the demo; docs/demo.md). --mismatch drop leaves out records whose
majority answer is not the gold label (under agreement). Records whose image fails, (except under accuracy)
whose K samples name no candidate, or (with --responses own) whose greedy response is out of format are dropped
and counted.

Raw samples go to --samples-file (default <out stem>.samples.jsonl) as they are produced; run the same command
again after an interruption to continue; the targets file is derived from it and ends byte-identical.
<out stem>.summary.json holds counts, the target histogram and, for SynthEmo records, how close each
definition comes to meta.oracle_confidence.

Example: python data_prep/build_confidence_targets.py --model runs/stage1 --data data/cot/stage2_pool.jsonl \\
             --image-root data/synthemo --samples 8 --out data/cot/stage2.jsonl
"""


def build_targets_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from emocaliber.generation import add_backend_arguments

    p = argparse.ArgumentParser(prog=prog, description=TARGETS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="stage-1 checkpoint (path or hub id)")
    p.add_argument("--data", required=True, help="stage-2 pool records, e.g. build_cot's stage2_pool.jsonl")
    p.add_argument("--image-root", required=True, help="directory the records' image paths are relative to")
    p.add_argument("--out", required=True, help="output records file (JSONL) with confidence targets")
    p.add_argument("--samples", type=int, default=8, help="K, samples per image (default 8)")
    p.add_argument("--target", choices=DEFINITIONS, default="agreement", help="target definition (see above)")
    p.add_argument("--mismatch", choices=MISMATCH_POLICIES, default="keep",
                   help="agreement: keep or drop records whose majority answer is not the gold label")
    p.add_argument("--responses", choices=("teacher", "own"), default="teacher",
                   help="answer and reasoning of the written records: the input's (teacher) or the model's greedy "
                        "response (own; written to <out stem>.own.jsonl first)")
    p.add_argument("--prior", "--smoothing", type=float_pair("1,1"), default=(0.0, 0.0), metavar="A,B",
                   help="Beta prior pseudo-counts (default 0,0 = none)")
    p.add_argument("--clip", type=float_pair("0.05,0.95"), default=(0.05, 0.95), metavar="LO,HI", help="default 0.05,0.95")
    p.add_argument("--neighbours", type=whole_number(1), default=25, metavar="N",
                   help="local_accuracy: records per neighbourhood (default 25)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-size", type=int, default=64, help="records per resumable chunk (default 64)")
    p.add_argument("--samples-file", default=None, help="raw samples (default <out stem>.samples.jsonl)")
    p.add_argument("--overwrite", action="store_true", help="discard existing samples and start again")
    p.add_argument("--strict", action="store_true", help="stop at the first bad input line, do not skip it")
    add_backend_arguments(p)
    return p


def targets_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``emocaliber prepare targets`` (``data_prep/build_confidence_targets.py``)."""
    from emocaliber.generation import backend_from_args
    from emocaliber.modeling import ModelNotFoundError

    args = build_targets_parser(prog).parse_args(argv)
    try:
        records, n_skipped = read_input_records(args.data, strict=args.strict)
        settings = sampling_from_args(args)
        backend = backend_from_args(args.model, args, progress=False)
        responder = BackendResponder(backend, args.image_root, settings)
        own = (BackendResponder(backend, args.image_root, replace(settings, n=1, temperature=0.0))
               if args.responses == "own" else None)
        config = {"model": args.model, "samples": args.samples, "temperature": args.temperature,
                  "top_p": args.top_p, "max_new_tokens": args.max_new_tokens, "backend": args.backend,
                  "batch_size": args.batch_size}
        summary = build_confidence_targets(
            records, responder, args.out, definition=args.target, mismatch=args.mismatch, prior=args.prior,
            clip=args.clip, neighbours=args.neighbours, seed=args.seed, chunk_size=args.chunk_size,
            samples_path=args.samples_file, config=config, overwrite=args.overwrite, skipped_lines=n_skipped,
            own_responder=own)
    except (CorpusError, RecordError, ModelNotFoundError, FileNotFoundError, ValueError) as e:
        print(f"build_confidence_targets: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {summary['written']} of {summary['records']} records to {args.out} "
          f"(mean target {summary['mean_target']}); dropped {summary['dropped']}")
    return 0

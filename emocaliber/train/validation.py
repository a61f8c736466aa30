"""Validation during GRPO, and the choice of the checkpoint stage 3 hands on.

Why: GRPO on a calibration reward moves the stated confidence back and forth between checkpoints, and whether a
run ends better or worse than its start is a draw. So stage 3 validates on held-out prompts as it trains and
keeps the checkpoint that validates best, with the starting model (step 0, the stage-2 checkpoint) always among
the candidates: the selected model is never worse than its start on validation.

* **Validation** (:class:`ValidationCallback`): at step 0, before any update, then every ``eval_steps`` and at
  the last step, the policy answers every validation prompt greedily. The prompts are exactly what
  ``eval/run_vecbench.py`` asks (:func:`emocaliber.evaluation.eval_request`), the responses go through the
  evaluation's own parsing and metrics (:func:`emocaliber.report.evaluate_predictions`, strict mode, no
  bootstrap), so a validation figure is what an evaluation of that checkpoint on the same file would report.
  Per group: accuracy, parse rate (full strict format), confidence rate, mean confidence, ECE (10 bins), Brier
  score, log loss (NLL) and failure-prediction AUROC. They are logged through the trainer (``val/<group>/<metric>``, so
  ``report_to`` trackers get them) and appended to ``output_dir/validation.jsonl``.
* **Under several processes** each process answers its own share of the prompts (:func:`emocaliber.generation.
  shard`) and the rows are gathered, so every process computes the same figures and the same choice (the
  trainer's checkpoint bookkeeping waits on all processes and must agree).
* **Selection** (:func:`select_checkpoint`, a pure function of the validation table): the score is a strictly
  proper scoring rule (Brier or log loss) averaged over the groups; ECE alone is not proper (a constant
  confidence equal to the accuracy has ECE 0). A candidate is eligible only if every group's accuracy is within
  ``select_accuracy_margin`` of step 0's and every group's parse rate is at least ``select_min_parse_rate``
  (optionally, no group's score more than ``select_score_margin`` above step 0's); step 0 is always eligible,
  and a later step replaces the best only with a strictly lower score. The best step is kept in the trainer's
  ``best_global_step``, so ``save_total_limit`` never deletes its checkpoint.
* **The final directory** (:func:`install_selected`) holds the selected weights: the last step's as saved, a
  ``checkpoint-N``'s copied over them, or the starting model's when step 0 wins. Its model card and
  ``emocaliber_training.json`` carry the table and the reason (:func:`selection_markdown`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from emocaliber.records import Record, RecordError, resolve_image
from emocaliber.train.configs import ConfigError

logger = logging.getLogger(__name__)

#: The validation table beside the checkpoints: one JSON object per validated step.
VAL_LOG = "validation.jsonl"
SELECT_METRICS = ("brier", "nll", "none")
#: Metrics kept per group: our name -> key in the evaluation's pooled metrics (``emocaliber.metrics``).
_POOLED = {"accuracy": "accuracy", "confidence_rate": "confidence_rate", "mean_confidence": "mean_confidence",
           "ece": "ece_10", "brier": "brier", "nll": "nll", "auroc": "auroc"}
GROUP_METRICS = ("n", "accuracy", "parse_rate", "confidence_rate", "mean_confidence", "ece", "brier", "nll", "auroc")
#: Files that make up a checkpoint's weights; everything else (processor, card) is shared by every candidate.
_WEIGHT_FILES = ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
                 "adapter_config.json", "adapter_model.safetensors")
_WEIGHT_GLOBS = ("model-*-of-*.safetensors",)
_SHOWN = 5


@dataclass
class ValidationArgs:
    """Validation during GRPO and checkpoint selection (stage 3). Off unless ``val_file`` is set."""

    val_file: str | None = field(
        default=None, metadata={"help": "Held-out validation records (JSON Lines, images under image_root) answered "
                                        "greedily at step 0, every eval_steps and at the last step. No image may "
                                        "also be in train_file. Null: no validation, the last step is kept."})
    val_max_samples: int | None = field(
        default=None, metadata={"help": "Use N records spread evenly over val_file (every k-th, so a file sorted "
                                        "by task keeps its mix); bounds each validation pass's cost."})
    val_batch_size: int = field(default=16, metadata={"help": "Prompts per generation batch (per process)."})
    val_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Token budget of a validation answer (default: max_completion_length)."})
    select_metric: str = field(
        default="brier", metadata={"help": "Strictly proper score, averaged over groups, that picks the checkpoint "
                                           "kept in output_dir: brier or nll (log loss); none keeps the last step."})
    select_accuracy_margin: float = field(
        default=0.01, metadata={"help": "A checkpoint is eligible only if every group's validation accuracy is at "
                                        "least step 0's minus this (a fraction: 0.01 = 1 point)."})
    select_min_parse_rate: float = field(
        default=0.95, metadata={"help": "A checkpoint is eligible only if every group's parse rate (full strict "
                                        "format) is at least this. Step 0 is always eligible."})
    select_score_margin: float | None = field(
        default=0.0, metadata={"help": "A checkpoint is eligible only if no group's score is more than this above "
                                       "step 0's: 0 (default) means no group validates worse than the starting "
                                       "model, so one group cannot pay for another; null turns the guard off."})

    def __post_init__(self) -> None:
        if self.val_file in ("", "none", "None"):
            self.val_file = None
        if self.select_metric not in SELECT_METRICS:
            raise ConfigError(f"select_metric must be one of {', '.join(SELECT_METRICS)}, got {self.select_metric!r}")
        for name in ("val_max_samples", "val_max_new_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or null, got {value!r}")
        if not isinstance(self.val_batch_size, int) or self.val_batch_size < 1:
            raise ConfigError(f"val_batch_size must be a positive integer, got {self.val_batch_size!r}")
        if not 0 <= float(self.select_accuracy_margin) <= 1:
            raise ConfigError(f"select_accuracy_margin must be in [0, 1], got {self.select_accuracy_margin!r}")
        if not 0 <= float(self.select_min_parse_rate) <= 1:
            raise ConfigError(f"select_min_parse_rate must be in [0, 1], got {self.select_min_parse_rate!r}")
        if self.select_score_margin is not None and not float(self.select_score_margin) >= 0:
            raise ConfigError(f"select_score_margin must be >= 0 or null, got {self.select_score_margin!r}")

    @property
    def guards(self) -> Guards:
        return Guards(float(self.select_accuracy_margin), float(self.select_min_parse_rate),
                      None if self.select_score_margin is None else float(self.select_score_margin))


# --- the validation set ---------------------------------------------------------------------------------------


def spread(items: Sequence[Any], n: int | None) -> list[Any]:
    """``n`` items at evenly spaced positions (all of them when ``n`` is None or not smaller), order kept."""
    if n is None or n >= len(items):
        return list(items)
    return [items[(i * len(items)) // n] for i in range(n)]


def load_validation(val_args: ValidationArgs, data_args: Any, train_image_paths: Sequence[str]) -> list[Record]:
    """The validation records, checked before the model loads: readable, images present, known tasks, and no
    image shared with the training prompts (a shared image would score memorisation, not calibration)."""
    from emocaliber.tasks import canonical_task_name
    from emocaliber.train.data import DataError, default_image_root, load_split

    root = default_image_root(data_args)
    split = load_split(val_args.val_file, image_root=root, field_name="val_file", skip_bad=data_args.skip_bad_records,
                       verify_images=data_args.verify_images)
    unknown = []
    for record in split.records:
        try:
            canonical_task_name(record.task)
        except KeyError:
            unknown.append(record)
    if unknown:
        raise DataError(f"val_file {split.path}: {len(unknown)} record(s) of unknown task(s) "
                        f"{sorted({r.task for r in unknown})[:_SHOWN]}; register the task or remove them")
    check_disjoint(split.records, split.image_paths, train_image_paths, root, val_file=str(split.path))
    records = spread(split.records, val_args.val_max_samples)
    logger.info("val_file: %d of %d records from %s", len(records), len(split.records), split.path)
    return records


def check_disjoint(val_records: Sequence[Record], val_images: Sequence[Path], train_image_paths: Sequence[str],
                   root: str | Path, *, val_file: str = "val_file") -> None:
    """Refuse a validation set that shares images with the training prompts; the error counts them."""
    from emocaliber.train.data import DataError

    train = set()
    for rel in train_image_paths:
        try:
            train.add(resolve_image(root, rel))
        except RecordError:
            continue
    shared = [r for r, p in zip(val_records, val_images, strict=True) if p in train]
    if shared:
        images = sorted({r.image for r in shared})
        raise DataError(f"val_file {val_file}: {len(shared)} of {len(val_records)} record(s) ({len(images)} image(s)) "
                        f"use images that are also in train_file, e.g. {images[:_SHOWN]}; hold the validation images "
                        "out of the training prompts (emocaliber.train.validation.holdout_by_image)")


def holdout_by_image(records: Sequence[Record], n_val: int, seed: int = 0) -> tuple[list[Record], list[Record]]:
    """(train, val): whole images drawn at random (seeded) into val until it holds at least ``n_val`` records,
    so records that share an image (e.g. one image asked at two label granularities) stay on one side."""
    import random

    by_image: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_image.setdefault(r.image, []).append(i)
    images = sorted(by_image)
    random.Random(seed).shuffle(images)
    val: set[int] = set()
    for image in images:
        if len(val) >= n_val:
            break
        val.update(by_image[image])
    return ([r for i, r in enumerate(records) if i not in val], [r for i, r in enumerate(records) if i in val])


# --- scoring one pass -----------------------------------------------------------------------------------------


def validation_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per group (and ``overall``): :data:`GROUP_METRICS` of predictions rows, by the evaluation's own rules."""
    from emocaliber.report import evaluate_predictions

    result = evaluate_predictions(rows, parse_mode="strict", n_bootstrap=0)
    out: dict[str, dict[str, float | None]] = {}
    for name, block in [*result["groups"].items(), ("overall", result["overall"])]:
        pooled = block["pooled"]["metrics"]
        out[name] = {"n": pooled["n"], "parse_rate": block["parse"]["format_rate"],
                     **{ours: pooled[theirs] for ours, theirs in _POOLED.items()}}
        out[name] = {k: out[name][k] for k in GROUP_METRICS}
    return out


def log_keys(entry: Mapping[str, Any]) -> dict[str, float]:
    """A validation entry as flat tracker keys ``val/<group>/<metric>`` (groups lower-case, ``_`` for spaces)."""
    logs = {}
    for group, metrics in entry["groups"].items():
        slug = group.lower().replace(" ", "_")
        logs.update({f"val/{slug}/{k}": float(v) for k, v in metrics.items() if v is not None})
    if entry.get("score") is not None and math.isfinite(entry["score"]):
        logs["val/score"] = float(entry["score"])
    logs["val/seconds"] = float(entry["seconds"])
    return logs


# --- selection (pure) -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Guards:
    """What a later checkpoint must keep, relative to step 0, to be eligible."""

    accuracy_margin: float = 0.01
    min_parse_rate: float = 0.95
    score_margin: float | None = 0.0


@dataclass
class Selection:
    """The chosen step, its score, and every candidate's score and verdict (``why_not`` empty = eligible)."""

    step: int
    score: float
    metric: str
    guards: Guards
    candidates: list[dict[str, Any]]

    @property
    def reason(self) -> str:
        base = next(c for c in self.candidates if c["step"] == 0)
        eligible = [c for c in self.candidates if not c["why_not"]]
        if self.step == 0:
            return (f"step 0 (the starting model) kept: no later checkpoint of {len(self.candidates) - 1} had a lower "
                    f"mean {self.metric} ({_fmt(base['score'])}) while passing the guards "
                    f"({len(eligible) - 1} passed)")
        return (f"step {self.step} has the lowest mean {self.metric} ({_fmt(self.score)}, step 0: "
                f"{_fmt(base['score'])}) of the {len(eligible)} candidates that pass the guards")

    def to_dict(self) -> dict[str, Any]:
        return {"selected_step": self.step, "metric": self.metric, "score": self.score, "reason": self.reason,
                "score_definition": f"mean over groups of each group's {self.metric} on the validation set",
                "guards": {"accuracy_margin": self.guards.accuracy_margin,
                           "min_parse_rate": self.guards.min_parse_rate, "score_margin": self.guards.score_margin},
                "candidates": self.candidates}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4f}"


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def group_score(entry: Mapping[str, Any], metric: str) -> float:
    """Mean over the entry's groups of ``metric``; NaN if any group lacks it (e.g. no confidence stated)."""
    values = [_num(m.get(metric)) for m in entry["groups"].values()]
    return float(sum(values) / len(values)) if values and all(math.isfinite(v) for v in values) else math.nan


def latest_per_step(history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One entry per step (the last one written: a resumed run re-validates a step it had already passed)."""
    by_step = {int(e["step"]): e for e in history}
    return [by_step[s] for s in sorted(by_step)]


def select_checkpoint(history: Sequence[Mapping[str, Any]], metric: str = "brier",
                      guards: Guards = Guards()) -> Selection:
    """Pick the step to keep from validation entries ``{"step", "groups": {group: {metric: value}}}``.

    Step 0 must be present and is always eligible; a later step is eligible when, in every group of step 0, its
    accuracy >= step 0's - ``accuracy_margin``, its parse rate >= ``min_parse_rate``, (with ``score_margin``) its
    score <= step 0's + ``score_margin``, and its mean score is defined. The eligible step with the lowest mean
    score wins; ties go to the earlier step, and an undefined step-0 score loses to any defined one.
    """
    if metric not in ("brier", "nll"):
        raise ValueError(f"metric must be 'brier' or 'nll' (strictly proper scores), got {metric!r}")
    entries = latest_per_step(history)
    if not entries or int(entries[0]["step"]) != 0:
        raise ValueError("the validation table has no step-0 entry (the starting model); it is always a candidate")
    base = entries[0]["groups"]
    candidates = []
    for entry in entries:
        step, score, why = int(entry["step"]), group_score(entry, metric), []
        for group, ref in (base.items() if step else ()):
            got = entry["groups"].get(group)
            if got is None:
                why.append(f"{group}: not validated")
                continue
            acc, ref_acc = _num(got.get("accuracy")), _num(ref.get("accuracy"))
            if not acc >= ref_acc - guards.accuracy_margin - 1e-12:
                why.append(f"{group}: accuracy {_fmt(acc)} < step 0's {_fmt(ref_acc)} - {guards.accuracy_margin:g}")
            parse = _num(got.get("parse_rate"))
            if not parse >= guards.min_parse_rate - 1e-12:
                why.append(f"{group}: parse rate {_fmt(parse)} < {guards.min_parse_rate:g}")
            if guards.score_margin is not None:
                own, ref_own = _num(got.get(metric)), _num(ref.get(metric))
                if math.isfinite(ref_own) and math.isfinite(own) and own > ref_own + guards.score_margin + 1e-12:
                    why.append(f"{group}: {metric} {_fmt(own)} > step 0's {_fmt(ref_own)} + {guards.score_margin:g}")
        if step and not math.isfinite(score):
            why.append(f"mean {metric} undefined (a group states no confidence)")
        candidates.append({"step": step, "score": score if math.isfinite(score) else None, "why_not": why,
                           "groups": {g: dict(m) for g, m in entry["groups"].items()}})
    best = candidates[0]
    for c in candidates[1:]:
        if c["why_not"]:
            continue
        if best["score"] is None or c["score"] < best["score"]:
            best = c
    for c in candidates:
        c["selected"] = c is best
    return Selection(best["step"], best["score"] if best["score"] is not None else math.nan, metric, guards,
                     candidates)


def selection_markdown(selection: Mapping[str, Any]) -> list[str]:
    """Model-card lines for a :meth:`Selection.to_dict`: the reason and the candidates' table."""
    cands = selection["candidates"]
    groups = list(cands[0]["groups"]) if cands else []
    groups = [g for g in groups if g != "overall"]
    g = selection["guards"]
    lines = ["## Checkpoint selection", "",
             f"**Selected: step {selection['selected_step']}.** {selection['reason']}. Score: "
             f"{selection['score_definition']} (lower is better). Guards: every group's accuracy at least step 0's "
             f"- {g['accuracy_margin']:g}, parse rate at least {g['min_parse_rate']:g}"
             + (f", {selection['metric']} at most step 0's + {g['score_margin']:g}" if g.get("score_margin") is not None
                else "") + f"; step 0 is the starting model. Validation: `{selection.get('val_file')}` "
             f"({selection.get('n_val')} prompts, greedy).", ""]
    head = ["step", f"mean {selection['metric']}"]
    for name in groups:
        head += [f"{name} acc", f"{name} parse", f"{name} ECE", f"{name} AUROC"]
    lines += ["| " + " | ".join(head + ["verdict"]) + " |", "|" + "---|" * (len(head) + 1)]
    for c in cands:
        cells = [str(c["step"]), _fmt(c["score"])]
        for name in groups:
            m = c["groups"].get(name, {})
            cells += [_fmt(m.get("accuracy")), _fmt(m.get("parse_rate")), _fmt(m.get("ece")), _fmt(m.get("auroc"))]
        verdict = "**selected**" if c.get("selected") else ("; ".join(c["why_not"]) or "eligible")
        lines.append("| " + " | ".join(cells + [verdict]) + " |")
    return lines + [""]


# --- during training ------------------------------------------------------------------------------------------


def check_schedule(eval_steps: float | None, save_steps: float | None, save_strategy: Any) -> None:
    """Every validated step must also be saved (its weights are a candidate): save_steps must divide eval_steps."""
    strategy = getattr(save_strategy, "value", save_strategy)
    if eval_steps is None or not eval_steps > 0:
        raise ConfigError("val_file needs eval_steps (validate every N optimizer steps, e.g. the same as save_steps)")
    if strategy != "steps":
        raise ConfigError(f"val_file needs save_strategy: steps (got {strategy!r}): every validated step is saved "
                          "so that its weights can be selected")
    if eval_steps >= 1 and save_steps is not None and save_steps >= 1 and eval_steps % save_steps:
        raise ConfigError(f"eval_steps ({eval_steps:g}) must be a multiple of save_steps ({save_steps:g}) so every "
                          "validated step has a checkpoint to select; e.g. set save_steps equal to eval_steps")


class ValidationCallback(TrainerCallback):
    """Validates at step 0, every ``eval_steps`` and at the last step; keeps the best step in the trainer's state.

    Holds the trainer (as TRL's own generation callbacks do) to reach the wrapped model, the accelerator and the
    processor. Runs on every process; only the main process writes the table.
    """

    def __init__(self, trainer: Any, records: Sequence[Record], image_root: str | Path, val_args: ValidationArgs,
                 *, max_new_tokens: int) -> None:
        self.trainer = trainer
        self.records = list(records)
        self.image_root = Path(image_root)
        self.val_args = val_args
        self.max_new_tokens = max_new_tokens
        self.history: list[dict[str, Any]] = []

    @property
    def path(self) -> Path:
        return Path(self.trainer.args.output_dir) / VAL_LOG

    def on_train_begin(self, args, state, control, **kwargs):
        check_schedule(state.eval_steps, state.save_steps, args.save_strategy)
        from trl.distributed import DistributedBackend

        if DistributedBackend(self.trainer.accelerator).is_zero3 and not args.ds3_gather_for_generation:
            raise ConfigError("validation under ZeRO-3 needs ds3_gather_for_generation: true (each process answers "
                              "its own share of the prompts, which needs the whole model)")
        # A resumed run keeps what it validated up to its checkpoint; a fresh one starts a new table.
        self.history = [e for e in self._read() if 0 < state.global_step and int(e["step"]) <= state.global_step]
        self.trainer.accelerator.wait_for_everyone()  # every process has read the table before it is rewritten
        if self.trainer.accelerator.is_main_process:
            self._write(self.history)
        if state.global_step == 0:
            self.validate(state)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % state.eval_steps == 0 or state.global_step >= state.max_steps:
            self.validate(state)

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def _write(self, entries: Sequence[Mapping[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries), encoding="utf-8")

    def validate(self, state) -> dict[str, Any]:
        """One pass: generate on this process's share, gather, score, log, and update the best step."""
        start = time.perf_counter()
        rows = self.generate_rows()
        entry: dict[str, Any] = {"step": state.global_step, "n": len(rows), "groups": validation_metrics(rows)}
        overall = entry["groups"].pop("overall")
        entry["overall"] = overall
        metric = self.val_args.select_metric
        entry["score"] = group_score(entry, metric if metric != "none" else "brier")
        entry["seconds"] = round(time.perf_counter() - start, 3)
        self.history = [e for e in self.history if int(e["step"]) != state.global_step] + [entry]
        if metric != "none":
            chosen = select_checkpoint(self.history, metric, self.val_args.guards)
            # The trainer protects checkpoint-<best_global_step> from save_total_limit (transformers'
            # _save_checkpoint); 0 means the starting model, which lives outside output_dir.
            state.best_global_step, state.best_metric = chosen.step, chosen.score
        if self.trainer.accelerator.is_main_process:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, sort_keys=True) + "\n")
        # transformers' Trainer.log, not GRPOTrainer.log: the latter would flush the step's training metrics,
        # which the trainer logs right after this callback. Logging clears control.should_log, which would
        # drop that training log: it is restored.
        from trl import GRPOTrainer

        should_log = self.trainer.control.should_log
        super(GRPOTrainer, self.trainer).log(log_keys(entry))
        self.trainer.control.should_log = should_log
        logger.info("validation at step %d: %s mean %s %s (%.1f s)", state.global_step, len(rows),
                    metric, _fmt(entry["score"]), entry["seconds"])
        return entry

    def generate_rows(self) -> list[dict[str, Any]]:
        """Predictions rows ``{record, sample, response, error}`` for every validation record, in file order."""
        import torch
        from accelerate.utils import gather_object
        from trl.models import unwrap_model_for_generation

        from emocaliber.evaluation import make_chunk_processor
        from emocaliber.generation import SamplingSettings, TransformersBackend, shard, unshard

        trainer, acc = self.trainer, self.trainer.accelerator
        mine = shard(self.records, acc.process_index, acc.num_processes)
        settings = SamplingSettings(n=1, temperature=0.0, max_new_tokens=self.max_new_tokens, seed=trainer.args.seed)
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        # fork_rng: the backend seeds torch per batch; training must draw the same numbers with or without
        # validation.
        with torch.random.fork_rng(devices=devices), unwrap_model_for_generation(
                trainer.model_wrapped, acc, gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
                gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs) as model:
            was_training = model.training
            try:
                backend = TransformersBackend((model, trainer.processing_class), batch_size=self.val_args.val_batch_size,
                                              progress=False)
                rows = make_chunk_processor(backend, self.image_root, settings)(mine, settings.seed) if mine else []
            finally:
                model.train(was_training)
        return unshard(gather_object([rows]))


def prepare_validation(val_args: ValidationArgs, model_args: Any, data_args: Any, training_args: Any,
                       train_dataset: Any) -> list[Record] | None:
    """Check the settings and load the validation records before the model loads (None without ``val_file``)."""
    if not val_args.val_file:
        return None
    check_schedule(training_args.eval_steps, training_args.save_steps, training_args.save_strategy)
    if val_args.select_metric != "none" and not Path(model_args.model_name_or_path).is_dir():
        raise ConfigError(f"checkpoint selection needs the starting model as a local directory (its weights are the "
                          f"step-0 candidate), got {model_args.model_name_or_path!r}; download it first or set "
                          "select_metric: none")
    return load_validation(val_args, data_args, train_dataset["image_path"])


def find_callback(trainer: Any) -> ValidationCallback | None:
    return next((c for c in trainer.callback_handler.callbacks if isinstance(c, ValidationCallback)), None)


def attach_validation(trainer: Any, records: Sequence[Record] | None, image_root: str | Path,
                      val_args: ValidationArgs) -> None:
    """Add the :class:`ValidationCallback` to a built trainer (nothing when there are no validation records)."""
    if not records:
        return
    max_new = val_args.val_max_new_tokens or trainer.args.max_completion_length
    trainer.add_callback(ValidationCallback(trainer, records, image_root, val_args, max_new_tokens=max_new))


# --- the final directory --------------------------------------------------------------------------------------


def _weight_files(directory: Path) -> list[Path]:
    names = [directory / n for n in _WEIGHT_FILES]
    return [p for p in names if p.is_file()] + [p for g in _WEIGHT_GLOBS for p in sorted(directory.glob(g))]


def install_weights(source: str | Path, out_dir: str | Path) -> None:
    """Replace ``out_dir``'s weights (and their config) by ``source``'s, leaving processor and logs in place."""
    source, out = Path(source), Path(out_dir)
    files = _weight_files(source)
    if not any(p.name.endswith(".safetensors") for p in files):
        raise FileNotFoundError(f"{source} holds no safetensors weights to install into {out} (under ZeRO-3 set "
                                "zero3_save_16bit_model: true so every checkpoint holds a loadable model)")
    for p in _weight_files(out):
        p.unlink()
    for p in files:
        shutil.copy2(p, out / p.name)


def install_selected(trainer: Any, out_dir: str | Path, start_model: str | Path) -> dict[str, Any] | None:
    """On the main process after the final save: choose the step and put its weights in ``out_dir``.

    Returns the selection record for ``emocaliber_training.json`` and the model card, or None without validation.
    """
    callback = find_callback(trainer)
    if callback is None or not callback.history:
        return None
    val_args, out = callback.val_args, Path(out_dir)
    last = max(int(e["step"]) for e in callback.history)
    record: dict[str, Any] = {"val_file": val_args.val_file, "n_val": len(callback.records),
                              "validation_log": str(callback.path)}
    if val_args.select_metric == "none":
        return record | {"selected_step": last, "reason": "select_metric: none (the last step is kept)"}
    selection = select_checkpoint(callback.history, val_args.select_metric, val_args.guards)
    if selection.step == last:
        source = "the last step's weights, as saved"
    elif selection.step == 0:
        install_weights(start_model, out)
        source = f"the starting model {start_model}"
    else:
        ckpt = Path(trainer.args.output_dir) / f"checkpoint-{selection.step}"
        if not ckpt.is_dir():
            raise FileNotFoundError(f"the selected checkpoint {ckpt} is gone; it should have been kept as the "
                                    "trainer's best checkpoint")
        install_weights(ckpt, out)
        source = str(ckpt)
    logger.info("checkpoint selection: %s; weights from %s", selection.reason, source)
    return record | selection.to_dict() | {"weights_from": source}


def holdout_main(argv: Sequence[str] | None = None) -> int:
    """``emocaliber prepare holdout``: split a records file by image into a training and a validation file."""
    import argparse

    from emocaliber.records import RecordError, read_records, write_records

    parser = argparse.ArgumentParser(
        prog="emocaliber prepare holdout",
        description="Split a records file by image (records sharing an image stay on one side) into the training "
                    "and validation files of a stage-3 run with validation and checkpoint selection.",
        epilog="example: emocaliber prepare holdout --records data/released/stage3_14k.jsonl --n-val 512 "
               "--train data/released/stage3_train.jsonl --val data/released/stage3_val.jsonl")
    parser.add_argument("--records", required=True, help="records file to split (JSONL)")
    parser.add_argument("--n-val", type=int, required=True, help="at least this many records go to --val")
    parser.add_argument("--train", required=True, help="output: the records left for training")
    parser.add_argument("--val", required=True, help="output: the validation records")
    parser.add_argument("--seed", type=int, default=0, help="which images are held out (default 0)")
    args = parser.parse_args(argv)
    if args.n_val < 1:
        parser.error(f"--n-val must be >= 1, got {args.n_val}")
    try:
        records = read_records(args.records)
    except (OSError, RecordError) as e:
        parser.exit(1, f"{parser.prog}: error: {e}\n")
    train, val = holdout_by_image(records, args.n_val, args.seed)
    if not train:
        parser.exit(1, f"{parser.prog}: error: --n-val {args.n_val} leaves no training records of {len(records)}\n")
    write_records(args.train, train)
    write_records(args.val, val)
    print(f"{len(val)} validation records ({len({r.image for r in val})} images) -> {args.val}; {len(train)} "
          f"training records -> {args.train}")
    return 0

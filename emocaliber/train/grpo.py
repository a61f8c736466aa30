"""Stage 3: GRPO with a calibration reward on TRL's ``GRPOTrainer``.

Modelled on open-r1's ``grpo.py``: the recipe parses ``ModelArgs``, ``DataArgs``, :class:`GRPOScriptArgs` and
TRL's ``GRPOConfig`` with ``TrlParser`` and calls :func:`run_grpo`. What this module adds to TRL:

* **Data**: the stage-3 prompts are the project's records, checked before the model loads
  (:func:`emocaliber.train.data.build_datasets` with ``completion=False``), in TRL's VLM shape: a conversational
  ``prompt`` whose user turn holds ``{"type": "image"}``, an ``images`` column, and the ``ground_truth`` and
  ``candidates`` columns that reach the reward functions as per-completion lists.
* **Reward wiring** (:func:`reward_wiring`): rewards are named from :data:`emocaliber.rewards.REWARDS`. A
  weighted reward (format + accuracy + calibration) is passed to TRL as its three component functions with their
  weights, so TRL logs ``rewards/<component>/mean|std`` and its weighted sum (``reward``) is exactly the library's
  reward: the trainer optimises the same number the library computes.
* **Rollout monitoring** (:class:`EmoCaliberGRPOTrainer`): every generation batch is parsed with the one strict
  parser and logged as ``rollout/parse_rate``, ``rollout/accuracy``, ``rollout/confidence_mean|std``,
  ``rollout/confidence_group_std`` (confidence spread inside a prompt's group: zero means the confidence gets no
  gradient), ``rollout/low_confidence_rate`` (c < 0.1, the sandbagging signature) and ``rollout/ece``, a running
  ECE over the last ``rollout_window`` rollouts with a valid format. TRL's own ``frac_reward_zero_std`` counts the
  groups whose reward has no variance. With ``log_completions`` the printed table and the
  ``completions/*.parquet`` files carry each completion's parsed ``label``, ``confidence`` and ``valid`` flag.
* **Validation and checkpoint selection** (:mod:`emocaliber.train.validation`): with ``val_file``, held-out prompts
  are answered greedily at step 0 and every ``eval_steps``; ``output_dir`` receives the weights of the step with
  the best validation Brier score (or log loss) among those that keep accuracy and format, step 0 included.
* **Checkpoints** are self-contained (processor, chat template, model card) and ``resume_from_checkpoint: auto``
  continues from the last one in ``output_dir``. The running-ECE window is not part of a checkpoint: after a
  resume it refills over the next ``rollout_window`` rollouts.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from trl import GRPOConfig, GRPOTrainer

from emocaliber.metrics import ece
from emocaliber.modeling import check_model_source, load_model_and_processor, lora_config
from emocaliber.parsing import parse_response
from emocaliber.rewards import DEFAULT_REWARD, REWARDS, WeightedReward, completion_text
from emocaliber.train.blend_mix import mix_blends, rank_reward
from emocaliber.train.checkpoint import (
    ModelCardMixin,
    ResumeMixin,
    SelfContainedCheckpointCallback,
    distributed_info,
    finalize_checkpoint,
    prepare_output_dir,
    training_info,
)
from emocaliber.train.configs import ConfigError, DataArgs, ModelArgs
from emocaliber.train.data import build_datasets, default_image_root
from emocaliber.train.preview import grpo_examples, load_preview_processor, print_examples
from emocaliber.train.sft import freeze_vision, setup_logging
from emocaliber.train.validation import (
    ValidationArgs,
    attach_validation,
    install_selected,
    prepare_validation,
)

logger = logging.getLogger(__name__)

#: A stated confidence below this counts as "low": the sandbagging signature (docs/rewards.md, "Incentive
#: analysis").
LOW_CONFIDENCE = 0.1
#: ``confidence_credit`` values: TRL's sequence credit; the confidence tokens learn from the terms that score the
#: confidence alone, the calibration term and the ranking reward (``calibration``); and the same with every other
#: token's advantage set to 0 (``confidence_only``), so stage 3 calibrates the stated confidence while only the KL
#: term moves the reasoning and the answer.
CREDITS = ("sequence", "calibration", "confidence_only")


@dataclass
class GRPOScriptArgs(ValidationArgs):
    """Stage-3 settings that are not TRL's: which rewards, how the rollouts are monitored, and the validation that
    selects the checkpoint (``emocaliber.train.validation``)."""

    reward_funcs: list[str] = field(
        default_factory=lambda: [DEFAULT_REWARD],
        metadata={"help": f"Reward names from emocaliber.rewards.REWARDS ({', '.join(REWARDS)}); their weights are "
                          f"GRPOConfig.reward_weights (one per name). Default: the project's {DEFAULT_REWARD!r}; "
                          "'release' is the release's reward."})
    split_reward_components: bool = field(
        default=True, metadata={"help": "Pass a weighted reward to TRL as its format/accuracy/calibration "
                                        "functions (same total) so each is logged as rewards/<name>/mean."})
    rollout_window: int = field(
        default=1024, metadata={"help": "Rollouts (with a valid format) in the running ECE logged as rollout/ece."})
    rollout_ece_bins: int = field(default=10, metadata={"help": "Equal-width bins of the running ECE."})
    confidence_credit: str = field(
        default="sequence", metadata={"help": "Advantage of the tokens of the stated confidence: 'sequence' (TRL's, "
                                              "the completion's own), 'calibration' (the calibration term's alone; "
                                              "emocaliber.train.credit says why) or 'confidence_only' (the same, and "
                                              "no advantage on any other token: only the KL term moves the answer)."})
    confidence_credit_weight: float | None = field(
        default=None, metadata={"help": "Under confidence_credit calibration or confidence_only, the weight of the "
                                        "calibration score on the confidence tokens (default: the term's reward "
                                        "weight). The answer tokens never see this weight, so it cannot reward "
                                        "sandbagging; a proper score's optimum does not depend on its scale, so it "
                                        "only sets how fast the confidence moves."})

    blend_file: str | None = field(
        default=None, metadata={"help": "Blend records (emocaliber prepare blends; images next to the file) mixed "
                                        "into the training prompts: naming either source is correct and the "
                                        "calibration target is the named source's share (docs/rewards.md)."})
    blend_share: float = field(default=0.25, metadata={"help": "Share of the prompts that are blends."})
    blend_rank_weight: float = field(
        default=0.0, metadata={"help": "Weight of Rank-O-ToM's ranking reward (0 = off; needs blend_file): a "
                                       "blend must state at least blend_rank_delta less than each source."})
    blend_rank_delta: float = field(default=0.1, metadata={"help": "Ranking margin, in probability units."})
    blend_rank_table: str | None = field(
        default=None, metadata={"help": "predictions.jsonl of the starting checkpoint on the clean images (emocaliber "
                                        "eval): the sources' confidences until the policy rolls them out itself."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.reward_funcs, str):
            self.reward_funcs = [n.strip() for n in self.reward_funcs.split(",") if n.strip()]
        unknown = [n for n in self.reward_funcs if n not in REWARDS]
        if not self.reward_funcs or unknown:
            raise ConfigError(f"reward_funcs: unknown or empty {unknown or self.reward_funcs}; choose from "
                              f"{', '.join(REWARDS)}")
        if self.rollout_window < 1 or self.rollout_ece_bins < 1:
            raise ConfigError("rollout_window and rollout_ece_bins must be >= 1")
        if not 0 <= self.blend_share < 1 or self.blend_rank_weight < 0 or not 0 <= self.blend_rank_delta < 1:
            raise ConfigError("need 0 <= blend_share < 1, blend_rank_weight >= 0 and 0 <= blend_rank_delta < 1")
        if self.blend_rank_weight > 0 and not self.blend_file:
            raise ConfigError("blend_rank_weight > 0 needs blend_file (emocaliber prepare blends)")
        if self.confidence_credit not in CREDITS:
            raise ConfigError(f"confidence_credit must be one of {', '.join(CREDITS)}, got {self.confidence_credit!r}")
        if self.confidence_credit_weight is not None and (
                self.confidence_credit == "sequence" or not self.confidence_credit_weight > 0):
            raise ConfigError(f"confidence_credit_weight must be > 0 and needs confidence_credit calibration or "
                              f"confidence_only, got {self.confidence_credit_weight!r} with {self.confidence_credit!r}")


# --- reward wiring ---------------------------------------------------------------------------------------------


def reward_wiring(
    names: Sequence[str], weights: Sequence[float] | None = None, *, split_components: bool = True
) -> tuple[list[Any], list[float]]:
    """``(reward_funcs, reward_weights)`` exactly as they are handed to ``GRPOTrainer``/``GRPOConfig``.

    A :class:`~emocaliber.rewards.WeightedReward` is replaced by its components (``format_reward``,
    ``accuracy_reward``, ``calibration_reward_<rule>``) with its weights scaled by the outer weight; the weighted
    sum is unchanged and TRL logs each term. A function reached twice has its weights added (TRL names metrics by
    ``__name__``, so duplicates would overwrite each other's logs).
    """
    weights = [1.0] * len(names) if weights is None else [float(w) for w in weights]
    if len(weights) != len(names):
        raise ConfigError(f"reward_weights has {len(weights)} value(s) for {len(names)} reward_funcs {list(names)}")
    funcs: list[Any] = []
    out_weights: list[float] = []
    for name, weight in zip(names, weights, strict=True):
        if name not in REWARDS:
            raise ConfigError(f"unknown reward {name!r}; registered rewards: {', '.join(REWARDS)}")
        func = REWARDS[name]
        parts = func.components() if split_components and isinstance(func, WeightedReward) else ([func], [1.0])
        for part, part_weight in zip(*parts, strict=True):
            if part in funcs:
                out_weights[funcs.index(part)] += weight * part_weight
            else:
                funcs.append(part)
                out_weights.append(weight * part_weight)
    return funcs, out_weights


# --- rollout monitoring ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rollout:
    """One completion as the strict parser reads it."""

    label: str | None
    confidence: float | None
    valid: bool
    correct: bool


def judge_rollouts(completions: Sequence[Any], candidates: Sequence[Any], ground_truths: Sequence[Any]) -> list[Rollout]:
    """Parse completions (strings or chat messages) with the strict parser; correct = label equals ground truth."""
    out = []
    for completion, cands, truth in zip(completions, candidates, ground_truths, strict=True):
        parsed = parse_response(completion_text(completion), cands or (), "strict")
        correct = (parsed.label is not None and isinstance(truth, str)
                   and parsed.label.strip().lower() == truth.strip().lower())
        out.append(Rollout(parsed.label, parsed.confidence, bool(parsed.valid_format), bool(correct)))
    return out


class RolloutMonitor:
    """Per-batch rollout statistics plus a running ECE over a window of recent valid rollouts.

    Undefined values (no confidence in the batch, a window too small) are NaN; TRL's ``log`` skips NaN.
    """

    def __init__(self, window: int = 1024, n_bins: int = 10) -> None:
        self.n_bins = n_bins
        self._window: deque[tuple[float, float]] = deque(maxlen=window)

    def reset(self) -> None:
        self._window.clear()

    def update(self, rollouts: Sequence[Rollout], group_size: int) -> dict[str, float]:
        """Add one generation batch (groups of ``group_size`` consecutive rollouts) and return its metrics."""
        n = len(rollouts)
        if n == 0:
            return {}
        conf = np.array([r.confidence if r.confidence is not None else np.nan for r in rollouts], dtype=float)
        stated = ~np.isnan(conf)
        self._window.extend((r.confidence, float(r.correct)) for r in rollouts if r.valid and r.confidence is not None)
        group_stds = [np.std(g[~np.isnan(g)]) for g in _groups(conf, group_size) if (~np.isnan(g)).sum() >= 2]
        window = np.array(self._window, dtype=float).reshape(-1, 2)
        return {
            "rollout/parse_rate": float(np.mean([r.valid for r in rollouts])),
            "rollout/accuracy": float(np.mean([r.correct for r in rollouts])),
            "rollout/confidence_mean": float(conf[stated].mean()) if stated.any() else math.nan,
            "rollout/confidence_std": float(conf[stated].std()) if stated.any() else math.nan,
            "rollout/confidence_group_std": float(np.mean(group_stds)) if group_stds else math.nan,
            "rollout/low_confidence_rate": float((conf[stated] < LOW_CONFIDENCE).mean()) if stated.any() else math.nan,
            "rollout/ece": float(ece(window[:, 0], window[:, 1], n_bins=self.n_bins)) if len(window) else math.nan,
        }


def _groups(values: np.ndarray, size: int) -> list[np.ndarray]:
    size = max(int(size), 1)
    return [values[i:i + size] for i in range(0, len(values), size)]


def collapse_image_runs(ids: Sequence[int], image_token_id: int) -> list[int]:
    """``ids`` with every run of image tokens shortened to one placeholder token.

    TRL tokenizes a prompt with the processor, so each image is already expanded to its N tokens (one per merged
    patch); vLLM, given those ids and the image, expands the first of them to N image tokens again and keeps the
    other N - 1 as text, so the rollout policy reads stray tokens the training forward pass never sees (up to 575
    per prompt at the 7B recipe's max_pixels). With one placeholder per image, vLLM's own expansion yields
    exactly the run the training forward pass sees.
    """
    out: list[int] = []
    for token in ids:
        if not (token == image_token_id and out and out[-1] == image_token_id):
            out.append(int(token))
    return out


class EmoCaliberGRPOTrainer(ModelCardMixin, ResumeMixin, GRPOTrainer):
    """``GRPOTrainer`` that parses every rollout once more for monitoring and writes this project's model card.

    The rewards themselves are untouched: ``_calculate_rewards`` runs TRL's, then logs what the strict parser
    sees in the same completions (gathered over processes, so every rank logs the global batch).
    """

    def __init__(self, *args: Any, rollout_window: int = 1024, rollout_ece_bins: int = 10,
                 confidence_credit: str = "sequence", confidence_credit_weight: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rollout_monitors = {mode: RolloutMonitor(rollout_window, rollout_ece_bins) for mode in ("train", "eval")}
        self.confidence_credit = confidence_credit
        self.confidence_credit_weight = confidence_credit_weight
        self._rewards_per_func: Any = None
        self._scored: list[bool] = []

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        from accelerate.utils import gather_object

        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rewards_per_func = rewards_per_func  # all processes' rows, for the confidence credit
        rollouts = judge_rollouts(completions, [x.get("candidates") for x in inputs],
                                  [x.get("ground_truth") for x in inputs])
        self._log_completion_extra("label", [r.label or "" for r in rollouts])
        self._log_completion_extra("confidence", [r.confidence for r in rollouts])
        self._log_completion_extra("valid", [r.valid for r in rollouts])
        mode = "train" if self.model.training else "eval"
        group = self.num_generations if mode == "train" else self.num_generations_eval
        gathered = gather_object(rollouts)
        # The calibration term is gated by the format: the confidence credit leaves out what it did not score.
        self._scored = [r.valid and r.confidence is not None for r in gathered]
        for name, value in self.rollout_monitors[mode].update(gathered, group).items():
            self._metrics[mode][name].append(value)
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.confidence_credit != "sequence" and self.model.training:
            output["advantages"] = self._calibration_credit(output)
        return output

    def _calibration_credit(self, output: dict[str, Any]):
        """Per-token advantages: on the confidence value's tokens, the group-centred advantage of the terms that
        score the stated confidence (the calibration term at ``confidence_credit_weight`` or its reward weight,
        and Rank-O-ToM's ranking reward at its own weight when stage 3 trains on blends), each centred over the
        completions the rule scored (a broken format gets the rule's worst score, which would otherwise reward
        whatever confidence the well-formed completions state); TRL's advantage on every other token, or 0 under
        ``confidence_only``. Leaving the ranking term out here would train without it under ``confidence_only``
        while logging it as if it counted."""
        import torch

        from emocaliber.train.credit import CONFIDENCE_TERMS, group_centred, token_advantages, value_span_mask

        scored = torch.tensor(self._scored, dtype=torch.bool, device=self._rewards_per_func.device)
        calibration = torch.zeros(len(scored), dtype=self._rewards_per_func.dtype, device=self._rewards_per_func.device)
        for column, name in enumerate(self.reward_func_names):
            if not name.startswith(CONFIDENCE_TERMS):
                continue
            weight = float(self.reward_weights[column])
            if name.startswith("calibration_reward") and self.confidence_credit_weight:
                weight = self.confidence_credit_weight
            scores = self._rewards_per_func[:, column].clone()
            scores[~scored] = float("nan")
            calibration = calibration + weight * group_centred(scores, self.num_generations)
        ids, mask = output["completion_ids"], output["completion_mask"]
        local = slice(self.accelerator.process_index * len(ids), (self.accelerator.process_index + 1) * len(ids))
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        spans = torch.zeros_like(mask, dtype=torch.bool)
        for row, (seq, m) in enumerate(zip(ids.tolist(), mask.tolist(), strict=True)):
            pieces = [tokenizer.decode([t]) for t, keep in zip(seq, m, strict=True) if keep]
            spans[row, :len(pieces)] = torch.tensor(value_span_mask(pieces), dtype=torch.bool)
        full = output["advantages"]
        if self.confidence_credit == "confidence_only":
            full = torch.zeros_like(full)
        return token_advantages(full, calibration[local].to(ids.device), spans)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        """TRL's generation with colocated vLLM given one placeholder per image (:func:`collapse_image_runs`).

        TRL hands ``prompt_ids`` only to vLLM here and keeps its own expanded ids for the loss, so only what vLLM
        sees changes. Server mode keeps the expanded runs: TRL places the server's image features on them.
        """
        if self.use_vllm and self.vllm_mode == "colocate" and images is not None:
            image_token_id = getattr(self.processing_class, "image_token_id", None)
            if image_token_id is not None:
                prompt_ids = [collapse_image_runs(ids, image_token_id) for ids in prompt_ids]
        return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                             has_tool_images=has_tool_images)

    def evaluate(self, *args: Any, **kwargs: Any):
        self.rollout_monitors["eval"].reset()  # each evaluation reports its own ECE
        return super().evaluate(*args, **kwargs)


#: Columns of :func:`reward_curve`: (heading, log key).
CURVE_COLUMNS = (("mean reward", "reward"), ("parse rate", "rollout/parse_rate"), ("accuracy", "rollout/accuracy"),
                 ("mean confidence", "rollout/confidence_mean"), ("zero-std groups", "frac_reward_zero_std"))


def reward_curve(log_history: Sequence[dict[str, Any]], bucket: int) -> list[dict[str, Any]]:
    """Per-step logs (``trainer_state.json``'s ``log_history``) averaged over consecutive ranges of ``bucket`` steps.

    ``ece`` is ``rollout/ece`` at the last step of each range: the ECE of that range's valid rollouts when the run's
    ``rollout_window`` equals ``bucket`` x completions per step (otherwise of the last ``rollout_window``).
    """
    steps = sorted((h for h in log_history if "reward" in h and "step" in h), key=lambda h: h["step"])
    rows = []
    for start in range(0, len(steps), bucket):
        chunk = steps[start:start + bucket]
        row: dict[str, Any] = {"steps": f"{chunk[0]['step']}-{chunk[-1]['step']}"}
        for heading, key in CURVE_COLUMNS:
            values = [h[key] for h in chunk if h.get(key) is not None]
            row[heading] = float(np.mean(values)) if values else math.nan
        last = chunk[-1].get("rollout/ece")
        row["ece"] = math.nan if last is None else float(last)
        rows.append(row)
    return rows


def curve_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """:func:`reward_curve` rows as a Markdown table."""
    headings = ["steps", *(h for h, _ in CURVE_COLUMNS), "ece"]
    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    for row in rows:
        cells = [row["steps"]] + [f"{row[h]:.3f}" for h in headings[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- building and running --------------------------------------------------------------------------------------


def check_args(model_args: ModelArgs, data_args: DataArgs, script_args: GRPOScriptArgs,
               training_args: GRPOConfig) -> None:
    """Contradictions TRL would report only after loading the model, or with an obscure error."""
    if not data_args.with_confidence:
        raise ConfigError("with_confidence: false, but stage 3 trains the stated confidence; set it to true")
    if data_args.confidence_loss_weight != 1.0:
        raise ConfigError("confidence_loss_weight weights stage 2's SFT loss and does nothing in GRPO; to weight the "
                          "confidence here use confidence_credit (and confidence_credit_weight)")
    if (Path(model_args.model_name_or_path) / "adapter_config.json").is_file():
        raise ConfigError(f"model_name_or_path {model_args.model_name_or_path} is a LoRA adapter; merge it into a "
                          "full checkpoint first (python recipes/merge_lora.py --adapter DIR --out DIR)")
    if training_args.reward_weights is not None and len(training_args.reward_weights) != len(script_args.reward_funcs):
        raise ConfigError(f"reward_weights has {len(training_args.reward_weights)} value(s) for "
                          f"{len(script_args.reward_funcs)} reward_funcs {script_args.reward_funcs}")


def check_vllm_pixel_bounds(source: str, model_args: ModelArgs, training_args: GRPOConfig) -> None:
    """Refuse ``use_vllm`` when the config's pixel bounds differ from those saved with the checkpoint.

    TRL builds the vLLM engine (colocated, or ``trl vllm-serve``) from the checkpoint path alone, without
    ``mm_processor_kwargs``, so vLLM resizes images with the bounds in the checkpoint's saved processor while the
    training forward pass uses the config's: the rollouts would then see images at another size than the loss.
    """
    asked = {"min_pixels": model_args.min_pixels, "max_pixels": model_args.max_pixels}
    if not training_args.use_vllm or all(v is None for v in asked.values()):
        return
    from transformers import AutoImageProcessor

    try:
        size = AutoImageProcessor.from_pretrained(source, trust_remote_code=training_args.trust_remote_code).size
    except OSError as e:
        raise ConfigError(f"use_vllm with min_pixels/max_pixels: cannot read the processor saved with {source} to "
                          f"compare its bounds ({str(e).splitlines()[0]})") from None
    edge = (lambda k: size.get(k)) if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    saved = {"min_pixels": edge("shortest_edge"), "max_pixels": edge("longest_edge")}
    differ = [k for k, v in asked.items() if v is not None and v != saved[k]]
    if differ:
        raise ConfigError(
            f"use_vllm: the config's {', '.join(f'{k}={asked[k]}' for k in differ)} is not what {source} saved "
            f"({', '.join(f'{k}={saved[k]}' for k in differ)}), and vLLM's rollouts resize images with the saved "
            "bounds; save the processor with the config's bounds into the checkpoint "
            "(emocaliber.modeling.load_processor(CKPT, min_pixels=..., max_pixels=...).save_pretrained(CKPT)) or "
            "drop min_pixels/max_pixels from the config")


def build_trainer(
    model_args: ModelArgs,
    data_args: DataArgs,
    script_args: GRPOScriptArgs,
    training_args: GRPOConfig,
    *,
    callbacks: list | None = None,
) -> EmoCaliberGRPOTrainer:
    """Check config and data, load the model, wire the rewards and return a ready trainer (nothing trained)."""
    check_args(model_args, data_args, script_args, training_args)
    source = check_model_source(model_args.model_name_or_path)
    if Path(source).is_dir():  # absolute, so vLLM, the reference model and lineage resolve from anywhere
        model_args.model_name_or_path = source = str(Path(source).resolve())
    check_vllm_pixel_bounds(source, model_args, training_args)
    train_ds, eval_ds = build_datasets(data_args, completion=False)
    if eval_ds is None and training_args.eval_strategy != "no":
        raise ConfigError(f"eval_strategy={training_args.eval_strategy!r} needs eval_file")
    val_records = prepare_validation(script_args, model_args, data_args, training_args, train_ds)
    if script_args.blend_file:
        train_ds = mix_blends(train_ds, script_args.blend_file, script_args.blend_share, seed=training_args.seed,
                              with_confidence=data_args.with_confidence, system_prompt=data_args.system_prompt,
                              skip_bad=data_args.skip_bad_records)
    funcs, weights = reward_wiring(script_args.reward_funcs, training_args.reward_weights,
                                   split_components=script_args.split_reward_components)
    if script_args.blend_rank_weight > 0:
        funcs.append(rank_reward(1.0, script_args.blend_rank_delta, script_args.blend_rank_table))
        weights.append(script_args.blend_rank_weight)
    training_args.reward_weights = weights
    if script_args.confidence_credit != "sequence":
        if not any(f.__name__.startswith("calibration_reward") for f in funcs):
            raise ConfigError(f"confidence_credit: {script_args.confidence_credit} needs a calibration term among the "
                              "rewards (e.g. calibrated_log with split_reward_components: true)")
        if training_args.scale_rewards != "none" or training_args.multi_objective_aggregation != "sum_then_normalize":
            raise ConfigError(f"confidence_credit: {script_args.confidence_credit} needs scale_rewards: none and "
                              "multi_objective_aggregation: sum_then_normalize")
        from emocaliber.train.credit import CONFIDENCE_TERMS

        trained = [f.__name__ for f in funcs if f.__name__.startswith(CONFIDENCE_TERMS)]
        logger.info("confidence_credit %s: the confidence tokens learn from %s%s", script_args.confidence_credit,
                    ", ".join(trained), "; no other token has an advantage (the KL term alone keeps them)"
                    if script_args.confidence_credit == "confidence_only" else "; the other tokens from every term")
    logger.info("rewards passed to GRPOTrainer: %s", ", ".join(f"{w:g} x {f.__name__}" for f, w in zip(funcs, weights)))

    model, processor = load_model_and_processor(
        source, dtype=model_args.dtype, attn_implementation=model_args.attn_implementation,
        quantization=model_args.quantization, trust_remote_code=training_args.trust_remote_code,
        min_pixels=model_args.min_pixels, max_pixels=model_args.max_pixels)
    if model_args.quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=training_args.gradient_checkpointing,
            gradient_checkpointing_kwargs=training_args.gradient_checkpointing_kwargs)
    if not model_args.use_lora and (model_args.freeze_vision_tower or model_args.freeze_merger):
        logger.info("frozen parameter tensors: %s",
                    freeze_vision(model, tower=model_args.freeze_vision_tower, merger=model_args.freeze_merger))
    peft_config = lora_config(model_args.lora_kwargs(), vision=model_args.lora_vision) if model_args.use_lora else None

    info = training_info(stage="stage3", model_args=model_args, data_args=data_args, training_args=training_args,
                         n_train=len(train_ds), n_eval=len(eval_ds) if eval_ds is not None else None)
    info["rewards"] = {"reward_funcs": list(script_args.reward_funcs),
                       "trl_reward_funcs": [f.__name__ for f in funcs], "trl_reward_weights": weights}
    trainer = EmoCaliberGRPOTrainer(
        model=model, reward_funcs=funcs, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
        processing_class=processor, peft_config=peft_config,
        callbacks=[SelfContainedCheckpointCallback(info), *(callbacks or [])],
        rollout_window=script_args.rollout_window, rollout_ece_bins=script_args.rollout_ece_bins,
        confidence_credit=script_args.confidence_credit, confidence_credit_weight=script_args.confidence_credit_weight)
    info["distributed"] = distributed_info(trainer.accelerator)  # the callback holds the same dict
    attach_validation(trainer, val_records, default_image_root(data_args), script_args)
    trainer.emocaliber_info = info
    return trainer


def preview_grpo(model_args: Any, data_args: Any, script_args: Any, training_args: Any,
                 stream: TextIO | None = None) -> None:
    """The GRPO recipe's ``print_examples``: the same config and data checks as a run, then the prompts."""
    check_args(model_args, data_args, script_args, training_args)
    funcs, weights = reward_wiring(script_args.reward_funcs, training_args.reward_weights,
                                   split_components=script_args.split_reward_components)
    names = [f"{w:g} x {f.__name__}" for f, w in zip(funcs, weights, strict=True)]
    if script_args.blend_rank_weight > 0:
        names.append(f"{script_args.blend_rank_weight:g} x blend ranking")
    processor = load_preview_processor(model_args, training_args)
    train_ds, _ = build_datasets(data_args, completion=False)
    if script_args.blend_file:  # as build_trainer: blends follow the clean prompts
        train_ds = mix_blends(train_ds, script_args.blend_file, script_args.blend_share, seed=training_args.seed,
                              with_confidence=data_args.with_confidence, system_prompt=data_args.system_prompt,
                              skip_bad=data_args.skip_bad_records)
    print_examples(grpo_examples(train_ds, processor, training_args, data_args.print_examples, names),
                   len(train_ds), stream)


def run_grpo(
    model_args: ModelArgs,
    data_args: DataArgs,
    script_args: GRPOScriptArgs,
    training_args: GRPOConfig,
    *,
    callbacks: list | None = None,
) -> Path | None:
    """Train stage 3 and save a self-contained checkpoint in ``output_dir``; return that directory (``None`` when
    ``print_examples`` only prints the prompts)."""
    from transformers import set_seed

    setup_logging(training_args)
    if data_args.print_examples:
        return preview_grpo(model_args, data_args, script_args, training_args)
    set_seed(training_args.seed)
    resume = prepare_output_dir("stage3", model_args, data_args, training_args, script_args)
    trainer = build_trainer(model_args, data_args, script_args, training_args, callbacks=callbacks)
    logger.info("*** stage3: GRPO on %d prompts ***", len(trainer.train_dataset))
    result = trainer.train(resume_from_checkpoint=resume)
    # TRL reports a metric with no value in its last logging window (e.g. no rollout stated a confidence) as None,
    # which log_metrics cannot print: leave those out rather than lose the run before its save.
    metrics = {k: v for k, v in result.metrics.items() if v is not None} | {"train_samples": len(trainer.train_dataset)}
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()

    out = Path(training_args.output_dir)
    trainer.save_model(str(out))  # on every rank: ZeRO-3 gathers the shards
    if trainer.accelerator.is_main_process:
        if selection := install_selected(trainer, out, model_args.model_name_or_path):
            trainer.emocaliber_info["selection"] = selection  # the weights in ``out`` are the selected step's
        finalize_checkpoint(out, info=trainer.emocaliber_info, processor=trainer.processing_class)
    trainer.accelerator.wait_for_everyone()
    logger.info("model saved to %s", out)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=data_args.train_file)
    if hasattr(trainer, "end"):  # transformers >= 5.18: finish trackers, destroy the process group
        trainer.end()
    return out


GRPO_HELP = """\
Stage 3 (EmoCaliber): GRPO with a calibration reward, from the stage-2 (cold-start) checkpoint.

Every field of ModelArgs, DataArgs (emocaliber.train.configs), GRPOScriptArgs (emocaliber.train.grpo) and TRL's
GRPOConfig can be set in the YAML file and overridden on the command line as --field value. The settings mapping
from the release's verl script is in docs/grpo.md. Examples:

  python recipes/stage3_grpo.py --config recipes/tiny/stage3.yaml
  accelerate launch --config_file recipes/accelerate_configs/zero3.yaml recipes/stage3_grpo.py \\
      --config recipes/qwen2.5-vl-7b/stage3.yaml --model_name_or_path runs/qwen2.5-vl-7b/stage2
"""


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``emocaliber train grpo`` (``recipes/stage3_grpo.py``): parse, check, train."""
    import os
    import sys

    from trl import TrlParser

    from emocaliber.train.configs import HelpFormatter, parse_args_and_config
    from emocaliber.train.errors import user_errors_exit

    prog = prog or os.path.basename(sys.argv[0])
    parser = TrlParser((ModelArgs, DataArgs, GRPOScriptArgs, GRPOConfig), prog=prog, description=GRPO_HELP,
                       formatter_class=HelpFormatter)
    parser.set_defaults(with_confidence=True)  # stage 3 always asks for a confidence: its reward scores it
    with user_errors_exit(prog):
        model_args, data_args, script_args, training_args = parse_args_and_config(parser, argv)
        run_grpo(model_args, data_args, script_args, training_args)
    return 0


"""Stages 1 and 2: supervised fine-tuning of Qwen2.5-VL with TRL's ``SFTTrainer``.

Modelled on open-r1's ``sft.py`` and TRL's ``trl/scripts/sft.py``: the recipe parses ``ModelArgs``, ``DataArgs`` and
``SFTConfig`` with ``TrlParser`` and calls :func:`run_sft`. Loss is on the assistant's completion only (TRL's
prompt-completion format, ``completion_only_loss``), which works on any transformers version. Full fine-tuning,
LoRA and QLoRA, freezing the vision tower or merger, gradient checkpointing, DeepSpeed/DDP through
``accelerate launch``, resuming (``resume_from_checkpoint: auto`` = the last checkpoint in ``output_dir``) and
TRL's ``push_to_hub`` are configuration choices.

Order matters for users: data and config are checked (and fail with a message naming the field, file or record)
before the model is loaded, and every saved directory is a self-contained checkpoint.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from trl import SFTConfig, SFTTrainer

from emocaliber.modeling import check_model_source, load_model_and_processor, load_processor, lora_config
from emocaliber.train.checkpoint import (  # noqa: F401 (re-exported: AUTO_RESUME, resolve_resume)
    AUTO_RESUME,
    ModelCardMixin,
    ResumeMixin,
    SelfContainedCheckpointCallback,
    distributed_info,
    finalize_checkpoint,
    prepare_output_dir,
    resolve_resume,
    training_info,
)
from emocaliber.train.configs import ConfigError, DataArgs, ModelArgs
from emocaliber.train.data import LENGTH_COLUMN, build_datasets, default_image_root
from emocaliber.train.preview import load_preview_processor, print_examples, sft_examples

logger = logging.getLogger(__name__)

_LENGTH_SAMPLERS = ("group_by_length", "batch_rebalance")


class EmoCaliberSFTTrainer(ModelCardMixin, ResumeMixin, SFTTrainer):
    """``SFTTrainer`` that writes this project's model card, resumes full fine-tuning with the right weights
    (:class:`~emocaliber.train.checkpoint.ResumeMixin`) and keeps the precomputed ``length`` column.

    TRL keeps only prompt/completion/images columns for vision data, which would drop the lengths that
    ``train_sampling_strategy: group_by_length`` needs; the collator ignores the extra key.
    """

    #: Set by :func:`build_trainer` from ``DataArgs.confidence_loss_weight``; 1.0 leaves TRL's loss alone.
    confidence_loss_weight: float = 1.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.confidence_loss_weight == 1.0:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = self.weighted_loss(model, inputs, self.confidence_loss_weight, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def weighted_loss(self, model, inputs, weight: float, num_items_in_batch=None) -> tuple[Any, Any]:
        """TRL's token-mean cross-entropy with the tokens after ``</answer>`` weighted by ``weight``.

        TRL's fused loss takes no per-token weights, so the logits are built here; TRL's entropy and token-accuracy
        logs are then not written.
        """
        import torch

        labels = inputs["labels"]
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
        target = labels[:, 1:]
        token_loss = torch.nn.functional.cross_entropy(
            outputs.logits[:, :-1].float().transpose(1, 2), target, ignore_index=-100, reduction="none")
        weights = confidence_token_weights(labels, self.processing_class.tokenizer, weight)[:, 1:]
        count = num_items_in_batch if num_items_in_batch is not None else (target != -100).sum()
        loss = (token_loss * weights.to(token_loss.device)).sum() / torch.as_tensor(count).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as TRL: DDP averages the gradients across ranks
        return loss, outputs

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self.args.train_sampling_strategy in _LENGTH_SAMPLERS and self._is_vision_dataset:
            name = self.args.length_column_name
            if name not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, name]


def confidence_token_weights(labels: Any, tokenizer: Any, weight: float, marker: str = "</answer>") -> Any:
    """Per-token loss weights: ``weight`` on the supervised tokens after ``marker``, 1 elsewhere.

    Why: the confidence's two value digits are 2 of about 80 supervised tokens of a demo response. On the demo they
    learned a distribution wide enough for greedy decoding to flip between its modes (docs/demo.md). Training on
    them alone broke the format (commit 1c86cd0), so they are weighted, not isolated. A token that straddles the
    marker counts as after it.
    """
    import torch

    weights = torch.ones(labels.shape, dtype=torch.float32)
    for row in range(labels.shape[0]):
        positions = (labels[row] != -100).nonzero().flatten().tolist()
        pieces = [tokenizer.decode([int(labels[row, j])]) for j in positions]
        end = "".join(pieces).rfind(marker)
        if end < 0:
            continue
        end, seen = end + len(marker), 0
        for j, piece in zip(positions, pieces):
            seen += len(piece)
            if seen > end:
                weights[row, j] = weight
    return weights


def setup_logging(training_args: SFTConfig) -> None:
    """Log like open-r1: timestamps on stdout, verbosity from ``log_level`` (quiet on non-main ranks)."""
    import datasets
    import transformers

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%Y-%m-%d %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    level = training_args.get_process_log_level()
    logging.getLogger("emocaliber").setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def check_args(model_args: ModelArgs, data_args: DataArgs, training_args: SFTConfig) -> None:
    """Contradictions TRL would only report after loading the model, or not at all."""
    if training_args.packing or training_args.padding_free:
        raise ConfigError("packing / padding_free are not supported for image data by TRL; set them to false")
    if training_args.assistant_only_loss:
        raise ConfigError("assistant_only_loss needs 'messages' data; these recipes use prompt-completion data "
                          "with completion_only_loss (the default), which masks the prompt already")
    if training_args.completion_only_loss is False:
        logger.warning("completion_only_loss=false: the loss also covers the system and user prompt")
    if data_args.confidence_loss_weight != 1.0:  # weighted_loss is plain cross-entropy: it would drop these
        if training_args.loss_type != "nll":
            raise ConfigError(f"confidence_loss_weight={data_args.confidence_loss_weight} computes a weighted "
                              f"cross-entropy, which cannot apply loss_type={training_args.loss_type!r}; use "
                              "loss_type: nll or confidence_loss_weight: 1.0")
        if training_args.label_smoothing_factor:
            raise ConfigError(f"confidence_loss_weight={data_args.confidence_loss_weight} computes a weighted "
                              "cross-entropy without label smoothing; set label_smoothing_factor: 0 or "
                              "confidence_loss_weight: 1.0")
    source = Path(model_args.model_name_or_path)
    if (source / "adapter_config.json").is_file():
        raise ConfigError(f"model_name_or_path {source} is a LoRA adapter; merge it into a full checkpoint first "
                          "(python recipes/merge_lora.py --adapter DIR --out DIR) and start from that")


def freeze_vision(model: Any, *, tower: bool, merger: bool) -> dict[str, int]:
    """Stop gradients to the vision encoder and/or the vision-to-language merger; return frozen tensor counts.

    Names follow transformers 5.x Qwen2/2.5-VL (``model.visual.blocks``, ``model.visual.patch_embed``,
    ``model.visual.merger``); a requested part that matches nothing is an error, not a silent no-op.
    """
    counts = {"vision_tower": 0, "merger": 0}
    for name, param in model.named_parameters():
        if ".visual." not in f".{name}":
            continue
        part = "merger" if ".merger." in name else "vision_tower"
        if (part == "merger" and merger) or (part == "vision_tower" and tower):
            param.requires_grad_(False)
            counts[part] += 1
    for part, wanted in (("vision_tower", tower), ("merger", merger)):
        if wanted and not counts[part]:
            raise ConfigError(f"freeze_{'merger' if part == 'merger' else 'vision_tower'}: the model has no "
                              f"{part} parameters under '.visual.' to freeze")
    return counts


def build_trainer(
    model_args: ModelArgs,
    data_args: DataArgs,
    training_args: SFTConfig,
    *,
    stage: str,
    callbacks: list | None = None,
) -> EmoCaliberSFTTrainer:
    """Check config and data, load the model, and return a ready ``SFTTrainer`` (nothing trained yet)."""
    check_args(model_args, data_args, training_args)
    source = check_model_source(model_args.model_name_or_path)
    if Path(source).is_dir():  # absolute, so adapters and lineage still resolve from another working directory
        model_args.model_name_or_path = source = str(Path(source).resolve())
    trust = training_args.trust_remote_code
    processor = load_processor(source, min_pixels=model_args.min_pixels, max_pixels=model_args.max_pixels,
                               trust_remote_code=trust)
    data_args.image_root = str(default_image_root(data_args))  # recorded in the model card as resolved
    with_lengths = training_args.train_sampling_strategy in _LENGTH_SAMPLERS
    train_ds, eval_ds = build_datasets(data_args, processor=processor, max_length=training_args.max_length,
                                       with_lengths=with_lengths)
    if with_lengths:
        training_args.length_column_name = LENGTH_COLUMN
    if eval_ds is None and training_args.eval_strategy != "no":
        raise ConfigError(f"eval_strategy={training_args.eval_strategy!r} needs eval_file")

    # Bind this process to its device first: bitsandbytes puts a quantized model on the *current* CUDA device, and
    # under accelerate launch each rank must load onto its own GPU.
    _ = training_args.device
    model, processor = load_model_and_processor(
        source, dtype=model_args.dtype, attn_implementation=model_args.attn_implementation,
        quantization=model_args.quantization, trust_remote_code=trust, min_pixels=model_args.min_pixels,
        max_pixels=model_args.max_pixels)
    if model_args.quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=training_args.gradient_checkpointing,
            gradient_checkpointing_kwargs=training_args.gradient_checkpointing_kwargs)
    if model_args.freeze_vision_tower or model_args.freeze_merger:
        if model_args.use_lora:
            logger.info("freeze_vision_tower/freeze_merger have no effect with LoRA: every base weight is frozen")
        else:
            frozen = freeze_vision(model, tower=model_args.freeze_vision_tower, merger=model_args.freeze_merger)
            logger.info("frozen parameter tensors: %s", frozen)
    peft_config = None
    if model_args.use_lora:
        peft_config = lora_config(model_args.lora_kwargs(), vision=model_args.lora_vision)

    info = training_info(stage=stage, model_args=model_args, data_args=data_args, training_args=training_args,
                         n_train=len(train_ds), n_eval=len(eval_ds) if eval_ds is not None else None)
    trainer = EmoCaliberSFTTrainer(
        model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=processor,
        peft_config=peft_config, callbacks=[SelfContainedCheckpointCallback(info), *(callbacks or [])])
    trainer.confidence_loss_weight = data_args.confidence_loss_weight
    info["distributed"] = distributed_info(trainer.accelerator)
    trainer.emocaliber_info = info
    return trainer


def preview_sft(model_args: Any, data_args: Any, training_args: Any, stream: TextIO | None = None) -> None:
    """The SFT recipes' ``print_examples``: the same config and data checks as a run, then the examples."""
    check_args(model_args, data_args, training_args)
    processor = load_preview_processor(model_args, training_args)
    train_ds, _ = build_datasets(data_args, processor=processor, max_length=training_args.max_length)
    print_examples(sft_examples(train_ds, processor, training_args, data_args.print_examples), len(train_ds), stream)


def run_sft(
    model_args: ModelArgs,
    data_args: DataArgs,
    training_args: SFTConfig,
    *,
    stage: str,
    callbacks: list | None = None,
) -> Path | None:
    """Train one SFT stage and save a self-contained checkpoint in ``output_dir``; return that directory.

    With ``print_examples`` set, print that many training examples and return ``None`` without training."""
    from transformers import set_seed

    setup_logging(training_args)
    if data_args.print_examples:
        return preview_sft(model_args, data_args, training_args)
    set_seed(training_args.seed)
    resume = prepare_output_dir(stage, model_args, data_args, training_args)
    trainer = build_trainer(model_args, data_args, training_args, stage=stage, callbacks=callbacks)
    logger.info("*** %s: training on %d records ***", stage, len(trainer.train_dataset))
    result = trainer.train(resume_from_checkpoint=resume)
    metrics = dict(result.metrics, train_samples=len(trainer.train_dataset))
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()

    out = Path(training_args.output_dir)
    trainer.save_model(str(out))  # on every rank: ZeRO-3 gathers the shards
    if trainer.accelerator.is_main_process:
        finalize_checkpoint(out, info=trainer.emocaliber_info, processor=trainer.processing_class)
    trainer.accelerator.wait_for_everyone()
    logger.info("model saved to %s", out)

    if training_args.do_eval or trainer.eval_dataset is not None:
        metrics = trainer.evaluate()
        metrics["eval_samples"] = len(trainer.eval_dataset)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=data_args.train_file)  # TRL's; uploads output_dir incl. our card
    if hasattr(trainer, "end"):  # transformers >= 5.18: finish trackers, destroy the process group
        trainer.end()
    return out


SFT_HELP = """\
Stages 1 and 2: SFT on structured reasoning + answer (stage 1), + <confidence> (stage 2, with_confidence: true;
every record then needs a confidence target). The stages differ by config only.

Every field of ModelArgs, DataArgs (emocaliber.train.configs) and TRL's SFTConfig can be set in the YAML file and
overridden on the command line as --field value. Examples (docs/training.md has more):

  # one process (CPU tiny model or one GPU)
  python recipes/stage1_sft.py --config recipes/tiny/stage1.yaml
  # one node with 8 GPUs, DeepSpeed ZeRO-3
  accelerate launch --config_file recipes/accelerate_configs/zero3.yaml recipes/stage2_sft.py \\
      --config recipes/qwen2.5-vl-7b/stage2.yaml --model_name_or_path runs/qwen2.5-vl-7b/stage1
  # continue a killed run from the last checkpoint in output_dir
  ... --resume_from_checkpoint auto
"""


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``emocaliber train sft`` (``recipes/stage1_sft.py``, ``recipes/stage2_sft.py``): parse, check, train."""
    from trl import TrlParser

    from emocaliber.train.configs import HelpFormatter, parse_args_and_config
    from emocaliber.train.errors import user_errors_exit

    prog = prog or os.path.basename(sys.argv[0])
    parser = TrlParser((ModelArgs, DataArgs, SFTConfig), prog=prog, description=SFT_HELP,
                       formatter_class=HelpFormatter)
    with user_errors_exit(prog):
        model_args, data_args, training_args = parse_args_and_config(parser, argv)
        run_sft(model_args, data_args, training_args, stage="stage2" if data_args.with_confidence else "stage1")
    return 0


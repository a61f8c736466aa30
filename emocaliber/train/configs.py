"""Configuration dataclasses shared by every training stage (SFT stages 1-2 and GRPO stage 3).

They are parsed by ``trl.TrlParser`` together with the trainer's own config (``SFTConfig`` or ``GRPOConfig``), so a
YAML file sets any field and the command line overrides it as ``--field value``. Field names must not collide with
the trainer config: ``trust_remote_code`` and ``seed`` therefore live on ``SFTConfig``/``GRPOConfig``, not here.

Values set from YAML bypass argparse's type and choice checks, so every field is validated in ``__post_init__``
and a bad value raises :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from emocaliber.prompts import SYSTEM_PROMPT

DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZATIONS = ("4bit", "8bit")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` keeps a recipe's docstring as written and shows every field's default."""


class ConfigError(ValueError):
    """A configuration value is invalid or two settings contradict each other; the message names the field."""


@dataclass
class ModelArgs:
    """Which model to start from, how to load it and which of its parts to train."""

    model_name_or_path: str = field(
        metadata={"help": "Base model: a hub id (Qwen/Qwen2.5-VL-7B-Instruct) or a saved checkpoint directory, e.g. "
                          "the previous stage's output_dir."})
    dtype: str = field(default="auto", metadata={"help": f"Weight dtype when loading, one of {DTYPES}."})
    attn_implementation: str | None = field(
        default=None, metadata={"help": "eager, sdpa or flash_attention_2 (needs the flash-attn package)."})
    min_pixels: int | None = field(
        default=None, metadata={"help": "Smallest image area after resizing (the release: 200704 = 256*28*28). "
                                        "None keeps the checkpoint's processor setting."})
    max_pixels: int | None = field(
        default=None, metadata={"help": "Largest image area after resizing (the release: 451584 = 576*28*28); "
                                        "it bounds the image tokens per sample (area / 784)."})
    quantization: str | None = field(
        default=None, metadata={"help": "Load the base in 4bit (QLoRA, NF4) or 8bit with bitsandbytes; needs "
                                        "use_lora."})
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names to adapt; default: the language model's attention and MLP "
                                        "projections (q,k,v,o,gate,up,down_proj)."})
    lora_vision: bool = field(
        default=False, metadata={"help": "Also adapt the vision tower. Off by default: vLLM ignores vision LoRA, so "
                                         "evaluation would not see what was trained."})
    freeze_vision_tower: bool = field(
        default=False, metadata={"help": "Keep the vision encoder (ViT blocks, patch embedding) fixed in full "
                                         "fine-tuning."})
    freeze_merger: bool = field(
        default=False, metadata={"help": "Keep the vision-to-language projector (merger) fixed in full "
                                         "fine-tuning."})

    def __post_init__(self) -> None:
        if not self.model_name_or_path:
            raise ConfigError("model_name_or_path is empty; set it to a hub id or a checkpoint directory")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.quantization in ("none", "None", ""):
            self.quantization = None
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise ConfigError(f"quantization must be null, '4bit' or '8bit', got {self.quantization!r}")
        if self.quantization is not None and not self.use_lora:
            raise ConfigError(f"quantization={self.quantization!r} needs use_lora: true (a quantized base cannot be "
                              "fully fine-tuned)")
        for name in ("min_pixels", "max_pixels"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ConfigError(f"{name} must be a positive whole number of pixels, got {value!r}")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ConfigError(f"min_pixels ({self.min_pixels}) is larger than max_pixels ({self.max_pixels})")
        if not self.use_lora:
            defaults = {f.name: f.default for f in fields(self) if f.name.startswith("lora_")}
            changed = sorted(k for k, v in defaults.items() if getattr(self, k) != v)
            if changed:
                raise ConfigError(f"{', '.join(changed)} set but use_lora is false, so they would do nothing; set "
                                  "use_lora: true or leave them out")
        if self.use_lora:
            if not isinstance(self.lora_r, int) or self.lora_r <= 0:
                raise ConfigError(f"lora_r must be a positive integer, got {self.lora_r!r}")
            if not 0 <= float(self.lora_dropout) < 1:
                raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [self.lora_target_modules]

    def lora_kwargs(self) -> dict[str, Any] | None:
        """Keyword arguments for ``emocaliber.modeling.lora_config``; None when LoRA is off."""
        if not self.use_lora:
            return None
        kwargs: dict[str, Any] = {"r": self.lora_r, "lora_alpha": self.lora_alpha, "lora_dropout": self.lora_dropout}
        if self.lora_target_modules:
            kwargs["target_modules"] = list(self.lora_target_modules)
        return kwargs


@dataclass
class DataArgs:
    """Which records to train (and evaluate) on, and how they become prompts.

    Records files are JSON Lines in the project's record shape (``emocaliber.records``); image paths are relative
    to ``image_root``.
    """

    train_file: str = field(metadata={"help": "Training records (JSON Lines)."})
    eval_file: str | None = field(default=None, metadata={"help": "Optional evaluation records (loss only)."})
    image_root: str | None = field(
        default=None, metadata={"help": "Directory the records' image paths are relative to; default: the "
                                        "directory of train_file."})
    with_confidence: bool = field(
        default=False, metadata={"help": "Ask for and train a <confidence> tag (stage 2 and 3); every record then "
                                         "needs a confidence target in SFT."})
    system_prompt: str | None = field(
        default=SYSTEM_PROMPT, metadata={"help": "System message of every prompt; empty or null leaves it out (the "
                                                 "Qwen2.5-VL chat template then writes its own default)."})
    confidence_loss_weight: float = field(
        default=1.0, metadata={"help": "Stage 2: weight of the loss on the tokens after </answer> (the confidence "
                                       "and the end of the turn) against 1 for the reasoning and answer "
                                       "(emocaliber.train.sft.confidence_token_weights)."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training records (after skipping bad ones)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation records."})
    skip_bad_records: bool = field(
        default=False, metadata={"help": "Count, report and skip invalid records or records whose image is missing "
                                         "instead of stopping before training."})
    allow_missing_reasoning: bool = field(
        default=False, metadata={"help": "SFT: train records without 'reasoning' answer-only (counted and warned) "
                                         "instead of refusing them; an answer-only record teaches no reasoning."})
    overwrite: bool = field(
        default=False, metadata={"help": "Discard the checkpoints of an earlier run in output_dir whose settings, data "
                                         "or base weights differ, instead of refusing to start (without it such a "
                                         "rerun stops with a line naming what changed)."})
    verify_images: bool = field(
        default=False, metadata={"help": "Open every image's header before training (slower start, catches corrupt "
                                         "files that would otherwise stop training mid-way)."})
    print_examples: int = field(
        default=0, metadata={"help": "Print the first N training examples exactly as the model will see them (chat "
                                     "template applied, image tokens shown, the trained completion marked) and exit "
                                     "without training or creating output_dir; 0 trains."})

    def __post_init__(self) -> None:
        if not self.train_file:
            raise ConfigError("train_file is empty; set it to a records file (JSON Lines)")
        if not self.confidence_loss_weight > 0:
            raise ConfigError(f"confidence_loss_weight must be > 0, got {self.confidence_loss_weight!r}")
        if self.confidence_loss_weight != 1.0 and not self.with_confidence:
            raise ConfigError("confidence_loss_weight needs with_confidence: true (nothing follows the answer "
                              "otherwise)")
        if not isinstance(self.print_examples, int) or isinstance(self.print_examples, bool) or self.print_examples < 0:
            raise ConfigError(f"print_examples must be a whole number >= 0, got {self.print_examples!r}")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ConfigError(f"{name} must be a positive integer or null, got {value!r}")




def parse_args_and_config(parser: Any, argv: Sequence[str] | None = None) -> tuple[Any, ...]:
    """``TrlParser.parse_args_and_config`` with config mistakes reported as :class:`ConfigError`.

    TrlParser rejects unknown YAML keys and the dataclasses reject bad values with a plain ``ValueError`` (or
    ``TypeError`` for a wrongly typed YAML value); both mean the config file is wrong, so they are re-raised as
    ``ConfigError`` with the original message, which names the offending key.
    """
    args = list(argv) if argv is not None else sys.argv[1:]
    check_flags(parser, args)
    if "--config" in args and args.index("--config") + 1 < len(args):
        check_config_keys(parser, args[args.index("--config") + 1])
    try:
        return parser.parse_args_and_config(args)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid configuration: {e}") from e


def check_flags(parser: Any, args: Sequence[str]) -> None:
    """Reject a misspelt ``--flag`` with the closest known one, before any config is built."""
    import difflib

    known = set(parser._option_string_actions) | {"--config"}  # TrlParser reads --config itself
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and flag not in known:
            close = difflib.get_close_matches(flag, known, n=1)
            raise ConfigError(f"unknown option {flag}" + (f" (did you mean {close[0]}?)" if close else "")
                              + "; see --help")


def check_config_keys(parser: Any, config_path: str) -> None:
    """Reject unknown top-level YAML keys before any dataclass is built, suggesting the closest known field.

    TrlParser does reject them, but only after building the configs, so another error (e.g. bf16 on a CPU) could
    hide a misspelt key; here the key is named first.
    """
    import difflib

    import yaml

    try:
        with open(config_path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"--config: file not found: {config_path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {config_path}: not valid YAML: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"--config {config_path}: must be a YAML mapping of field: value")
    known = {action.dest for action in parser._actions} | {"env"}
    unknown = [key for key in config if key not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), known, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"--config {config_path}: unknown field(s) {', '.join(hints)}; every field of ModelArgs, "
                          "DataArgs and the trainer config is allowed (see --help)")

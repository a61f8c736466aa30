"""Checkpoints that stand on their own: weights + processor + chat template + generation config + model card.

Any directory a stage writes (the final ``output_dir`` and every intermediate ``checkpoint-N``) loads with
``from_pretrained``/``emocaliber.modeling.load_model_and_processor`` and evaluates with
``eval/run_vecbench.py --model DIR``, and its README.md says what it is: stage, base model, data and config.
The same information is kept machine-readable in ``emocaliber_training.json`` so the next stage can record its
lineage. LoRA runs write adapters; :func:`merge_lora` turns one into a full checkpoint.

A checkpoint is *complete* only once :data:`COMPLETE_FILE` is in it, written last and atomically: a kill or a full
disk during a save leaves a checkpoint that ``resume_from_checkpoint: auto`` skips instead of crashing on.
:func:`prepare_output_dir` claims an ``output_dir`` for a run: it locks it against a second concurrent run and
refuses one whose fingerprint (settings, data, base weights; ``emocaliber.fingerprint``) differs from the run
that wrote it, so new settings are never recorded over old weights.

Stage-agnostic: the SFT recipes and the GRPO stage share :func:`training_info`, :func:`prepare_output_dir`,
:class:`ModelCardMixin` (put it before the TRL trainer class) and :class:`SelfContainedCheckpointCallback`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from emocaliber.fingerprint import file_sha256

logger = logging.getLogger(__name__)

INFO_FILE = "emocaliber_training.json"
CARD_FILE = "README.md"
STAGES = {
    "stage1": "structured reasoning and answer (SFT), the scaffold model",
    "stage2": "structured reasoning, answer and verbalized confidence (SFT), the cold-start model",
    "stage3": "calibrated verbalized confidence (GRPO)",
}
#: Training arguments worth reading in a model card; the full set is in INFO_FILE.
_CARD_TRAINING_KEYS = (
    "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "world_size", "max_length", "bf16",
    "gradient_checkpointing", "gradient_checkpointing_kwargs", "completion_only_loss", "seed", "deepspeed",
    "train_sampling_strategy", "beta", "num_generations", "max_completion_length", "loss_type",
)
# Either file of each group makes the checkpoint complete for that part.
_ESSENTIAL = {
    "config": ("config.json", "adapter_config.json"),
    "weights": ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors"),
    "processor": ("processor_config.json", "preprocessor_config.json"),
    "tokenizer": ("tokenizer.json", "tokenizer_config.json"),
    "chat template": ("chat_template.jinja", "chat_template.json"),
    "model card": (CARD_FILE,),
}


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = obj.to_dict() if hasattr(obj, "to_dict") else asdict(obj)
    return json.loads(json.dumps(obj, default=str, sort_keys=True))


def read_training_info(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The INFO_FILE of a checkpoint this project wrote, or None (e.g. a hub base model)."""
    path = Path(model_dir, INFO_FILE)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def training_info(
    *,
    stage: str,
    model_args: Any,
    data_args: Any,
    training_args: Any,
    n_train: int,
    n_eval: int | None = None,
) -> dict[str, Any]:
    """What a checkpoint's card and INFO_FILE record: stage, base model, lineage, data (with a hash), config.

    ``training_args.to_dict()`` already redacts hub tokens. Lineage is the base model's own lineage (when it is a
    checkpoint of this project) followed by the base model itself.
    """
    import emocaliber

    base = model_args.model_name_or_path
    parent = read_training_info(base) if Path(base).is_dir() else None
    lineage = (parent or {}).get("lineage", []) + [{"model": str(base), "stage": (parent or {}).get("stage")}]
    data = _jsonable(data_args)
    for key in ("train_file", "eval_file"):
        if data.get(key) and Path(data[key]).is_file():
            data[f"{key}_sha256"] = file_sha256(data[key])
    data["n_train"], data["n_eval"] = n_train, n_eval
    return {
        "stage": stage,
        "description": STAGES.get(stage, stage),
        "base_model": str(base),
        "lineage": lineage,
        "data": data,
        "model": _jsonable(model_args),
        "training": _jsonable(training_args),
        "distributed": {},  # filled by distributed_info() once the trainer's accelerator exists
        "versions": _versions(),
        "emocaliber": emocaliber.__version__,
    }


def distributed_info(accelerator: Any) -> dict[str, Any]:
    """How a run was spread: process count, accelerate's distributed type and, under DeepSpeed, the ZeRO stage."""
    out: dict[str, Any] = {"world_size": accelerator.num_processes,
                           "distributed_type": getattr(accelerator.distributed_type, "value",
                                                       str(accelerator.distributed_type))}
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:
        out["zero_stage"] = plugin.zero_stage
    return out


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "deepspeed", "bitsandbytes"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def model_card(info: dict[str, Any], *, step: int | None = None, is_adapter: bool = False) -> str:
    """README.md text: hub front matter, what the checkpoint is, how to use it, and its training config."""
    base = info["base_model"]
    hub_base = None if Path(base).exists() or base.startswith((".", "/", "~")) else base
    front = ["---"] + ([f"base_model: {hub_base}"] if hub_base else []) + [
        f"library_name: {'peft' if is_adapter else 'transformers'}",
        "pipeline_tag: image-text-to-text",
        "tags:", "- emocaliber", f"- {info['stage']}", "- visual-emotion", "- calibration", "- trl", "---", ""]
    lineage = " -> ".join(f"{e['model']}" + (f" ({e['stage']})" if e.get("stage") else "") for e in info["lineage"])
    data = info["data"]
    title = f"# EmoCaliber {info['stage']} checkpoint" + (f" (step {step})" if step is not None else "")
    body = [
        title, "",
        f"- **Stage:** {info['stage']}: {info['description']}",
        f"- **Base model:** `{base}`",
        f"- **Lineage:** {lineage} -> this checkpoint",
        f"- **Weights:** {'a LoRA adapter over the base model' if is_adapter else 'full model'}",
        "- **Trained with:** " + ", ".join(f"{k} {v}" for k, v in info.get("distributed", {}).items()),
        (f"- **Training data:** `{data.get('train_file')}` ({data.get('n_train')} records, sha256 "
         f"`{str(data.get('train_file_sha256', 'n/a'))[:16]}`), images under `{data.get('image_root') or '.'}`, "
         f"confidence target: {'yes' if data.get('with_confidence') else 'no'}"),
    ]
    if data.get("eval_file"):
        body.append(f"- **Evaluation data:** `{data['eval_file']}` ({data.get('n_eval')} records)")
    body += [
        f"- **System prompt:** {data.get('system_prompt')!r}", "",
        "## Use", "", "```bash", "python eval/run_vecbench.py --model <this directory>", "```", "",
        "```python",
        "from emocaliber.modeling import load_model_and_processor",
        "model, processor = load_model_and_processor('<this directory>')",
        "```", "",
    ]
    if is_adapter:
        body += [("This directory holds a LoRA adapter; its base is read from adapter_config.json. Write a full "
                  "checkpoint with `python recipes/merge_lora.py --adapter <this directory> --out <dir>`."), ""]
    else:
        body += [("It also loads with `AutoModelForImageTextToText.from_pretrained` and "
                  "`AutoProcessor.from_pretrained`."), ""]
    if info.get("selection", {}).get("candidates"):
        from emocaliber.train.validation import selection_markdown

        body += selection_markdown(info["selection"])
    training = info.get("training", {})
    shown = {k: training[k] for k in _CARD_TRAINING_KEYS if k in training}
    body += ["## Training configuration", "",
             f"Full configuration in `{INFO_FILE}`. Versions: "
             + ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items()) + ".", "",
             "```json", json.dumps({"model": info.get("model"), "training": shown}, indent=2, sort_keys=True),
             "```", ""]
    return "\n".join(front + body)


def write_model_card(out_dir: str | os.PathLike, info: dict[str, Any], *, step: int | None = None) -> None:
    """Write README.md and INFO_FILE into ``out_dir`` (a final or intermediate checkpoint directory)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    is_adapter = (out / "adapter_config.json").is_file()
    record = dict(info, step=step) if step is not None else info
    (out / INFO_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / CARD_FILE).write_text(model_card(info, step=step, is_adapter=is_adapter), encoding="utf-8")


def missing_parts(model_dir: str | os.PathLike) -> list[str]:
    """What a directory lacks to be used on its own (empty when complete)."""
    d = Path(model_dir)
    missing = [part for part, names in _ESSENTIAL.items() if not any((d / n).is_file() for n in names)]
    if (d / "config.json").is_file() and not (d / "generation_config.json").is_file():
        missing.append("generation config")
    return missing


def finalize_checkpoint(
    model_dir: str | os.PathLike,
    *,
    info: dict[str, Any] | None = None,
    processor: Any = None,
    step: int | None = None,
) -> list[str]:
    """Complete a directory ``save_pretrained``/``Trainer`` wrote; return what is still missing (logged).

    Adds the processor (with its chat template) if absent, re-enables the KV cache that gradient checkpointing
    switched off in config.json (generation would be slow otherwise), and writes the model card.
    """
    d = Path(model_dir)
    if processor is not None and "processor" in missing_parts(d):
        processor.save_pretrained(d)
    _enable_cache(d / "config.json")
    if info is not None:
        write_model_card(d, info, step=step)
    missing = missing_parts(d)
    if missing:
        logger.warning("checkpoint %s is not self-contained, it lacks: %s%s", d, ", ".join(missing),
                       " (under DeepSpeed ZeRO-3 set zero3_save_16bit_model: true in the accelerate config)"
                       if "weights" in missing else "")
    mark_complete(d, step=step)  # last: everything above, and the Trainer's files before it, are on disk
    return missing


def _enable_cache(config_path: Path) -> None:
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    changed = False
    for section in (config, config.get("text_config") or {}):
        if section.get("use_cache") is False:
            section["use_cache"] = True
            changed = True
    if changed:
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class ModelCardMixin:
    """Makes a TRL trainer write this project's model card wherever TRL writes its own (every checkpoint save
    and ``push_to_hub``). Mix in before the trainer class and set ``emocaliber_info``."""

    emocaliber_info: dict[str, Any] | None = None

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None,
                          tags: Any = None, **kwargs: Any) -> None:
        if self.emocaliber_info is None:
            return super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if self.is_world_process_zero():
            write_model_card(self.args.output_dir, self.emocaliber_info)


class ResumeMixin:
    """Resume full fine-tuning of Qwen2.5-VL from a ``checkpoint-N`` with the right weights.

    transformers 5.x saves Qwen2.5-VL in the original key layout (``model.layers.*``, ``visual.*``) but
    ``Trainer._load_from_checkpoint`` loads the file with a plain non-strict ``load_state_dict`` on the new layout
    (``model.language_model.*``, ``model.visual.*``): no key matches, only a warning is logged and training
    silently restarts from the base weights (huggingface/transformers#43701, open). Here the checkpoint is read the
    way ``from_pretrained`` reads it. DeepSpeed (own shards), FSDP and PEFT adapters keep the Trainer's path.
    """

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        from transformers.utils import is_peft_available

        target = model if model is not None else self.model
        is_peft = False
        if is_peft_available():
            from peft import PeftModel

            is_peft = isinstance(target, PeftModel)
        ckpt = Path(resume_from_checkpoint)
        has_weights = (ckpt / "model.safetensors").is_file() or (ckpt / "model.safetensors.index.json").is_file()
        if is_peft or self.is_fsdp_enabled or not has_weights:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_checkpoint_weights(target, ckpt)


def load_checkpoint_weights(model: Any, ckpt_dir: str | os.PathLike) -> None:
    """Copy a saved checkpoint's weights into ``model`` in place, with ``from_pretrained``'s key conversion;
    every parameter must be matched (strict), so a silent partial load cannot happen."""
    dtype = next(model.parameters()).dtype
    saved = type(model).from_pretrained(ckpt_dir, dtype=dtype)
    result = model.load_state_dict(saved.state_dict(), strict=False)
    del saved
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"checkpoint {ckpt_dir} does not match the model: missing {result.missing_keys[:5]}, "
                           f"unexpected {result.unexpected_keys[:5]}")
    logger.info("resumed weights from %s", ckpt_dir)


class SelfContainedCheckpointCallback(TrainerCallback):
    """Completes every intermediate ``checkpoint-N`` (processor, model card, KV cache on) right after it is saved,
    so any of them can be evaluated or become the next stage's base while training goes on."""

    def __init__(self, info: dict[str, Any]):
        self.info = info

    def on_save(self, args, state, control, processing_class=None, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ckpt.is_dir():
            finalize_checkpoint(ckpt, info=self.info, processor=processing_class, step=state.global_step)


def merge_lora(adapter_dir: str | os.PathLike, out_dir: str | os.PathLike, *, dtype: str = "auto") -> Path:
    """Merge a LoRA adapter into its (unquantized) base and save a full, self-contained checkpoint.

    An adapter trained on a 4-bit base (QLoRA) is merged into the full-precision base, the usual practice: the
    result is an ordinary checkpoint that vLLM and ``from_pretrained`` load without bitsandbytes.
    """
    from emocaliber.modeling import load_model_and_processor
    from emocaliber.train.configs import ConfigError

    adapter, out = Path(adapter_dir), Path(out_dir)
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter} holds no adapter_config.json: not a LoRA adapter directory")
    if out.resolve() == adapter.resolve():
        raise ConfigError(f"out_dir {out} must differ from adapter_dir (the adapter would be overwritten)")
    model, processor = load_model_and_processor(adapter, dtype=dtype)
    merged = model.merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    info = read_training_info(adapter)
    if info is not None:
        info = dict(info, merged_from_adapter=str(adapter))
    finalize_checkpoint(out, info=info)
    return out


MERGE_HELP = """\
Merge a LoRA/QLoRA adapter (a stage's output_dir or checkpoint-N) into its base and save a full checkpoint.

  python recipes/merge_lora.py --adapter runs/tiny/stage1-lora --out runs/tiny/stage1-merged

The result loads with from_pretrained, vLLM and eval/run_vecbench.py, and can be the next stage's
model_name_or_path. A QLoRA adapter is merged into the full-precision base.
"""


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``emocaliber merge-lora`` (``recipes/merge_lora.py``)."""
    import argparse
    import sys

    from emocaliber.train.configs import DTYPES
    from emocaliber.train.errors import user_errors_exit

    prog = prog or os.path.basename(sys.argv[0])
    parser = argparse.ArgumentParser(prog=prog, description=MERGE_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True, help="directory with adapter_config.json")
    parser.add_argument("--out", required=True, help="output directory for the merged checkpoint")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="dtype to load the base in (default: auto)")
    args = parser.parse_args(argv)
    with user_errors_exit(prog):
        out = merge_lora(args.adapter, args.out, dtype=args.dtype)
    print(f"merged checkpoint written to {out}")
    return 0

# ----------------------------------------------------------------------------------------------------------------
# Complete checkpoints, resume, and the run fingerprint of an output directory

#: Written (temp + rename) as the last file of a checkpoint, after the weights and trainer_state.json: a
#: checkpoint without it was cut short by a kill or a full disk and is never resumed from.
COMPLETE_FILE = "emocaliber_complete.json"
#: The fingerprint of the run that writes an output directory (emocaliber.fingerprint).
RUN_FILE = "emocaliber_run.json"
#: Values of ``resume_from_checkpoint`` that mean "the newest complete checkpoint in output_dir, if any".
AUTO_RESUME = ("auto", "last", "true", "True")
#: Trainer settings that change how a run is logged or saved, not what it trains: free to change on resume.
_RUN_MECHANICS = ("output_dir", "logging_dir", "resume_from_checkpoint", "run_name", "report_to", "disable_tqdm",
                  "log_level", "log_level_replica", "dataloader_num_workers", "dataloader_persistent_workers",
                  "dataloader_prefetch_factor", "push_to_hub", "overwrite", "eval_steps", "eval_strategy",
                  "do_eval", "skip_memory_metrics", "log_completions", "num_completions_to_print",
                  "wandb_log_unique_prompts")
#: How long to train: a resume may extend a run (logged), since its checkpoints hold the same earlier steps.
_RUN_LENGTH = ("max_steps", "num_train_epochs")
_RUN_MECHANICS_PREFIXES = ("logging_", "save_", "hub_", "push_to_hub_", "trackio_")


def mark_complete(ckpt_dir: str | os.PathLike, step: int | None = None) -> None:
    """Mark a fully written checkpoint complete (atomically; the marker lists each file's size)."""
    from emocaliber.atomic import write_text_atomic

    d = Path(ckpt_dir)
    files = {f.name: f.stat().st_size for f in sorted(d.iterdir()) if f.is_file() and f.name != COMPLETE_FILE}
    write_text_atomic(d / COMPLETE_FILE, json.dumps({"step": step, "files": files}, indent=2) + "\n")


def checkpoint_problem(ckpt_dir: str | os.PathLike, *, need_trainer_state: bool = True) -> str | None:
    """Why a checkpoint cannot be resumed from (not marked complete, no trainer state, truncated weights), or None."""
    from emocaliber.weights import weights_problem

    d = Path(ckpt_dir)
    if not (d / COMPLETE_FILE).is_file():
        return f"not marked complete ({COMPLETE_FILE} missing: the save was cut short)"
    if need_trainer_state and not (d / "trainer_state.json").is_file():
        return "no trainer_state.json"
    return weights_problem(d)


def last_complete_checkpoint(output_dir: str | os.PathLike) -> tuple[str | None, list[str]]:
    """The newest complete ``checkpoint-N`` in ``output_dir`` and a note for every newer one that was skipped."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    out = Path(output_dir)
    if not out.is_dir():
        return None, []
    found = []
    for d in out.iterdir():
        suffix = d.name[len(PREFIX_CHECKPOINT_DIR) + 1:]
        if d.is_dir() and d.name.startswith(PREFIX_CHECKPOINT_DIR + "-") and suffix.isdigit():
            found.append((int(suffix), d))
    skipped = []
    for _, d in sorted(found, reverse=True):
        problem = checkpoint_problem(d)
        if problem is None:
            return str(d), skipped
        skipped.append(f"{d.name}: {problem}")
    return None, skipped


def resolve_resume(resume: str | bool | None, output_dir: str | os.PathLike) -> str | None:
    """The checkpoint to resume from: ``auto`` -> the newest complete ``checkpoint-N`` in output_dir (None if
    there is none, i.e. a fresh start; incomplete newer ones are skipped with a warning), a path -> that path
    (which must exist and be complete), None -> no resume (warn if checkpoints exist). Says which one it picked."""
    from emocaliber.train.configs import ConfigError

    out = Path(output_dir)
    last, skipped = last_complete_checkpoint(out)
    if resume is None or resume is False or resume in ("", "none", "None", "false", "False"):
        if last is not None:
            logger.warning("output_dir %s already holds %s; training starts from scratch and will overwrite "
                           "checkpoints (set resume_from_checkpoint: auto to continue it)", out, Path(last).name)
        return None
    if resume is True or resume in AUTO_RESUME:
        for note in skipped:
            logger.warning("resume_from_checkpoint=auto: skipping incomplete %s", note)
        if last is None:
            logger.info("resume_from_checkpoint=auto: no complete checkpoint in %s, starting from scratch", out)
        else:
            logger.warning("resuming from %s (the newest complete checkpoint)", last)
        return last
    if not Path(resume).is_dir():
        raise ConfigError(f"resume_from_checkpoint: no checkpoint directory at {resume} (use 'auto' for the last "
                          f"checkpoint in output_dir)")
    problem = checkpoint_problem(resume)
    if problem:
        raise ConfigError(f"resume_from_checkpoint: {resume} is incomplete ({problem}); pick an earlier "
                          "checkpoint or use 'auto' for the newest complete one")
    logger.warning("resuming from %s", resume)
    return str(resume)


def run_fingerprint(stage: str, model_args: Any, data_args: Any, training_args: Any,
                    script_args: Any = None) -> dict[str, Any]:
    """What decides a training run's weights: stage, config (minus logging and saving), data files, base weights."""
    from emocaliber import fingerprint

    training = {k: v for k, v in _jsonable(training_args).items()
                if k not in _RUN_MECHANICS and not k.startswith(_RUN_MECHANICS_PREFIXES)}
    data = {k: v for k, v in _jsonable(data_args).items() if k not in _RUN_MECHANICS}
    return {
        "stage": stage,
        "model": _jsonable(model_args),
        "data": data,
        "training": training,
        "script": _jsonable(script_args) if script_args is not None else None,
        "data_files": {k: _digest(fingerprint.file_fingerprint(getattr(data_args, k, None)))
                       for k in ("train_file", "eval_file")},
        "base_weights": _digest(fingerprint.model_fingerprint(model_args.model_name_or_path)),
        "code": fingerprint.code_version(),
    }


def _digest(fp: dict[str, Any] | None) -> str | None:
    """One comparable value per file or model (a change then reads as one line, not one per detail)."""
    if fp is None:
        return None
    if "sha256" in fp:
        return fp["sha256"]
    if "hub_id" in fp:
        return f"{fp['hub_id']}@{fp.get('revision') or 'unknown revision'}"
    return f"missing {fp.get('path')}"


def _is_main_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


_held_locks: dict[str, Any] = {}


def prepare_output_dir(stage: str, model_args: Any, data_args: Any, training_args: Any,
                       script_args: Any = None) -> str | None:
    """Claim ``output_dir`` for this run and return the checkpoint to resume from (None: start fresh).

    A directory that holds a run with another fingerprint (settings, data, base weights) is refused in one line
    naming what changed, unless ``overwrite`` is set: then its checkpoints are removed and training starts again.
    The directory is locked against a second concurrent run (emocaliber.locking) by the main rank.
    """
    from emocaliber import fingerprint
    from emocaliber.locking import DirectoryLock
    from emocaliber.train.configs import ConfigError

    out = Path(training_args.output_dir)
    overwrite = bool(getattr(data_args, "overwrite", False))
    new = run_fingerprint(stage, model_args, data_args, training_args, script_args)
    if _is_main_rank():
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        key = str(out.resolve())
        if key not in _held_locks:
            _held_locks[key] = DirectoryLock(out).acquire()
        if created:
            import atexit

            atexit.register(_remove_if_unused, out)
    old = fingerprint.read(out / RUN_FILE)
    has_run = any(out.glob("checkpoint-*")) or (out / INFO_FILE).is_file()
    changed: list[str] = []
    if old is not None:
        compared = ("stage", "training", "model", "script", "data", "data_files", "base_weights")
        changed = [d for k in compared for d in fingerprint.differences({k: old.get(k)}, {k: new[k]}, limit=99)]
        length = [d for d in changed if d.split(" ")[0] in {f"training.{k}" for k in _RUN_LENGTH}]
        if length:
            logger.warning("output_dir %s: run length changed (%s); resuming continues the same run with the "
                           "learning-rate schedule of the new length", out, "; ".join(length))
            changed = [d for d in changed if d not in length]
        changed = changed[:6] + ([f"{len(changed) - 6} more"] if len(changed) > 6 else [])
    elif has_run:
        changed = [f"it holds a run without {RUN_FILE}, so its settings are unknown"]
    if changed and not overwrite:
        raise ConfigError(f"output_dir {out} holds a run with other settings ({'; '.join(changed)}); use a fresh "
                          "output_dir, or pass --overwrite true to discard its checkpoints and start again")
    if changed and overwrite and _is_main_rank():
        logger.warning("overwrite: discarding the run in %s (%s)", out, "; ".join(changed))
        for ckpt in out.glob("checkpoint-*"):
            shutil.rmtree(ckpt)
        for name in (COMPLETE_FILE, INFO_FILE):
            (out / name).unlink(missing_ok=True)
    if _is_main_rank():
        fingerprint.write(out / RUN_FILE, new)
        (out / COMPLETE_FILE).unlink(missing_ok=True)  # the final model here is rewritten by this run
    if old is not None and old.get("code") != new["code"]:
        logger.warning("output_dir %s was started by code %s, now %s", out, old.get("code"), new["code"])
    if changed:  # overwrite: every rank starts afresh, whether or not the main rank has removed checkpoints yet
        return None
    return resolve_resume(training_args.resume_from_checkpoint, out)


def _remove_if_unused(out: Path) -> None:
    """At exit: remove an output directory this run created when it holds only the run's bookkeeping (the run
    failed its checks before writing anything), so no empty directory is left behind."""
    from emocaliber.locking import LOCK_FILE

    lock = _held_locks.pop(str(out.resolve()), None) if out.exists() else None
    if lock is not None:
        lock.release()
    try:
        if out.is_dir() and {p.name for p in out.iterdir()} <= {LOCK_FILE, RUN_FILE}:
            shutil.rmtree(out)
    except OSError:
        pass

"""Records files -> TRL datasets, checked before any model is loaded.

Every stage trains on the project's records (``emocaliber.records``). This module reads them, checks everything
that would otherwise stop a run hours in (the file exists, each line is a valid record, each image exists, stage 2
records carry a confidence target, no prompt is longer than ``max_length``) and builds a ``datasets.Dataset`` in
TRL's conversational prompt-completion shape, the shape ``emocaliber.formats.to_trl_prompt_completion`` defines:

    {"prompt": [system, user: [{"type": "image"}, {"type": "text", ...}]], "completion": [assistant],
     "images": [image], "id", "task", "image_path", "candidates", "ground_truth", "split", "source"}

Images are stored as file paths under a lazily decoding ``datasets.Image`` feature instead of decoded PIL images:
a stage-1 corpus of 86k images would otherwise be decoded up front and held in memory. The rows are otherwise
identical to ``to_trl_prompt_completion`` (a test checks it): records imported from a released file are trained on
that file's question and assistant text verbatim (``emocaliber.formats.training_messages``). The module is stage-agnostic: stage 3 (GRPO) builds
prompt-only rows with ``completion=False`` and keeps ``ground_truth``/``candidates`` for its reward functions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from emocaliber.formats import record_columns, released_prompt, released_target, training_messages
from emocaliber.records import Record, RecordError, iter_jsonl, resolve_image
from emocaliber.train.configs import DataArgs

logger = logging.getLogger(__name__)

#: Column holding each row's token count (prompt incl. image tokens + completion) for length-grouped sampling.
LENGTH_COLUMN = "length"
_SHOWN = 5  # problems quoted in an error message; the rest are counted


class DataError(ValueError):
    """A data file is missing or holds records that cannot be trained on; the message names file, line and record."""


@dataclass
class LoadedSplit:
    """The valid records of one file, with where they came from and what was skipped."""

    path: Path
    image_root: Path
    records: list[Record]
    image_paths: list[Path]
    skipped: list[str] = field(default_factory=list)


def default_image_root(data_args: DataArgs) -> Path:
    """``image_root`` if set, else the directory of ``train_file`` (where SynthEmo and VECBench keep images/)."""
    return Path(data_args.image_root or Path(data_args.train_file).parent)


def load_split(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike,
    field_name: str = "train_file",
    need_confidence: bool = False,
    max_samples: int | None = None,
    skip_bad: bool = False,
    verify_images: bool = False,
    need_reasoning: bool = False,
    allow_missing_reasoning: bool = False,
) -> LoadedSplit:
    """Read and check one records file; raise :class:`DataError` listing what is wrong, before any training.

    A line is bad when it is not JSON, not a valid record, names an image that is not under ``image_root`` (or,
    with ``verify_images``, does not open), or lacks a confidence target when ``need_confidence``. With
    ``skip_bad`` bad lines are counted, logged and left out; otherwise the first few are quoted in the error.
    """
    from tqdm import tqdm

    path, root = Path(path), Path(image_root)
    if not path.is_file():
        raise DataError(f"{field_name}: data file not found: {path}")
    if not root.is_dir():
        raise DataError(f"image_root: directory not found: {root} (images of {path} are resolved against it)")
    problems: list[str] = []
    records: list[Record] = []
    images: list[Path] = []
    no_reasoning = 0
    lines = iter_jsonl(path, errors=problems)
    for lineno, obj in tqdm(lines, desc=f"checking {path.name}", unit=" records", disable=None, leave=False):
        if max_samples is not None and len(records) >= max_samples:
            break
        try:
            record = Record.from_dict(obj)
            image = resolve_image(root, record.image)
        except RecordError as e:
            problems.append(f"{path}:{lineno}: {e}")
            continue
        where = f"{path}:{lineno}: record {record.id!r}"
        if not image.is_file():
            problems.append(f"{where}: image {record.image!r} not found under image_root {root}")
            continue
        if verify_images and (err := _image_error(image)):
            problems.append(f"{where}: image {record.image!r} does not open ({err})")
            continue
        if need_reasoning and not record.reasoning:
            if not allow_missing_reasoning:
                problems.append(f"{where}: no 'reasoning' (SFT teaches the structured reasoning); build the corpus "
                                "with data_prep/build_cot.py, or set allow_missing_reasoning: true to train "
                                "answer-only on such records")
                continue
            no_reasoning += 1
        if need_confidence and record.confidence is None:
            problems.append(f"{where}: no 'confidence' target (needed with with_confidence: true); build the "
                            "stage-2 corpus with data_prep/build_confidence_targets.py")
            continue
        records.append(record)
        images.append(image)
    if problems and not skip_bad:
        raise DataError(_summarize(f"{field_name} {path}", problems) + "; fix or remove these lines, or set "
                        "skip_bad_records: true to skip them")
    if problems:
        logger.warning("%s", _summarize(f"skipping bad records of {field_name} {path}", problems))
    if no_reasoning:
        logger.warning("%s %s: %d of %d records have no reasoning and train answer-only "
                       "(allow_missing_reasoning: true)", field_name, path, no_reasoning, len(records))
    if not records:
        raise DataError(f"{field_name} {path}: no usable records" + (f" ({len(problems)} skipped)" if problems else ""))
    return LoadedSplit(path, root, records, images, problems)


def _summarize(what: str, problems: Sequence[str]) -> str:
    shown = "; ".join(problems[:_SHOWN])
    more = f"; ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    return f"{what}: {len(problems)} bad record(s): {shown}{more}"


def _image_error(path: Path) -> str | None:
    """Why the project's one image loader refuses this file, or None."""
    from emocaliber.images import ImageLoadError, open_image

    try:
        open_image(path)
    except ImageLoadError as e:
        return str(e)
    return None


def records_to_dataset(
    split: LoadedSplit,
    *,
    with_confidence: bool,
    system_prompt: str | None,
    completion: bool = True,
):
    """A ``datasets.Dataset`` of TRL prompt-completion rows (prompt-only with ``completion=False``).

    The ``images`` column holds one path per row and decodes to a PIL image when a row is read.
    """
    from datasets import Dataset, Image, List

    rows = []
    _warn_unused_released_text(split, with_confidence=with_confidence, completion=completion)
    for record, image in zip(split.records, split.image_paths, strict=True):
        messages = training_messages(record, with_confidence=with_confidence, system_prompt=system_prompt or None,
                                     target=completion)
        row: dict[str, Any] = {"prompt": messages[:-1] if completion else messages}
        if completion:
            row["completion"] = messages[-1:]
        row["images"] = [str(image)]
        rows.append(row | record_columns(record))
    return Dataset.from_list(rows).cast_column("images", List(Image()))


def _warn_unused_released_text(split: LoadedSplit, *, with_confidence: bool, completion: bool) -> None:
    """Say how many records carry a released question or answer text that this stage cannot use verbatim (a
    stage-1 question without the confidence instruction in stage 2, an answer text whose fields were changed since
    it was imported); those records are trained on the project's rendering instead."""
    prompts = sum(isinstance(r.meta.get("prompt"), str)
                  and released_prompt(r, with_confidence=with_confidence) is None for r in split.records)
    targets = completion and sum(isinstance(r.meta.get("target"), str)
                                 and released_target(r, with_confidence=with_confidence) is None for r in split.records)
    if prompts or targets:
        logger.warning("%s: %d record(s) carry a released question and %d a released answer text that do not fit "
                       "with_confidence=%s or no longer match the record's fields; the project's rendering is used "
                       "for those (see emocaliber.formats.released_prompt / released_target)",
                       split.path, prompts, int(targets), with_confidence)


def image_token_count(processor: Any, width: int, height: int) -> int:
    """Image placeholder tokens Qwen2-VL-style processors emit for an image of this size (after resizing)."""
    ip = processor.image_processor
    size = ip.size
    min_pixels = getattr(size, "shortest_edge", None) or getattr(ip, "min_pixels", None)
    max_pixels = getattr(size, "longest_edge", None) or getattr(ip, "max_pixels", None)
    return _image_tokens(ip.patch_size * ip.merge_size, min_pixels, max_pixels, width, height)


@lru_cache(maxsize=4096)
def _image_tokens(factor: int, min_pixels: int | None, max_pixels: int | None, width: int, height: int) -> int:
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return (h // factor) * (w // factor)


def token_lengths(dataset, processor) -> tuple[list[int], list[int]]:
    """(prompt lengths incl. image tokens, completion lengths) of each row, as TRL's collator will tokenize them.

    Uses TRL's own chat-template rendering and the processor's resize rule, so no image is decoded (only headers
    are read for the size). Completion length is 0 for prompt-only rows.
    """
    from datasets import Image, List
    from PIL import Image as PILImage
    from tqdm import tqdm
    from trl.data_utils import apply_chat_template

    tokenizer = processor.tokenizer
    placeholder = len(tokenizer.tokenize(getattr(processor, "image_token", "<|image_pad|>")))
    raw = dataset.cast_column("images", List(Image(decode=False)))
    has_completion = "completion" in raw.column_names
    sizes: dict[str, tuple[int, int]] = {}  # SynthEmo-8 and -2 (like FI-8 and FI-2) share image files
    prompts, completions, image_tokens = [], [], []
    for row in tqdm(raw, desc="measuring token lengths", unit=" rows", disable=None, leave=False):
        text = apply_chat_template({k: row[k] for k in ("prompt", "completion") if k in row}, processor)
        prompts.append(text["prompt"])
        completions.append(text.get("completion", ""))
        n = 0
        for image in row["images"]:
            if image["path"] not in sizes:
                with PILImage.open(image["path"]) as im:
                    sizes[image["path"]] = im.size
            n += image_token_count(processor, *sizes[image["path"]]) - placeholder
        image_tokens.append(n)
    encode = partial(tokenizer, add_special_tokens=False, return_attention_mask=False)
    prompt_lens = [len(ids) + n for ids, n in zip(encode(prompts)["input_ids"], image_tokens, strict=True)]
    completion_lens = [len(ids) for ids in encode(completions)["input_ids"]] if has_completion else [0] * len(prompts)
    return prompt_lens, completion_lens


def check_lengths(dataset, prompt_lens: Sequence[int], completion_lens: Sequence[int], max_length: int | None,
                  *, field_name: str = "train_file") -> None:
    """Fail if a prompt would be cut (TRL truncation would drop image tokens and crash mid-run with "Image
    features and image tokens do not match"); warn when completions lose their end (the answer and <|im_end|>)."""
    if max_length is None:
        return
    too_long = [i for i, n in enumerate(prompt_lens) if n >= max_length]
    if too_long:
        shown = ", ".join(f"{dataset[i]['id']!r} ({prompt_lens[i]} tokens)" for i in too_long[:_SHOWN])
        raise DataError(
            f"{field_name}: {len(too_long)} prompt(s) reach max_length={max_length} before the completion starts, "
            f"so truncation would cut image tokens: {shown}. Raise max_length, lower max_pixels, or set "
            "max_length: null")
    cut = sum(p + c > max_length for p, c in zip(prompt_lens, completion_lens, strict=True))
    if cut:
        logger.warning("%s: %d of %d rows exceed max_length=%d and lose the end of their target (answer, "
                       "confidence, <|im_end|>); consider a larger max_length", field_name, cut, len(prompt_lens),
                       max_length)


def build_datasets(
    data_args: DataArgs,
    *,
    processor: Any = None,
    completion: bool = True,
    max_length: int | None = None,
    with_lengths: bool = False,
):
    """(train, eval or None) datasets for a stage, after checking every record and image.

    ``completion=True`` (SFT) needs targets, and a confidence target per record when ``with_confidence``.
    With a ``processor``, prompts longer than ``max_length`` fail here and ``with_lengths`` adds the
    :data:`LENGTH_COLUMN` used by ``train_sampling_strategy: group_by_length``.
    """
    root = default_image_root(data_args)
    need_conf = completion and data_args.with_confidence
    common = {"image_root": root, "need_confidence": need_conf, "skip_bad": data_args.skip_bad_records,
              "verify_images": data_args.verify_images, "need_reasoning": completion,
              "allow_missing_reasoning": data_args.allow_missing_reasoning}
    splits = [("train_file", load_split(data_args.train_file, field_name="train_file",
                                        max_samples=data_args.max_train_samples, **common))]
    if data_args.eval_file:
        splits.append(("eval_file", load_split(data_args.eval_file, field_name="eval_file",
                                               max_samples=data_args.max_eval_samples, **common)))
    out = []
    for name, split in splits:
        ds = records_to_dataset(split, with_confidence=data_args.with_confidence,
                                system_prompt=data_args.system_prompt, completion=completion)
        if processor is not None and (max_length is not None or with_lengths):
            prompt_lens, completion_lens = token_lengths(ds, processor)
            check_lengths(ds, prompt_lens, completion_lens, max_length, field_name=name)
            if with_lengths:
                ds = ds.add_column(LENGTH_COLUMN, [p + c for p, c in zip(prompt_lens, completion_lens, strict=True)])
        logger.info("%s: %d records from %s", name, len(ds), split.path)
        out.append(ds)
    return out[0], (out[1] if len(out) > 1 else None)

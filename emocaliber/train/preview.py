"""``print_examples: N``: show the first N training examples exactly as the model will see them, then stop.

Why: a wrong question or target (a re-rendered prompt, a dropped confidence, a cut completion) shows up in the
metrics only after GPU hours. The text printed here is not a second rendering of the records: it is the token ids
the trainer itself builds, decoded back. SFT rows go through TRL's own vision collator with the run's settings
(chat template, ``max_length`` truncation, completion-only loss), GRPO prompts through the chat-template call
TRL's ``GRPOTrainer`` makes before generating. Image placeholders are shown as the run of image tokens they expand
to (``<|image_pad|>×N``), and the part the loss is on is marked.

Only the processor is loaded (no weights), nothing is trained and ``output_dir`` is not created.
"""

from __future__ import annotations

import os
import sys
from itertools import groupby
from typing import Any, TextIO

_RULE = "-" * 24


def decode_tokens(tokenizer: Any, ids: list[int], image_token_id: int | None) -> str:
    """The ids as text, special tokens kept, each run of image tokens written once as ``<|image_pad|>×N``.

    Decoded without clean-up, so the text is the tokenizer's bytes, not a normalised copy.
    """
    parts = []
    for is_image, run in groupby(ids, key=lambda t: t == image_token_id):
        run = list(run)
        if is_image:
            parts.append(f"{tokenizer.convert_ids_to_tokens(run[0])}×{len(run)}")
        else:
            parts.append(tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False))
    return "".join(parts)


def _header(index: int, total: int, row: dict[str, Any]) -> str:
    return (f"{'=' * 24} example {index + 1} of {total}: id {row['id']!r}, task {row['task']}, image "
            f"{row['image_path']}, ground truth {row['ground_truth']!r}")


def _image_token_id(processor: Any) -> int | None:
    token = getattr(processor, "image_token", None)
    return processor.tokenizer.convert_tokens_to_ids(token) if token else None


def sft_examples(dataset: Any, processor: Any, training_args: Any, n: int) -> list[str]:
    """The first ``n`` SFT rows as TRL's collator builds them for this run, prompt and completion marked."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    # completion_only_loss=True only to find where the completion starts; the header says what the run trains.
    collator = DataCollatorForVisionLanguageModeling(
        processor=processor, max_length=training_args.max_length, completion_only_loss=True,
        dataset_text_field=training_args.dataset_text_field)
    trains_prompt = training_args.completion_only_loss is False
    tokenizer, image_id = processor.tokenizer, _image_token_id(processor)
    shown = min(n, len(dataset))
    out = []
    for i in range(shown):
        row = dataset[i]
        batch = collator([{k: row[k] for k in ("prompt", "completion", "images")}])
        ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
        labels = batch["labels"][0][batch["attention_mask"][0].bool()].tolist()
        start = next((j for j, label in enumerate(labels) if label != -100), len(ids))
        loss_on = "the prompt and the completion (completion_only_loss: false)" if trains_prompt else \
            "the completion only"
        lines = [_header(i, shown, row),
                 f"{_RULE} prompt ({start} tokens{'' if trains_prompt else ', no loss'}) {_RULE}",
                 decode_tokens(tokenizer, ids[:start], image_id),
                 f"{_RULE} completion ({len(ids) - start} tokens, trained; the loss is on {loss_on}) {_RULE}",
                 decode_tokens(tokenizer, ids[start:], image_id)]
        if training_args.max_length is not None and len(ids) >= training_args.max_length:
            lines.append(f"{_RULE} cut at max_length={training_args.max_length}: the rest of the completion is "
                         f"not trained {_RULE}")
        out.append("\n".join(lines))
    return out


def grpo_examples(dataset: Any, processor: Any, training_args: Any, n: int, reward_names: list[str]) -> list[str]:
    """The first ``n`` GRPO prompts as ``GRPOTrainer`` tokenizes them before generating, with what is scored."""
    from trl.data_utils import prepare_multimodal_messages

    tokenizer, image_id = processor.tokenizer, _image_token_id(processor)
    shown = min(n, len(dataset))
    out = []
    for i in range(shown):
        row = dataset[i]
        messages = prepare_multimodal_messages(row["prompt"], images=row["images"])
        ids = processor.apply_chat_template(conversation=[messages], add_generation_prompt=True, tokenize=True,
                                            return_dict=True, **(training_args.chat_template_kwargs or {}))
        ids = list(ids["input_ids"][0])
        scored = (f"{_RULE} completion: {training_args.num_generations} sampled by the model (at most "
                  f"{training_args.max_completion_length} tokens), scored by {', '.join(reward_names)} against "
                  f"candidates {list(row['candidates'])} and ground truth {row['ground_truth']!r} {_RULE}")
        out.append("\n".join([_header(i, shown, row), f"{_RULE} prompt ({len(ids)} tokens, no loss) {_RULE}",
                               decode_tokens(tokenizer, ids, image_id), scored]))
    return out


def print_examples(examples: list[str], total: int, stream: TextIO | None = None) -> None:
    """Write the rendered examples and a closing line saying nothing was trained (on the first process only, when
    started with ``accelerate launch``)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    stream = stream or sys.stdout
    for text in examples:
        print(text, file=stream)
    print(f"{'=' * 24} shown {len(examples)} of {total} training examples; print_examples set, so nothing was "
          "trained and no output_dir was created", file=stream)
    stream.flush()


def load_preview_processor(model_args: Any, training_args: Any) -> Any:
    from emocaliber.modeling import check_model_source, load_processor

    source = check_model_source(model_args.model_name_or_path)
    return load_processor(source, min_pixels=model_args.min_pixels, max_pixels=model_args.max_pixels,
                          trust_remote_code=training_args.trust_remote_code)

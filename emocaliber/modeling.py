"""Building the tiny offline Qwen2.5-VL and loading any Qwen2.5-VL checkpoint, the one loader every stage uses.

The tiny model is the real ``Qwen2_5_VLForConditionalGeneration`` with small sizes and a byte-level BPE trained
on the spot, because no hub is reachable on development and CI machines. The output tags (``<think>``,
``<answer>``, ...) stay ordinary text: special tokens would be dropped by ``skip_special_tokens=True`` decoding.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Qwen2.5-VL's special tokens in its own id order; the tiny tokenizer gives them ids 0-7.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)
#: Pixel bounds of the release's SFT stages (256 and 576 merged 28x28 patches; its evaluation used the
#: checkpoint's saved processor bounds instead, docs/evaluation.md).
RELEASE_MIN_PIXELS, RELEASE_MAX_PIXELS = 256 * 28 * 28, 576 * 28 * 28
#: Tiny-model bounds: a 56x56 image becomes 2x2 merged patches (4 image tokens).
TINY_MIN_PIXELS, TINY_MAX_PIXELS = 56 * 56, 112 * 112
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelNotFoundError(FileNotFoundError):
    """A model could not be found locally nor fetched; the message says what was looked for and what to do."""


def tokenizer_corpus(extra_texts: Iterable[str] = ()) -> list[str]:
    """Texts the tiny tokenizer is trained on: every prompt, label and tag of the emotion and sentiment tasks.

    Tasks of other kinds (EmoNet-Face's yes/no verification) are left out, so that adding one does not change the
    tiny tokenizer and with it every tiny model, the demo's results among them; their prompts still encode
    (byte-level BPE), in more tokens."""
    from emocaliber import synthemo
    from emocaliber.prompts import SYSTEM_PROMPT, TEACHER_STRUCTURE, build_prompt, format_target
    from emocaliber.records import REASONING_PARTS
    from emocaliber.tasks import list_tasks

    texts = [SYSTEM_PROMPT, TEACHER_STRUCTURE, "no people present"]
    parts = {p: f"{p} text" for p in REASONING_PARTS}
    for spec in list_tasks():
        if spec.kind not in ("sentiment", "emotion"):
            continue
        for conf in (False, True):
            texts.append(build_prompt(spec.labels, with_confidence=conf, sentiment=spec.is_sentiment))
        for i, label in enumerate(spec.labels):
            texts.append(format_target(parts, label, (i % 19 + 1) / 20))
            texts.append(label)
    texts += [f"{c / 100:.2f}" for c in range(101)]
    texts += list(synthemo.tokenizer_corpus())
    texts += list(extra_texts)
    return texts


def build_tokenizer(corpus: Sequence[str], vocab_size: int = 1024):
    """A byte-level BPE over ``corpus`` with Qwen's special tokens, wrapped as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
    )


def qwen_chat_template() -> str:
    """Qwen2.5-VL's stock template as TRL ships it; byte-identical so TRL's training variant applies."""
    return (importlib.resources.files("trl") / "chat_templates" / "qwen2_5_vl.jinja").read_text()


def build_processor(tokenizer, min_pixels: int = TINY_MIN_PIXELS, max_pixels: int = TINY_MAX_PIXELS):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels),
        tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(), chat_template=qwen_chat_template(),
    )


def build_tiny_model(
    out_dir: str | os.PathLike,
    seed: int = 0,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_depth: int = 2,
    vision_hidden_size: int = 64,
    vocab_size: int = 1024,
    min_pixels: int = TINY_MIN_PIXELS,
    max_pixels: int = TINY_MAX_PIXELS,
    extra_texts: Iterable[str] = (),
) -> Path:
    """Build and save a tiny random Qwen2.5-VL with its tokenizer, processor and chat template.

    Sizes are multiples of 64 so bitsandbytes 4-bit can quantize every Linear on CPU. The same seed gives the
    same weights and tokenizer; the directory loads with ``AutoProcessor`` and ``AutoModelForImageTextToText``
    offline.
    """
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(tokenizer_corpus(extra_texts), vocab_size=vocab_size)
    processor = build_processor(tokenizer, min_pixels=min_pixels, max_pixels=max_pixels)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    heads = 4
    head_dim = hidden_size // heads
    # mrope sections must sum to head_dim / 2 (temporal, height, width); keep Qwen's 1:1.5:1.5 proportions.
    t = max(1, head_dim // 8)
    mrope = [t, (head_dim // 2 - t) // 2, head_dim // 2 - t - (head_dim // 2 - t) // 2]
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": num_layers, "num_attention_heads": heads, "num_key_value_heads": 2,
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "use_sliding_window": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope},
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": vision_depth, "hidden_size": vision_hidden_size, "intermediate_size": 2 * vision_hidden_size,
            "num_heads": 2, "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
            "window_size": 112, "out_hidden_size": hidden_size, "fullatt_block_indexes": [vision_depth - 1],
            "tokens_per_second": 2, "hidden_act": "silu",
        },
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
    )
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


def _resolve_dtype(dtype: Any):
    import torch

    if dtype in (None, "auto"):
        return "auto"
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[str(dtype)]
    except KeyError:
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {dtype!r}") from None


def check_model_source(name_or_path: str | os.PathLike) -> str:
    """Fail early, in one sentence, when a model is neither a local checkpoint nor a reachable hub id."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise ModelNotFoundError(f"{path} is a directory but holds no config.json: not a saved model")
        return str(path)
    looks_local = name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1) or path.exists()
    if looks_local or not _HUB_ID.match(name):
        raise ModelNotFoundError(f"no model directory at {path}; pass a saved checkpoint directory or a hub id")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return name
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ModelNotFoundError(
            f"model {name!r} is not a local directory and HF_HUB_OFFLINE=1 forbids downloading it; "
            f"download it once with network access (huggingface-cli download {name}) or pass a local path"
        )
    _check_hub(name)
    return name


#: Seconds to wait for the hub before a download is attempted: without this check, an unreachable hub costs
#: minutes of retries inside ``from_pretrained`` before it fails.
HUB_TIMEOUT = 10.0


def _check_hub(name: str) -> None:
    """One quick request to the hub for a model that is not cached; its failure is one sentence, not minutes."""
    from huggingface_hub import HfApi, constants

    try:
        HfApi(endpoint=os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).model_info(name, timeout=HUB_TIMEOUT)
    except Exception as e:  # noqa: BLE001 -- unreachable, unknown or gated: each is the user's to fix
        raise ModelNotFoundError(
            f"model {name!r} is not a local directory, not in the Hugging Face cache, and the hub did not give it "
            f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'no answer'}); check the network "
            "and the id (a gated model needs `huggingface-cli login`), or pass a local checkpoint directory"
        ) from None


def load_processor(name_or_path: str | os.PathLike, *, min_pixels: int | None = None, max_pixels: int | None = None,
                   padding_side: str | None = None, trust_remote_code: bool = False):
    """The checkpoint's processor, with optional pixel bounds and padding side (left for batched generation)."""
    from transformers import AutoProcessor

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if min_pixels is not None:
        kwargs["min_pixels"] = min_pixels
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels
    source = check_model_source(name_or_path)
    try:
        processor = AutoProcessor.from_pretrained(source, **kwargs)
    except OSError as e:
        raise ModelNotFoundError(f"could not load the processor of {source!r}: {str(e).splitlines()[0]}") from None
    if padding_side is not None:
        processor.tokenizer.padding_side = padding_side
    return processor


def load_model_and_processor(
    name_or_path: str | os.PathLike,
    *,
    dtype: Any = "auto",
    device: str | None = None,
    attn_implementation: str | None = None,
    quantization: str | None = None,
    lora: dict[str, Any] | Any | None = None,
    lora_vision: bool = False,
    trust_remote_code: bool = False,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    padding_side: str | None = None,
):
    """Load any Qwen2.5-VL checkpoint (local path or hub id) and its processor; the loader every stage uses.

    ``quantization`` is None, "4bit" (NF4, double quant) or "8bit" via bitsandbytes; ``lora`` is a
    ``peft.LoraConfig`` or its keyword arguments, applied to the language model only unless ``lora_vision``.
    A directory holding a peft adapter (adapter_config.json) loads its base model and the adapter.
    Weights load from safetensors only; remote code stays off unless asked.
    """
    from transformers import AutoModelForImageTextToText

    from emocaliber.weights import check_weights

    source = check_model_source(name_or_path)
    check_weights(source)  # a truncated file is a one-line error naming it, not a SafetensorError traceback
    adapter = Path(source, "adapter_config.json")
    if adapter.is_file():
        _check_adapter_weights(Path(source))  # before anything loads
    processor = load_processor(source, min_pixels=min_pixels, max_pixels=max_pixels, padding_side=padding_side,
                               trust_remote_code=trust_remote_code)
    kwargs: dict[str, Any] = {"dtype": _resolve_dtype(dtype), "trust_remote_code": trust_remote_code,
                              "use_safetensors": True}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization is not None:
        kwargs["quantization_config"] = _bnb_config(quantization)
    if device is not None and quantization is None:
        kwargs["device_map"] = device
    base = source
    if adapter.is_file():
        import json

        base = check_model_source(json.loads(adapter.read_text())["base_model_name_or_path"])
        check_weights(base)
    try:
        model = AutoModelForImageTextToText.from_pretrained(base, **kwargs)
    except OSError as e:
        raise ModelNotFoundError(f"could not load model weights from {base!r}: {str(e).splitlines()[0]}") from None
    if adapter.is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, source, is_trainable=lora is not None)
    elif quantization is not None and lora is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if lora is not None and not adapter.is_file():
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(lora, vision=lora_vision))
    return model, processor


def _check_adapter_weights(adapter_dir: Path) -> None:
    """Refuse an adapter without ``adapter_model.safetensors``: peft would fall back to ``adapter_model.bin``, a
    pickle that can run code when loaded, and weights load from safetensors only."""
    if (adapter_dir / "adapter_model.safetensors").is_file():
        return
    found = " (it holds adapter_model.bin, a pickle file, which is not loaded)" if (
        adapter_dir / "adapter_model.bin").is_file() else ""
    raise ModelNotFoundError(
        f"LoRA adapter {adapter_dir} has no adapter_model.safetensors{found}; convert it to safetensors: load it "
        "once from a trusted copy with peft and save_pretrained(dir, safe_serialization=True)")


#: Language-model projections of Qwen2.5-VL in transformers 5.x; the vision tower's MLP shares these names.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: What else ``vision=True`` adapts: the vision blocks' attention (``attn.qkv``, ``attn.proj``) and the merger's
#: two linear layers (``merger.mlp.0``, ``merger.mlp.2``), which the language-model names above do not reach.
VISION_LORA_TARGETS = ("qkv", "attn.proj", "merger.mlp.0", "merger.mlp.2")


def lora_config(lora: dict[str, Any] | Any, *, vision: bool = False):
    """A ``LoraConfig`` from kwargs; by default it excludes the vision tower so vLLM serves what was trained."""
    from peft import LoraConfig

    if isinstance(lora, LoraConfig):
        return lora
    targets = list(LORA_TARGETS) + (list(VISION_LORA_TARGETS) if vision else [])
    kwargs = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": targets, "task_type": "CAUSAL_LM",
              **dict(lora)}
    if not vision:
        kwargs.setdefault("exclude_modules", r".*visual.*")
    return LoraConfig(**kwargs)


def _bnb_config(quantization: str):
    import torch
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16)
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"quantization must be None, '4bit' or '8bit', got {quantization!r}")

"""One generation layer for CoT building, confidence targets and evaluation: requests in, K texts each out.

Two backends see the same text: both render prompts with the checkpoint's own chat template, so a number
measured with transformers on a laptop and one measured with vLLM on a GPU node differ only by the engine.

- :class:`TransformersBackend` runs anywhere (CPU included): batched ``generate`` with left padding, batches
  grouped by prompt length, each batch seeded from (seed, batch index) so a run is reproducible.
- :class:`VLLMBackend` is for GPUs: every prompt goes into one ``LLM.generate`` call and vLLM schedules them.
  vLLM's offline data parallelism fails for dense models, so a script of your own that wants several GPUs
  runs one process per GPU (``CUDA_VISIBLE_DEVICES=i``), each taking ``shard(items, i, N)`` and writing its
  own file; :func:`unshard` restores input order. ``eval/run_vecbench.py`` has no sharding option: it is one
  process on one GPU (choose it with ``CUDA_VISIBLE_DEVICES``, or ``--device`` under transformers).
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from PIL import Image

from emocaliber.prompts import SYSTEM_PROMPT, TEACHER_STRUCTURE, build_messages
from emocaliber.records import Record, RecordError, resolve_image
from emocaliber.resume import chunk_seed

logger = logging.getLogger(__name__)
T = TypeVar("T")


class ImageLoadError(ValueError):
    """A record's image is missing, outside the dataset root or not decodable."""


@dataclass
class GenerationRequest:
    """Chat messages with bare ``{"type": "image"}`` parts, and the images for them in order.

    ``id`` only labels the request in error messages and logs. ``regex``, when set, constrains the response to
    match it (vLLM's structured outputs; xgrammar under transformers, ``pip install xgrammar==0.2.8``).
    """

    messages: list[dict[str, Any]]
    images: list[Image.Image] = field(default_factory=list)
    id: str | None = None
    regex: str | None = None


@dataclass(frozen=True)
class SamplingSettings:
    """How to decode. ``temperature=0`` means greedy; then the ``n`` texts of an item are identical."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n (samples per item) must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class GenerationBackend(Protocol):
    name: str

    def generate(self, requests: Sequence[GenerationRequest], settings: SamplingSettings) -> list[list[str]]:
        """``settings.n`` texts per request, in request order."""


#: Qwen2.5-VL's image processor refuses an image whose long side is 200 times its short side or more
#: ("absolute aspect ratio must be smaller than 200").
MAX_ASPECT_RATIO = 200


def image_size_problem(width: int, height: int) -> str | None:
    """Why Qwen2.5-VL's processor would refuse an image of this size, or None. Checked when the image is
    loaded, because the processor's own error comes from inside a batch and would take the batch (and a long
    run) down with it instead of costing that one item."""
    if min(width, height) < 1:
        return f"is {width}x{height} pixels: empty"
    ratio = max(width, height) / min(width, height)
    if ratio >= MAX_ASPECT_RATIO:
        return (f"is {width}x{height} pixels, aspect ratio {ratio:.0f}:1; Qwen2.5-VL takes only images under "
                f"{MAX_ASPECT_RATIO}:1 (crop or pad it)")
    return None


def load_image(record: Record, image_root: str | os.PathLike) -> Image.Image:
    """The record's image as RGB, fully decoded now so a broken file fails here and not inside a batch.

    Messages read ``record '<id>': <kind>: <detail>`` so the report can count error rows by kind."""
    try:
        path = resolve_image(image_root, record.image)
    except RecordError as e:
        raise ImageLoadError(f"record {record.id!r}: {e}") from None
    try:
        with Image.open(path) as im:
            problem = image_size_problem(*im.size)  # the header says the size: no decoding a refused image
            image = None if problem else im.convert("RGB")
    except FileNotFoundError:
        raise ImageLoadError(f"record {record.id!r}: image not found: {path}; check --image-root") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageLoadError(f"record {record.id!r}: image could not be decoded: {path} ({e})") from None
    if image is None:
        raise ImageLoadError(f"record {record.id!r}: image size not accepted: {path} {problem}")
    return image


def record_request(
    record: Record,
    *,
    image_root: str | os.PathLike,
    with_confidence: bool = True,
    teacher: bool = False,
    system_prompt: str | None = SYSTEM_PROMPT,
    hint: str | None = None,
    constrained: bool = False,
) -> GenerationRequest:
    """The request for one record: the training/evaluation prompt, plus extra instructions for a teacher.

    ``teacher=True`` appends the five-part structure instruction; ``hint`` is appended after it (build_cot
    uses it to show the gold label). ``constrained=True`` attaches :func:`contract_regex` for the record's
    candidates. Raises :class:`ImageLoadError` naming the record and path.
    """
    image = load_image(record, image_root)
    messages = build_messages(record, with_confidence=with_confidence, system_prompt=system_prompt)
    extra = [t for t in (TEACHER_STRUCTURE if teacher else None, hint) if t]
    if extra:
        text_part = next(p for p in messages[-1]["content"] if p["type"] == "text")
        text_part["text"] = " ".join([text_part["text"], *extra])
    regex = contract_regex(record.candidates, with_confidence=with_confidence) if constrained else None
    return GenerationRequest(messages=messages, images=[image], id=record.id, regex=regex)


def contract_regex(candidates: Sequence[str], *, with_confidence: bool = True,
                   max_part_chars: int = 600) -> str:
    """The output contract as a regular expression: five non-empty parts without tags, one candidate, and a
    two-decimal confidence strictly inside (0, 1). Constrained outputs always parse (strict mode)."""
    import re

    from emocaliber.records import REASONING_PARTS

    part = f"[^<]{{1,{max_part_chars}}}"
    think = "<think>" + "".join(f"<{p}>{part}</{p}>" for p in REASONING_PARTS) + "</think>"
    answer = "<answer>(" + "|".join(re.escape(c) for c in candidates) + ")</answer>"
    confidence = r"<confidence>0\.(0[1-9]|[1-9][0-9])</confidence>" if with_confidence else ""
    return think + answer + confidence


def render_prompt(processor: Any, request: GenerationRequest) -> str:
    """The exact prompt text both backends feed the model (image placeholders for the engine to expand)."""
    return processor.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)


def shard(items: Sequence[T], index: int, count: int) -> list[T]:
    """Items ``index, index + count, ...``: a deterministic, balanced share for process ``index``."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index must be in [0, {count}) with count >= 1, got {index}/{count}")
    return list(items[index::count])


def unshard(shards: Sequence[Sequence[T]]) -> list[T]:
    """Inverse of :func:`shard` over all indices: interleave the per-process results back into input order."""
    total = sum(len(s) for s in shards)
    count = len(shards)
    return [shards[i % count][i // count] for i in range(total)]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` (as given to ``--shard``) -> (i, N)."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
    shard([], index, count)  # validates the range
    return index, count


class TransformersBackend:
    """Batched ``model.generate`` for CPU and single GPUs.

    Items are sorted by prompt length (image tokens included) so a batch pads little, generated in batches of
    ``batch_size`` with left padding, and returned in input order. Sampling is seeded per batch from
    (``settings.seed``, batch index), so the same requests, settings and batch size give the same texts.
    Greedy decoding does not depend on the batch size.
    """

    name = "transformers"

    def __init__(
        self,
        model: str | os.PathLike | tuple[Any, Any],
        *,
        batch_size: int = 16,
        dtype: Any = "auto",
        device: str | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        trust_remote_code: bool = False,
        progress: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(model, tuple):
            self.model, self.processor = model
            # An already-built processor keeps its bounds unless new ones are asked for per call.
            self._image_kwargs = _size_kwargs(self.processor, min_pixels, max_pixels)
        else:
            from emocaliber.modeling import load_model_and_processor

            self.model, self.processor = load_model_and_processor(
                model, dtype=dtype, device=device, min_pixels=min_pixels, max_pixels=max_pixels,
                padding_side="left", trust_remote_code=trust_remote_code)
            self._image_kwargs = {}
        self.model.eval()
        self.batch_size = batch_size
        self.progress = progress
        self._grammar_compiler: Any = None
        self._grammars: dict[str, Any] = {}

    def _encode(self, texts: list[str], images: list[Image.Image]):
        kwargs = dict(self._image_kwargs) if images else {}
        return self.processor(text=texts, images=images or None, padding=True, return_tensors="pt", **kwargs)

    def generate(self, requests: Sequence[GenerationRequest], settings: SamplingSettings) -> list[list[str]]:
        import torch
        from tqdm.auto import tqdm

        tokenizer = self.processor.tokenizer
        saved_side, tokenizer.padding_side = tokenizer.padding_side, "left"
        try:
            texts = [render_prompt(self.processor, r) for r in requests]
            lengths = self._length_estimates(texts, requests)
            # Longest first: a batch that does not fit in memory fails at once, not after an hour.
            order = sorted(range(len(requests)), key=lambda i: (-lengths[i], i))
            config = self._generation_config(settings)
            results: list[list[str]] = [[] for _ in requests]
            with torch.inference_mode(), tqdm(total=len(requests), desc="generate", unit="item",
                                               disable=not self.progress) as bar:
                for b, lo in enumerate(range(0, len(order), self.batch_size)):
                    idx = order[lo: lo + self.batch_size]
                    images = [im for i in idx for im in requests[i].images]
                    inputs = self._encode([texts[i] for i in idx], images)
                    inputs = inputs.to(self.model.device)
                    per_item = 1 if settings.greedy else settings.n
                    constraint = self._constraint([requests[i] for i in idx], per_item, config)
                    torch.manual_seed(chunk_seed(settings.seed, b))
                    out = self.model.generate(**inputs, generation_config=config, logits_processor=constraint)
                    new_tokens = out[:, inputs["input_ids"].shape[1]:]
                    new = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                    for j, i in enumerate(idx):
                        got = new[j * per_item: (j + 1) * per_item]
                        results[i] = got * settings.n if settings.greedy else got
                    bar.update(len(idx))
        finally:
            tokenizer.padding_side = saved_side
        return results

    def _length_estimates(self, texts: list[str], requests: Sequence[GenerationRequest]) -> list[float]:
        """Prompt lengths for grouping: text tokens plus image tokens estimated from each image's area
        (clamped to the processor's pixel bounds, one token per merged patch). Running the processor on every
        item just to sort would cost a third of the run; an estimate only changes how much a batch pads, never
        the outputs."""
        ids = self.processor.tokenizer(texts, add_special_tokens=False)["input_ids"]
        ip = getattr(self.processor, "image_processor", None)
        patch = getattr(ip, "patch_size", 14) * getattr(ip, "merge_size", 2)
        size = getattr(ip, "size", None) or {}
        lo = size.get("shortest_edge") or 0
        hi = size.get("longest_edge") or float("inf")

        def image_tokens(im: Image.Image) -> float:
            return min(max(im.width * im.height, lo), hi) / patch**2

        return [len(i) + sum(image_tokens(im) for im in r.images) for i, r in zip(ids, requests)]

    def _constraint(self, batch: list[GenerationRequest], per_item: int, config: Any):
        """An xgrammar logits processor with one grammar per output row (requests without a regex get one that
        accepts anything), or None when no request of the batch is constrained."""
        if not any(r.regex for r in batch):
            return None
        try:
            import xgrammar
            from transformers import LogitsProcessorList
            from xgrammar.contrib.hf import LogitsProcessor
        except ImportError:
            raise ImportError("regex-constrained generation with transformers needs xgrammar: "
                              "pip install xgrammar==0.2.8 (the version vLLM 0.33 pins)") from None
        if self._grammar_compiler is None:
            eos = config.eos_token_id
            info = xgrammar.TokenizerInfo.from_huggingface(
                self.processor.tokenizer, vocab_size=self.model.config.get_text_config().vocab_size,
                stop_token_ids=[eos] if isinstance(eos, int) else list(eos))
            self._grammar_compiler = xgrammar.GrammarCompiler(info)
        grammars = []
        for r in batch:
            pattern = r.regex or r"[\s\S]*"
            if pattern not in self._grammars:
                self._grammars[pattern] = self._grammar_compiler.compile_regex(pattern)
            grammars += [self._grammars[pattern]] * per_item
        return LogitsProcessorList([LogitsProcessor(grammars)])

    def _generation_config(self, settings: SamplingSettings):
        """Explicit decoding settings; the checkpoint's sampling defaults (top_k, repetition penalty) are
        switched off so transformers decodes like vLLM with the same :class:`SamplingSettings`."""
        config = copy.deepcopy(self.model.generation_config)
        if config.pad_token_id is None:
            config.pad_token_id = self.processor.tokenizer.pad_token_id
        # None would fall back to the checkpoint's and then transformers' defaults (top_k=50): set every one.
        config.update(max_new_tokens=settings.max_new_tokens, repetition_penalty=1.0, min_p=None,
                      typical_p=1.0, num_beams=1)
        if settings.greedy:
            # Greedy search cannot return several sequences; generate once, repeat n times.
            config.update(do_sample=False, temperature=None, top_p=None, top_k=None, num_return_sequences=1)
        else:
            config.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0,
                          num_return_sequences=settings.n)
        return config


def _size_kwargs(processor: Any, min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
    """Per-call pixel bounds in the form Qwen's image processor takes (the other bound kept as it is)."""
    if min_pixels is None and max_pixels is None:
        return {}
    current = getattr(getattr(processor, "image_processor", None), "size", None) or {}
    return {"size": {"shortest_edge": min_pixels if min_pixels is not None else current.get("shortest_edge"),
                     "longest_edge": max_pixels if max_pixels is not None else current.get("longest_edge")}}


def vllm_engine_kwargs(
    model: str | os.PathLike,
    *,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    limit_mm_per_prompt: dict[str, int] | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    seed: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """Arguments for ``vllm.LLM``; the pixel bounds must equal the HF processor's or vLLM assigns a different
    number of image tokens than training used. Weights load from safetensors only, as with transformers.

    ``limit_mm_per_prompt`` always holds ``video: 0`` unless the caller sets a video limit: prompts here carry
    one image and no video, and without it vLLM reserves memory for dummy videos when it profiles the engine.
    """
    kwargs: dict[str, Any] = {
        "model": str(model), "tensor_parallel_size": tensor_parallel_size,
        "gpu_memory_utilization": gpu_memory_utilization,
        "limit_mm_per_prompt": {"image": 1, "video": 0, **(limit_mm_per_prompt or {})}, "seed": seed,
        # vLLM's default "auto" falls back to PyTorch .bin files, which are pickles and can run code on load.
        "load_format": "safetensors",
    }
    if extra.get("load_format", "safetensors") != "safetensors":
        raise ValueError(f"load_format must be 'safetensors' (weights load from safetensors only), "
                         f"got {extra['load_format']!r}")
    mm = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    if mm:
        kwargs["mm_processor_kwargs"] = mm
    kwargs.update(extra)
    return kwargs


def vllm_inputs(
    requests: Sequence[GenerationRequest], processor: Any, settings: SamplingSettings
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """What :class:`VLLMBackend` submits: one prompt dict per request and the ``SamplingParams`` arguments.

    Greedy requests ask vLLM for one sequence (the backend repeats it ``n`` times), as transformers does.
    When a request has a ``regex`` the arguments are a list, one per prompt, with ``structured_outputs``.
    """
    prompts = []
    for r in requests:
        prompt: dict[str, Any] = {"prompt": render_prompt(processor, r)}
        if r.images:
            prompt["multi_modal_data"] = {"image": r.images[0] if len(r.images) == 1 else list(r.images)}
        prompts.append(prompt)
    params: dict[str, Any] | list[dict[str, Any]] = {
        "n": 1 if settings.greedy else settings.n,
        "temperature": settings.temperature,
        "top_p": 1.0 if settings.greedy else settings.top_p,
        "max_tokens": settings.max_new_tokens,
        "seed": settings.seed,
    }
    if any(r.regex for r in requests):
        # Constraints are per request, so each prompt gets its own SamplingParams.
        params = [{**params, **({"structured_outputs": {"regex": r.regex}} if r.regex else {})}
                  for r in requests]
    return prompts, params


class VLLMBackend:
    """vLLM offline engine (GPU). One engine per process; see the module docstring for one process per GPU."""

    name = "vllm"

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        limit_mm_per_prompt: dict[str, int] | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        seed: int = 0,
        progress: bool = True,
        **engine_kwargs: Any,
    ) -> None:
        refuse_lora_adapter(model)
        from vllm import LLM  # imported here: vLLM is an optional GPU-only extra

        from emocaliber.modeling import load_processor

        self.processor = load_processor(model, min_pixels=min_pixels, max_pixels=max_pixels,
                                        trust_remote_code=engine_kwargs.get("trust_remote_code", False))
        self.llm = LLM(**vllm_engine_kwargs(
            model, tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
            limit_mm_per_prompt=limit_mm_per_prompt, min_pixels=min_pixels, max_pixels=max_pixels, seed=seed,
            **engine_kwargs))
        self.progress = progress

    def generate(self, requests: Sequence[GenerationRequest], settings: SamplingSettings) -> list[list[str]]:
        from vllm import SamplingParams

        def sampling_params(kwargs: dict[str, Any]):
            if "structured_outputs" in kwargs:
                from vllm.sampling_params import StructuredOutputsParams

                constraint = StructuredOutputsParams(**kwargs["structured_outputs"])
                kwargs = {**kwargs, "structured_outputs": constraint}
            return SamplingParams(**kwargs)

        prompts, params = vllm_inputs(requests, self.processor, settings)
        sp = [sampling_params(p) for p in params] if isinstance(params, list) else sampling_params(params)
        outputs = self.llm.generate(prompts, sp, use_tqdm=self.progress)
        texts = [[c.text for c in o.outputs] for o in outputs]
        return [t * settings.n for t in texts] if settings.greedy else texts


BACKENDS = ("auto", "vllm", "transformers")


def is_lora_adapter(model: Any) -> bool:
    """True for a directory holding a peft adapter (``adapter_config.json``) rather than a full checkpoint."""
    return isinstance(model, (str, os.PathLike)) and os.path.isfile(os.path.join(model, "adapter_config.json"))


def refuse_lora_adapter(model: Any) -> None:
    """vLLM loads full checkpoints here: an adapter directory has no ``config.json`` for ``vllm.LLM`` to read,
    and serving it through vLLM's LoRA support would drop any vision-tower LoRA weights, which vLLM ignores."""
    if is_lora_adapter(model):
        raise ValueError(f"{model} is a LoRA adapter, which the vLLM backend does not load; merge it into a full "
                         "checkpoint with python recipes/merge_lora.py --adapter DIR --out DIR, or use --backend "
                         "transformers")


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


#: Options only one backend understands; :func:`get_backend` drops those of the other one, so a command line
#: can offer both sets and still let ``auto`` choose.
_ONLY = {
    "transformers": frozenset({"batch_size", "device"}),
    "vllm": frozenset({"tensor_parallel_size", "gpu_memory_utilization", "limit_mm_per_prompt", "seed",
                       "max_model_len", "enforce_eager"}),
}


def resolve_backend(model: Any, backend: str = "auto") -> str:
    """The backend name ``auto`` stands for: vLLM when it is installed and a GPU is visible, else transformers
    (always transformers for an in-memory ``(model, processor)``). Logs the choice and why."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    import torch

    has_vllm, has_gpu = vllm_available(), torch.cuda.is_available()
    adapter = is_lora_adapter(model)
    name = "vllm" if has_vllm and has_gpu and not isinstance(model, tuple) and not adapter else "transformers"
    why = ("vLLM and a GPU are available" if name == "vllm" else "vLLM is not installed" if not has_vllm
           else "no GPU is visible" if not has_gpu else "an in-memory model was given" if not adapter
           else "a LoRA adapter, which vLLM does not load; recipes/merge_lora.py merges it for vLLM")
    logger.info("generation backend: %s (%s)", name, why)
    return name


def get_backend(model: Any, backend: str = "auto", **opts: Any) -> GenerationBackend:
    """A backend for ``model`` (path, hub id, or ``(model, processor)`` for transformers).

    ``opts`` go to the backend's constructor; options left at None are dropped, and so are options of the
    other backend (``batch_size`` under vLLM, ``tensor_parallel_size`` under transformers). A misspelt option
    is still an error.
    """
    name = resolve_backend(model, backend)
    other = "transformers" if name == "vllm" else "vllm"
    dropped = sorted(k for k in opts if k in _ONLY[other])
    if dropped:
        logger.debug("options %s are for the %s backend; not used by %s", dropped, other, name)
    kwargs = {k: v for k, v in opts.items() if v is not None and k not in _ONLY[other]}
    if name == "vllm":
        if not vllm_available():
            raise ImportError("backend 'vllm' needs vLLM: pip install 'emocaliber[vllm]' (GPU machines only)")
        return VLLMBackend(model, **kwargs)
    return TransformersBackend(model, **kwargs)


def generate(
    items: Sequence[Record | GenerationRequest],
    *,
    backend: GenerationBackend | str | None = None,
    model: Any = None,
    n: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 512,
    seed: int = 0,
    image_root: str | os.PathLike | None = None,
    with_confidence: bool = True,
    **backend_opts: Any,
) -> list[list[str]]:
    """``n`` texts per item. Records become requests through :func:`record_request` (needs ``image_root``).

    ``backend`` is a backend object, or a name for :func:`get_backend` together with ``model``.
    """
    requests = []
    for item in items:
        if isinstance(item, GenerationRequest):
            requests.append(item)
        elif image_root is None:
            raise ValueError("records need image_root to load their images")
        else:
            requests.append(record_request(item, image_root=image_root, with_confidence=with_confidence))
    if backend is None or isinstance(backend, str):
        if model is None:
            raise ValueError("pass a backend object or a model (path, hub id or (model, processor))")
        backend = get_backend(model, backend or "auto", **backend_opts)
    settings = SamplingSettings(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                seed=seed)
    return backend.generate(requests, settings)


def add_backend_arguments(parser: Any) -> None:
    """The generation options every command line shares (build_cot, build_confidence_targets, benchmarks)."""
    g = parser.add_argument_group("generation backend")
    g.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto: vLLM when installed and a GPU is visible, else transformers")
    g.add_argument("--batch-size", type=int, default=16, help="transformers: prompts per generate call")
    g.add_argument("--dtype", default="auto", help="auto, bfloat16, float16 or float32")
    g.add_argument("--device", default=None, help="transformers: e.g. cuda:0 (default: CPU)")
    g.add_argument("--min-pixels", type=int, default=None, help="pixel lower bound (default: processor's)")
    g.add_argument("--max-pixels", type=int, default=None, help="pixel upper bound (default: processor's)")
    g.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM: GPUs per model copy")
    g.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vLLM: fraction of GPU memory")


def backend_from_args(model: Any, args: Any, *, progress: bool = True) -> GenerationBackend:
    """The backend :func:`add_backend_arguments`' options describe."""
    return get_backend(model, args.backend, batch_size=args.batch_size, dtype=args.dtype, device=args.device,
                       min_pixels=args.min_pixels, max_pixels=args.max_pixels,
                       tensor_parallel_size=args.tensor_parallel_size,
                       gpu_memory_utilization=args.gpu_memory_utilization, seed=getattr(args, "seed", 0),
                       progress=progress)

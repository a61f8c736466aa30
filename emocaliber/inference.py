"""The Python API: load EmoCaliber (or any checkpoint of this project) and ask it about images.

    >>> from emocaliber import EmoCaliber
    >>> model = EmoCaliber.from_pretrained("wudq/EmoCaliber")            # or a local checkpoint directory
    >>> pred = model.predict("photo.jpg")                                 # Mikels' eight emotions
    >>> pred.label, pred.confidence, pred.reasoning["analysis"]
    >>> model.predict(image, task="WebEmo-7"); model.predict(image, candidates=["positive", "negative"])

Choices and why:
- Default candidates: the task ``EmoSet-8`` (Mikels' eight emotions in the released order), because that label
  set is shared by four of the nine VECBench tasks (FI-8, EmoSet-8, Abstract-8, Artphoto-8) and is what the
  model saw most in training. Candidates exactly ``positive``/``negative`` (either order) get the sentiment
  question, as a task of kind "sentiment" does.
- Greedy decoding by default, so the same image gives the same answer; the release's evaluation sampled at
  temperature 0.7 (pass ``temperature=0.7`` to match it).
- The response is read with the strict parser by default: the label is set only when the answer names one
  candidate; ``valid`` and ``problems`` say whether the whole format (five-part reasoning, answer, confidence)
  was respected. ``parse_mode="emocaliber"`` applies the original evaluation's substring rules instead.
- Images are local only: a path, a PIL image or an H x W x 3 uint8 array. URLs are refused rather than fetched,
  so the library never makes network requests on a caller's behalf (the model download aside).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emocaliber.tasks import get_task

DEFAULT_MODEL = "wudq/EmoCaliber"
DEFAULT_TASK = "EmoSet-8"
#: The release's generation budget; a full five-part answer is 200-400 tokens.
DEFAULT_MAX_NEW_TOKENS = 1024
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://|^data:", re.ASCII)
_SENTIMENT = ("negative", "positive")


class InputError(ValueError):
    """A request that cannot be served as given (image, task, candidates, backend); the message says what to
    pass instead."""


@dataclass
class Prediction:
    """What the model answered about one image.

    ``label`` is one of ``candidates`` or None (no candidate named); ``confidence`` is in [0, 1] or None;
    ``reasoning`` maps the five parts (element, human, context, interaction, analysis) to their text, parts the
    response lacks are absent; ``raw`` is the full response; ``valid`` says the response has the complete
    format, and ``problems`` lists what is wrong otherwise.
    """

    label: str | None
    confidence: float | None
    reasoning: dict[str, str]
    raw: str
    valid: bool
    problems: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for people: the label and confidence, or why there is none."""
        label = self.label if self.label is not None else "(no label)"
        conf = f"confidence {self.confidence:.2f}" if self.confidence is not None else "no confidence"
        note = "" if self.valid else f"  [invalid response: {'; '.join(self.problems) or 'incomplete format'}]"
        return f"{label}\t{conf}{note}"


def resolve_candidates(candidates: Sequence[str] | str | None = None, task: str | None = None,
                       ) -> tuple[list[str], bool]:
    """The candidate list in prompt order and whether to ask the sentiment question.

    Give either ``task`` (its registered labels) or ``candidates`` (a list, or one comma-separated string);
    with neither, :data:`DEFAULT_TASK`'s labels are used.
    """
    if candidates is not None and task is not None:
        raise InputError("give either candidates or task, not both (a task defines its own candidates)")
    if candidates is None:
        try:
            spec = get_task(task or DEFAULT_TASK)
        except KeyError as e:
            raise InputError(e.args[0]) from None
        return list(spec.labels), spec.is_sentiment
    if isinstance(candidates, str):
        candidates = candidates.split(",")
    labels = [str(c).strip() for c in candidates]
    if not labels or any(not c for c in labels):
        raise InputError(f"candidates must be non-empty labels, got {list(candidates)!r}")
    if len({c.lower() for c in labels}) != len(labels):
        raise InputError(f"candidates contain duplicates: {labels}")
    return labels, tuple(sorted(c.lower() for c in labels)) == _SENTIMENT


def load_image(image: Any):
    """``image`` as an RGB PIL image: a local path, a PIL image or an H x W x 3 uint8 array. Never fetches URLs.

    A size the model's processor would refuse (e.g. 600 x 2 pixels) is an :class:`InputError` here rather than
    a traceback from inside generation."""
    from emocaliber.generation import image_size_problem

    rgb = _read_image(image)
    problem = image_size_problem(*rgb.size)
    if problem:
        where = f"image {os.fspath(image)}" if isinstance(image, (str, os.PathLike)) else "the image"
        raise InputError(f"{where} {problem}")
    return rgb


def _read_image(image: Any):
    """:func:`load_image` before its size check."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        text = os.fspath(image)
        if _URL.match(text):
            raise InputError(f"{text[:80]} is a URL; EmoCaliber does not download images: save it and pass the "
                             "local file path (or a PIL image)")
        path = Path(text).expanduser()
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except FileNotFoundError:
            raise InputError(f"image not found: {path}") from None
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise InputError(f"image {path} could not be read as an image ({e})") from None
    if type(image).__module__ == "numpy" and type(image).__name__ == "ndarray":
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype.name != "uint8":
            raise InputError(f"an image array must be H x W x 3 uint8 (RGB), got shape {image.shape} and "
                             f"dtype {image.dtype}")
        import numpy as np

        return Image.fromarray(np.ascontiguousarray(image))
    raise InputError(f"an image must be a file path, a PIL image or an H x W x 3 uint8 numpy array, "
                     f"got {type(image).__name__}")


def build_request(image: Any, candidates: Sequence[str] | str | None = None, task: str | None = None):
    """The generation request for one image: the released evaluation prompt (with the confidence instruction)
    around the image, with the training system prompt, exactly as the evaluation runner asks its records."""
    from emocaliber.generation import GenerationRequest
    from emocaliber.prompts import SYSTEM_PROMPT, build_prompt

    labels, sentiment = resolve_candidates(candidates, task)
    messages = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": build_prompt(
            labels, with_confidence=True, sentiment=sentiment)}]},
    ]
    return GenerationRequest(messages=messages, images=[load_image(image)]), labels


def default_device() -> str | None:
    """The first GPU when there is one; None (CPU) otherwise."""
    import torch

    return "cuda" if torch.cuda.is_available() else None


class EmoCaliber:
    """A loaded model and its generation backend; see the module docstring for the defaults."""

    def __init__(self, backend: Any, *, name_or_path: str = DEFAULT_MODEL, parse_mode: str = "strict") -> None:
        from emocaliber.parsing import MODES

        if parse_mode not in MODES:
            raise ValueError(f"parse_mode must be one of {MODES}, got {parse_mode!r}")
        self.backend = backend
        self.name_or_path = name_or_path
        self.parse_mode = parse_mode

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = DEFAULT_MODEL,
        *,
        device: str | None = None,
        dtype: Any = "auto",
        backend: str = "transformers",
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        trust_remote_code: bool = False,
        batch_size: int = 8,
        parse_mode: str = "strict",
    ) -> EmoCaliber:
        """Load a Qwen2.5-VL checkpoint saved like the release (a model directory or a hub id).

        ``backend="transformers"`` runs anywhere (``device`` None = the first GPU if any, else CPU);
        ``"vllm"`` needs a GPU and the ``vllm`` extra; ``"auto"`` picks vLLM when both are there. Pixel bounds
        default to the checkpoint's processor (so did the release's evaluation). A missing model
        raises :class:`emocaliber.modeling.ModelNotFoundError` saying what was looked for.
        """
        from emocaliber.generation import (
            TransformersBackend,
            get_backend,
            refuse_lora_adapter,
            resolve_backend,
            vllm_available,
        )
        from emocaliber.modeling import check_model_source, load_model_and_processor

        source = check_model_source(name_or_path)
        if resolve_backend(name_or_path, backend) == "vllm":
            if not vllm_available():
                raise InputError("backend 'vllm' needs vLLM: pip install 'emocaliber[vllm]' (GPU machines only), "
                                 "or use backend='transformers'")
            try:
                refuse_lora_adapter(source)
            except ValueError as e:
                raise InputError(str(e)) from None
            engine = get_backend(source, "vllm", min_pixels=min_pixels, max_pixels=max_pixels, dtype=dtype,
                                 trust_remote_code=trust_remote_code, progress=False)
        else:
            model, processor = load_model_and_processor(
                source, dtype=dtype, device=device if device is not None else default_device(),
                min_pixels=min_pixels, max_pixels=max_pixels, padding_side="left",
                trust_remote_code=trust_remote_code)
            engine = TransformersBackend((model, processor), batch_size=batch_size, progress=False)
        return cls(engine, name_or_path=str(name_or_path), parse_mode=parse_mode)

    def predict(self, image: Any, candidates: Sequence[str] | str | None = None, task: str | None = None, *,
                temperature: float = 0.0, top_p: float = 1.0, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                seed: int = 0) -> Prediction:
        """Label one image (path, PIL image or H x W x 3 uint8 array); see :class:`Prediction`."""
        return self.predict_batch([image], candidates, task, temperature=temperature, top_p=top_p,
                                  max_new_tokens=max_new_tokens, seed=seed)[0]

    def predict_batch(self, images: Sequence[Any], candidates: Sequence[str] | str | None = None,
                      task: str | None = None, *, temperature: float = 0.0, top_p: float = 1.0,
                      max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, seed: int = 0) -> list[Prediction]:
        """Label several images with the same candidates in one batched generation call, in input order."""
        from emocaliber.generation import SamplingSettings
        from emocaliber.parsing import parse_response

        if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
            raise InputError("predict_batch takes a list of images; use predict for one image")
        built = [build_request(im, candidates, task) for im in images]
        settings = SamplingSettings(n=1, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                    seed=seed)
        texts = self.backend.generate([request for request, _ in built], settings) if built else []
        out = []
        for (_, labels), (raw, *_) in zip(built, texts):
            parsed = parse_response(raw, labels, mode=self.parse_mode)
            out.append(Prediction(label=parsed.label, confidence=parsed.confidence, reasoning=dict(parsed.reasoning),
                                  raw=raw, valid=parsed.valid_format, problems=list(parsed.problems),
                                  candidates=labels))
        return out

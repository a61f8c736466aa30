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
  was respected. ``parse_mode="release"`` applies the original evaluation's substring rules instead.
- Images are local only: a path, a PIL image or an H x W x 3 uint8 array. URLs are refused rather than fetched,
  so the library never makes network requests on a caller's behalf (the model download aside).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
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


def load_image(image: Any, *, pixel_limit: int | None = None):
    """``image`` as an RGB PIL image: a local path, a PIL image or an H x W x 3 uint8 array. Never fetches URLs.

    Files go through the project's one loader (:func:`emocaliber.images.open_image`); a size the model's processor
    would refuse (e.g. 600 x 2 pixels) is an :class:`InputError` here rather than a traceback from inside
    generation. ``pixel_limit`` refuses larger images from the file header, before any decoding."""
    from PIL import Image

    from emocaliber.images import ImageLoadError, check_image, open_image

    try:
        if isinstance(image, Image.Image):
            return check_image(image, pixel_limit=pixel_limit)
        if isinstance(image, (str, os.PathLike)):
            text = os.fspath(image)
            if _URL.match(text):
                raise InputError(f"{text[:80]} is a URL; EmoCaliber does not download images: save it and pass "
                                 "the local file path (or a PIL image)")
            return open_image(Path(text).expanduser(), pixel_limit=pixel_limit)
        if type(image).__module__ == "numpy" and type(image).__name__ == "ndarray":
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype.name != "uint8":
                raise InputError(f"an image array must be H x W x 3 uint8 (RGB), got shape {image.shape} and "
                                 f"dtype {image.dtype}")
            import numpy as np

            return check_image(Image.fromarray(np.ascontiguousarray(image)), pixel_limit=pixel_limit)
    except ImageLoadError as e:
        raise InputError(str(e)) from None
    raise InputError(f"an image must be a file path, a PIL image or an H x W x 3 uint8 numpy array, "
                     f"got {type(image).__name__}")


def build_request(image: Any, candidates: Sequence[str] | str | None = None, task: str | None = None, *,
                  constrained: bool = False):
    """The generation request for one image: the released evaluation prompt (with the confidence instruction)
    around the image, with the training system prompt, exactly as the evaluation runner asks its records.
    ``constrained`` attaches the output contract's regular expression (:func:`generation.contract_regex`)."""
    from emocaliber.generation import GenerationRequest, contract_regex
    from emocaliber.prompts import SYSTEM_PROMPT, build_prompt

    labels, sentiment = resolve_candidates(candidates, task)
    messages = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": build_prompt(
            labels, with_confidence=True, sentiment=sentiment)}]},
    ]
    regex = contract_regex(labels) if constrained else None
    return GenerationRequest(messages=messages, images=[load_image(image)], regex=regex), labels


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
                seed: int = 0, constrained: bool = False) -> Prediction:
        """Label one image (path, PIL image or H x W x 3 uint8 array); see :class:`Prediction`.

        ``constrained=True`` decodes under the output contract's grammar (xgrammar with transformers), so the
        response always has the five parts, a candidate and a confidence: for a model that has not learned the
        format, it shows what the model prefers within it."""
        return self.predict_batch([image], candidates, task, temperature=temperature, top_p=top_p,
                                  max_new_tokens=max_new_tokens, seed=seed, constrained=constrained)[0]

    def predict_batch(self, images: Sequence[Any], candidates: Sequence[str] | str | None = None,
                      task: str | None = None, *, temperature: float = 0.0, top_p: float = 1.0,
                      max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, seed: int = 0,
                      constrained: bool = False) -> list[Prediction]:
        """Label several images with the same candidates in one batched generation call, in input order."""
        from emocaliber.generation import SamplingSettings
        from emocaliber.parsing import parse_response

        if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
            raise InputError("predict_batch takes a list of images; use predict for one image")
        built = [build_request(im, candidates, task, constrained=constrained) for im in images]
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


# ------------------------------------------------------------------------------- the predict command
PREDICT_DESCRIPTION = """\
Ask EmoCaliber which emotion an image evokes: it reasons in five steps, names one label from the candidates
and says how confident it is. Prints the label and confidence (or everything as JSON with --json).

Candidates come from --candidates (comma-separated) or from a task's label set (--task); with neither, the
eight Mikels emotions of EmoSet-8 are offered. Candidates exactly 'positive,negative' ask the sentiment question.
Images are local files; URLs are refused (nothing is downloaded except the model itself)."""

PREDICT_EPILOG = """\
examples:
  %(prog)s photo.jpg                                   # released model, the eight Mikels emotions
  %(prog)s photo.jpg --task WebEmo-7                   # that task's labels
  %(prog)s photo.jpg --candidates positive,negative    # sentiment
  %(prog)s a.jpg b.jpg --model ckpt/stage3 --json      # a local checkpoint, one JSON object per line
  %(prog)s photo.jpg --temperature 0.7                 # sample like the release's evaluation (default: greedy)

The first use of the default model downloads it from the Hugging Face hub (wudq/EmoCaliber, about 16 GB)."""


def _temperature(text: str) -> float:
    """A sampling temperature: a finite number >= 0, refused by the parser rather than after the model loads."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 (0 = greedy), got {text}")
    return value


def add_predict_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from emocaliber.argtypes import whole_number

    _positive_int = whole_number(1)
    p = parser
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file(s): jpg, png, ...")
    p.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint directory or hub id (default %(default)s)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--task", help="use this task's labels as candidates, e.g. FI-8, WebEmo-25, FI-2")
    which.add_argument("--candidates", metavar="A,B,C", help="comma-separated labels to choose from")
    p.add_argument("--json", action="store_true", help="print each prediction as one JSON object per line, with "
                                                       "the reasoning and the raw response")
    p.add_argument("--temperature", type=_temperature, default=0.0, help="0 = greedy (default %(default)s)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=DEFAULT_MAX_NEW_TOKENS,
                   help="longest response in tokens (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed when --temperature > 0 (default 0)")
    p.add_argument("--backend", choices=("transformers", "vllm", "auto"), default="transformers",
                   help="generation backend (default %(default)s)")
    p.add_argument("--device", help="torch device for the transformers backend, e.g. cuda:0 or cpu "
                                    "(default: the first GPU if any, else cpu)")
    p.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float16", "float32"),
                   help="weight dtype (default %(default)s: the checkpoint's)")
    p.add_argument("--min-pixels", type=_positive_int, help="image pixel lower bound (default: the checkpoint's "
                                                            "processor, which the release's evaluation used too)")
    p.add_argument("--max-pixels", type=_positive_int, help="image pixel upper bound (default: the checkpoint's "
                                                            "processor, which the release's evaluation used too)")
    p.add_argument("--parse-mode", choices=("strict", "release"), default="strict",
                   help="strict: the label only when the answer names one candidate; release: the original "
                        "evaluation's substring rules (default %(default)s)")
    return p


def run_predict(args: argparse.Namespace, prog: str) -> int:
    from emocaliber.modeling import ModelNotFoundError

    try:
        # Inputs first: a typo in a task or a path should not wait for a 16 GB model to load.
        resolve_candidates(args.candidates, args.task)
        images = [load_image(path) for path in args.images]
        model = EmoCaliber.from_pretrained(args.model, device=args.device, dtype=args.dtype, backend=args.backend,
                                           min_pixels=args.min_pixels, max_pixels=args.max_pixels,
                                           parse_mode=args.parse_mode)
        predictions = model.predict_batch(images, candidates=args.candidates, task=args.task,
                                          temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                          seed=args.seed)
    except (ModelNotFoundError, InputError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    for path, pred in zip(args.images, predictions):
        if args.json:
            print(json.dumps({"image": path, **pred.to_dict()}, ensure_ascii=False))
        else:
            print(f"{path}\t{pred.summary()}")
    unlabelled = [(path, pred) for path, pred in zip(args.images, predictions) if pred.label is None]
    for path, pred in unlabelled:  # a confidence without a label from the list is no prediction at all
        print(f"{prog}: error: {path}: the model's answer names none of the candidates {pred.candidates} "
              f"({'; '.join(pred.problems) or 'no answer'})", file=sys.stderr)
    return 1 if unlabelled else 0


def main(argv: Sequence[str] | None = None, prog: str = "emocaliber predict") -> int:
    """``emocaliber predict``: label images from the command line."""
    from emocaliber.evaluation import OneLineErrorParser

    parser = OneLineErrorParser(prog=prog, description=PREDICT_DESCRIPTION, epilog=PREDICT_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    return run_predict(add_predict_arguments(parser).parse_args(argv), prog)

"""SynthEmo: a procedurally drawn emotion world where the best achievable confidence of every image is known.

Why it exists: no dataset or model can be downloaded on development machines, yet the pipeline must show real
learning of format, accuracy and *calibration*. Each Mikels emotion has a visual prototype dominated by a
flat, spatially uniform background colour (a corner of the RGB cube, so the tiny model's few merged image
tokens can read it), with a brightness, a shape family, a texture and a composition on top. A fraction of
images alpha-blend two prototypes with weight ``w`` (pixels = w * A + (1 - w) * B), so the ambiguity is
visible in the pixels.

Labels (documented choice): the label is drawn from the image's mixture, primary with probability ``w`` and
secondary otherwise, and then, with probability ``label_noise`` (default 0.05), replaced by a uniform draw
over the eight emotions, so that even pure images are not certain. Hence for a SynthEmo-8 record

    oracle_label = primary,  oracle_confidence = (1 - eps) * w + eps / 8      (w = 1 for pure images),

and for SynthEmo-2 the same sums taken per polarity. ``oracle_confidence`` is the parameter oracle: the
probability that the Bayes-optimal answer given the generating parameters is right. The pixels reveal those
parameters almost exactly (the colour of a blend lies on the segment between two cube corners, and the heavier
prototype's shape is the more opaque one), so the pixel-level optimum sits at most slightly below it.

Stage-1 corpus (documented choice): ``ground_truth`` is the *drawn* label by default, like an annotator's
label in real data. The teacher's analysis is written from the parameters (it names both emotions and which
dominates), so a model trained on drawn labels learns an answer distribution that follows ``w``; sampling that
model K times (stage-2 confidence targets) then carries the per-image ambiguity. Training on oracle labels
(``stage1_label="oracle"``) would teach a sharp answer distribution whose samples all agree, erasing that
signal.

Tasks (declared in ``emocaliber.tasks``): SynthEmo-8 ("Synth VER"), SynthEmo-2 ("Synth VSA", polarity of the same images,
as FI-2 shares FI-8's images) and SynthEmo-OOD-8 ("Synth OOD", test only: same colour semantics drawn in a
shifted style with outlined shapes, hatching and stronger jitter).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emocaliber.argtypes import float_pair, whole_number
from emocaliber.records import REASONING_PARTS, Record, write_jsonl
from emocaliber.tasks import MIKELS_8, MIKELS_TO_POLARITY, POLARITY_2, canonical_task_name

SOURCE = "SynthEmo"
TASK_8, TASK_2, TASK_OOD = "SynthEmo-8", "SynthEmo-2", "SynthEmo-OOD-8"
TASKS = (TASK_8, TASK_2, TASK_OOD)
BASE, SHIFTED = "base", "shifted"
EMOTIONS = MIKELS_8


@dataclass(frozen=True)
class Prototype:
    """One emotion's look. ``colour`` is an RGB-cube corner: a blend of two never passes through a third."""

    emotion: str
    colour: tuple[float, float, float]
    brightness: str  # "bright" fields get dark ink, "dark" fields light ink
    shape: str
    texture: str
    composition: str


PROTOTYPES: dict[str, Prototype] = {p.emotion: p for p in (
    Prototype("awe", (0.0, 1.0, 1.0), "bright", "peak", "gradient", "towering"),
    Prototype("amusement", (1.0, 1.0, 0.0), "bright", "bubbles", "grain", "scattered"),
    Prototype("contentment", (0.0, 1.0, 0.0), "bright", "band", "smooth", "low"),
    Prototype("excitement", (1.0, 1.0, 1.0), "bright", "burst", "grain", "centred"),
    Prototype("anger", (1.0, 0.0, 0.0), "dark", "spikes", "grain", "rising"),
    Prototype("sadness", (0.0, 0.0, 1.0), "dark", "rain", "smooth", "falling"),
    Prototype("fear", (0.0, 0.0, 0.0), "dark", "eyes", "grain", "centred"),
    Prototype("disgust", (1.0, 0.0, 1.0), "dark", "blobs", "speckle", "scattered"),
)}
#: Background levels stay inside [LO, HI] so texture and noise have room on both sides.
LO, HI = 0.14, 0.86


def prototype_rgb(emotion: str) -> np.ndarray:
    """The flat background colour of an emotion, in [0, 1]."""
    return LO + (HI - LO) * np.asarray(PROTOTYPES[emotion].colour, dtype=np.float32)


# ----------------------------------------------------------------------------------------------- parameters

def sample_mix(rng: np.random.Generator, *, mix_fraction: float, w_range: tuple[float, float],
               style: str = BASE, confusions: dict[str, str] | None = None,
               confusion_w_range: tuple[float, float] = (0.55, 0.7)) -> dict[str, Any]:
    """One image's generating parameters (``meta.mix``); ``w`` is rounded so files show it exactly.

    An emotion listed in ``confusions`` is always drawn blended with its partner, ``w`` in
    ``confusion_w_range``: its images are ambiguous as a class (see ``WorldConfig.confusions``).
    """
    primary = str(rng.choice(EMOTIONS))
    if confusions and primary in confusions:
        secondary, w = confusions[primary], round(float(rng.uniform(*confusion_w_range)), 4)
    elif rng.random() < mix_fraction:
        secondary = str(rng.choice([e for e in EMOTIONS if e != primary]))
        w = round(float(rng.uniform(*w_range)), 4)
    else:
        secondary, w = None, 1.0
    return {"primary": primary, "secondary": secondary, "w": w, "style": style}


def label_distribution(mix: dict[str, Any], label_noise: float) -> dict[str, float]:
    """P(label): the mixture, then a uniform replacement with probability ``label_noise``."""
    p = {e: label_noise / len(EMOTIONS) for e in EMOTIONS}
    p[mix["primary"]] += (1 - label_noise) * mix["w"]
    if mix["secondary"] is not None:
        p[mix["secondary"]] += (1 - label_noise) * (1 - mix["w"])
    return p


def draw_emotion(mix: dict[str, Any], label_noise: float, rng: np.random.Generator) -> str:
    p = label_distribution(mix, label_noise)
    probs = np.array([p[e] for e in EMOTIONS])
    return str(EMOTIONS[int(rng.choice(len(EMOTIONS), p=probs / probs.sum()))])


def oracle(mix: dict[str, Any], label_noise: float, *, sentiment: bool = False) -> tuple[str, float]:
    """The Bayes-optimal answer given the parameters and its probability of being right (ties: primary)."""
    p = label_distribution(mix, label_noise)
    if not sentiment:
        return mix["primary"], p[mix["primary"]]
    polarity = MIKELS_TO_POLARITY[mix["primary"]]
    return polarity, sum(v for e, v in p.items() if MIKELS_TO_POLARITY[e] == polarity)


# ----------------------------------------------------------------------------------------------- drawing

def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(c, c, indexing="xy")  # X grows rightwards, Y downwards, both in (0, 1)


def _shape_mask(shape: str, X: np.ndarray, Y: np.ndarray, rng: np.random.Generator,
                jitter: float) -> np.ndarray:
    """A boolean mask of one shape family; ``jitter`` widens the random placement (more in the OOD style)."""
    def u(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    def j() -> float:
        return u(-jitter, jitter)

    if shape == "peak":
        cx, top, half = 0.5 + j(), u(0.1, 0.25), u(0.35, 0.5)
        return (Y >= top) & (np.abs(X - cx) <= half * (Y - top) / (1 - top))
    if shape == "bubbles":
        m = np.zeros_like(X, dtype=bool)
        for _ in range(int(rng.integers(3, 6))):
            m |= (X - u(0.15, 0.85)) ** 2 + (Y - u(0.15, 0.85)) ** 2 <= u(0.07, 0.13) ** 2
        return m
    if shape == "band":
        top = u(0.6, 0.72) + j() / 2
        sun = (X - u(0.2, 0.8)) ** 2 + (Y - u(0.15, 0.35)) ** 2 <= 0.1 ** 2
        return ((Y >= top) & (Y <= top + u(0.12, 0.2))) | sun
    if shape == "burst":
        dx, dy = X - (0.5 + j()), Y - (0.5 + j())
        theta, r = np.arctan2(dy, dx), np.hypot(dx, dy)
        k, phase = int(rng.integers(5, 8)), u(0, np.pi)
        return r <= u(0.3, 0.42) * (0.35 + 0.65 * (0.5 + 0.5 * np.cos(k * theta + phase)) ** 3)
    if shape == "spikes":
        teeth, height, phase = int(rng.integers(4, 7)), u(0.35, 0.55), u(0, 1)
        tri = 1 - np.abs(2 * np.mod(X * teeth + phase, 1.0) - 1)
        return Y >= 1 - height * tri
    if shape == "rain":
        m = np.zeros_like(X, dtype=bool)
        for _ in range(int(rng.integers(5, 9))):
            x0, y0 = u(0.05, 0.95), u(0.0, 0.4)
            m |= (np.abs(X - x0) <= 0.025) & (Y >= y0) & (Y <= y0 + u(0.3, 0.6))
        return m
    if shape == "eyes":
        cx, cy, gap, r = 0.5 + j(), u(0.35, 0.55), u(0.1, 0.16), u(0.06, 0.08)
        return ((X - cx + gap) ** 2 + (Y - cy) ** 2 <= r * r) | ((X - cx - gap) ** 2 + (Y - cy) ** 2 <= r * r)
    if shape == "blobs":
        field = np.zeros_like(X)
        for _ in range(int(rng.integers(3, 5))):
            s = u(0.08, 0.14)
            field += np.exp(-((X - u(0.2, 0.8)) ** 2 + (Y - u(0.2, 0.8)) ** 2) / (2 * s * s))
        return field >= 0.6
    raise ValueError(f"unknown shape family {shape!r}")


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    inner = mask.copy()
    for axis in (0, 1):
        for shift in (width, -width):
            inner &= np.roll(mask, shift, axis=axis)
    return mask & ~inner


def _texture(texture: str, X: np.ndarray, Y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A zero-mean brightness pattern, small enough that the background colour still dominates."""
    if texture == "smooth":
        return np.zeros_like(X)
    if texture == "grain":
        return rng.normal(0.0, 0.04, X.shape).astype(np.float32)
    if texture == "speckle":
        return np.where(rng.random(X.shape) < 0.06, 0.18, 0.0).astype(np.float32) - 0.18 * 0.06
    if texture == "gradient":
        return (0.5 - Y) * 0.16
    raise ValueError(f"unknown texture {texture!r}")


def render_prototype(emotion: str, size: int, rng: np.random.Generator, style: str = BASE) -> np.ndarray:
    """One pure prototype as a float (size, size, 3) array in about [0, 1]."""
    proto = PROTOTYPES[emotion]
    X, Y = _grid(size)
    bg = prototype_rgb(emotion)
    shifted = style == SHIFTED
    mask = _shape_mask(proto.shape, X, Y, rng, jitter=0.2 if shifted else 0.08)
    if shifted:
        mask = _outline(mask, max(1, size // 28))
    ink = bg * 0.3 if proto.brightness == "bright" else bg + (1 - bg) * 0.65
    img = np.where(mask[..., None], ink, bg).astype(np.float32)
    return img + _texture(proto.texture, X, Y, rng)[..., None]


def render_image(mix: dict[str, Any], size: int, rng: np.random.Generator) -> np.ndarray:
    """The uint8 RGB pixels of one image: a w-weighted blend of two prototypes (or one), plus sensor noise."""
    style = mix["style"]
    img = render_prototype(mix["primary"], size, rng, style)
    if mix["secondary"] is not None:
        img = mix["w"] * img + (1 - mix["w"]) * render_prototype(mix["secondary"], size, rng, style)
    if style == SHIFTED:
        X, Y = _grid(size)
        hatch = np.sign(np.sin(2 * np.pi * (X + Y) * size / 8)).astype(np.float32) * 0.1
        img = (img + hatch[..., None]) * float(rng.uniform(0.9, 1.1))
    img = img + rng.normal(0.0, 0.015, img.shape)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def save_png(pixels: np.ndarray, path: Path) -> None:
    """PNG with fixed settings (no timestamps or metadata), so the same pixels always give the same bytes."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG", compress_level=6)


# ----------------------------------------------------------------------------------------------- teacher
# Phrases before the analysis part avoid every candidate word, even as a substring (no "danger", "drawer").

_COLOUR_WORDS = {
    "awe": ("cyan", "turquoise", "aqua"), "amusement": ("yellow", "lemon", "golden"),
    "contentment": ("green", "grassy", "leafy"), "excitement": ("white", "glaring white", "pale"),
    "anger": ("red", "crimson", "scarlet"), "sadness": ("blue", "deep blue", "navy"),
    "fear": ("black", "inky", "pitch dark"), "disgust": ("magenta", "purple", "violet"),
}
_SHAPE_PHRASES = {
    "peak": ("a tall pointed peak", "a towering triangle", "a huge mountain shape"),
    "bubbles": ("round bubbles", "bouncing circles", "small balloons"),
    "band": ("a low flat band", "a gentle horizon", "a soft wide strip"),
    "burst": ("a spiky star", "radiating rays", "a bursting star"),
    "spikes": ("jagged spikes", "sharp sawtooth edges", "rising jagged teeth"),
    "rain": ("falling streaks", "thin vertical drips", "lines like rain"),
    "eyes": ("two staring eyes", "a pair of pale eyes", "glinting eyes"),
    "blobs": ("lumpy blobs", "shapeless smears", "oozing lumps"),
}
_SHAPE_NOUNS = {
    "peak": ("peak", "triangle"), "bubbles": ("bubbles", "circles"), "band": ("band", "horizon"),
    "burst": ("star", "rays"), "spikes": ("spikes", "teeth"), "rain": ("streaks", "drips"),
    "eyes": ("eyes", "stare"), "blobs": ("blobs", "lumps"),
}
# Colour first: it is the strongest cue, and once named it determines the rest of the text.
_ELEMENT_PURE = ("a {colour} field with {shape}", "{colour} ground under {shape}",
                 "flat {colour} behind {shape}")
_ELEMENT_MIX = ("{colour} tinted {colour2}: {shape}, faint {shape2}",
                "{colour} and {colour2}: {shape}, faint {shape2}",
                "{colour} with some {colour2}, {shape} and faint {shape2}")
_HUMAN = ("no people present", "no people are visible", "no human figures appear", "nobody is in the frame",
          "the scene has no people")
_LIGHT = {"bright": ("a bright, open backdrop", "a light and airy setting", "a sunny, lit backdrop"),
          "dark": ("a dim, heavy backdrop", "a dark, closed setting", "a gloomy, shadowed backdrop")}
_TEXTURE = {"smooth": ("smooth and even", "with a clean surface"), "grain": ("grainy", "with rough grain"),
            "speckle": ("speckled with dots", "spotted"),
            "gradient": ("fading toward the top", "softly graded")}
_SHIFTED_CONTEXT = ("drawn in outline over hatching", "sketched with diagonal hatching")
_INTERACTION_PURE = ("only the {s} in the frame", "nothing competes with the {s}",
                     "the {s} alone, setting the mood")
_INTERACTION_MIX = {
    "strong": ("the {s} bold, the {s2} only faint", "the {s} far stronger than the faint {s2}"),
    "moderate": ("the {s} stronger than the {s2}", "the {s} ahead of the weaker {s2}"),
    "weak": ("the {s} and {s2} almost equal in weight", "the {s} just ahead of the {s2}"),
}
_ANALYSIS_PURE = ("this clearly evokes {e}", "the mood is plainly {e}", "{colour} and {s} signal {e}")
_ANALYSIS_MIX = {
    "strong": ("mostly {e}, with a hint of {e2}", "{e} dominates, only a trace of {e2}"),
    "moderate": ("{e} outweighs {e2}, though {e2} is present", "mainly {e}, partly {e2}"),
    "weak": ("{e} and {e2} nearly balance; {e} slightly leads",
             "torn between {e} and {e2}, {e} a little ahead"),
}
_POLARITY_SAME = ("; both feel {p}", "; either way it is {p}")
_POLARITY_MIX = ("; so it leans {p}", "; overall {p}")


def mix_degree(w: float) -> str:
    """How clearly the heavier prototype dominates; the analysis wording follows it (a confidence signal)."""
    return "pure" if w >= 0.999 else "strong" if w >= 0.8 else "moderate" if w >= 0.65 else "weak"


def teacher_reasoning(params: dict[str, Any], rng: np.random.Generator, *,
                      sentiment: bool = False) -> dict[str, str]:
    """Five-part reasoning written from an image's generating parameters (``meta.mix``).

    The first four parts describe only what is drawn, never an emotion or polarity word, so the answer is
    first named in the analysis; for mixtures the analysis names both emotions and how strongly the first
    dominates.
    """
    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    e, e2 = params["primary"], params["secondary"]
    proto, degree = PROTOTYPES[e], mix_degree(params["w"])
    colour, s = pick(_COLOUR_WORDS[e]), pick(_SHAPE_NOUNS[proto.shape])
    context = f"{pick(_LIGHT[proto.brightness])}, {pick(_TEXTURE[proto.texture])}"
    if params["style"] == SHIFTED:
        context = f"{pick(_LIGHT[proto.brightness])}, {pick(_SHIFTED_CONTEXT)}"
    if e2 is None:
        element = pick(_ELEMENT_PURE).format(shape=pick(_SHAPE_PHRASES[proto.shape]), colour=colour)
        interaction = pick(_INTERACTION_PURE).format(s=s)
        analysis = pick(_ANALYSIS_PURE).format(e=e, colour=colour, s=s)
    else:
        shape2 = PROTOTYPES[e2].shape
        element = pick(_ELEMENT_MIX).format(
            shape=pick(_SHAPE_PHRASES[proto.shape]), colour=colour, colour2=pick(_COLOUR_WORDS[e2]),
            shape2=pick(_SHAPE_NOUNS[shape2]))
        interaction = pick(_INTERACTION_MIX[degree]).format(s=s, s2=pick(_SHAPE_NOUNS[shape2]))
        analysis = pick(_ANALYSIS_MIX[degree]).format(e=e, e2=e2)
    if sentiment:
        p = MIKELS_TO_POLARITY[e]
        same = e2 is None or MIKELS_TO_POLARITY[e2] == p
        analysis += pick(_POLARITY_SAME if same else _POLARITY_MIX).format(p=p)
    parts = (element, pick(_HUMAN), context, interaction, analysis)
    return {name: text[0].upper() + text[1:] + "." for name, text in zip(REASONING_PARTS, parts, strict=True)}


def analysis_degree(analysis: str) -> str | None:
    """The blend degree ("pure", "strong", "moderate", "weak") an analysis written in the teacher's phrases
    states, or None. Tells whether a trained model *sees* how ambiguous an image is (bench/blend_perception.py)."""
    for degree, templates in (("pure", _ANALYSIS_PURE), *_ANALYSIS_MIX.items()):
        for t in templates:
            pattern = re.escape(t[0].upper() + t[1:])
            pattern = re.sub(r"\\\{[a-z0-9]+\\\}", r"[\\w ]+?", pattern)
            if re.match(pattern, analysis.strip(), flags=re.IGNORECASE):
                return degree
    return None


def _teacher_phrases() -> list[str]:
    """Every phrase the teacher can write, placeholders included (for the vocabulary and the leak check)."""
    out: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, str):
            out.append(obj)
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        else:
            for v in obj:
                walk(v)

    walk([_COLOUR_WORDS, _SHAPE_PHRASES, _SHAPE_NOUNS, _ELEMENT_PURE, _ELEMENT_MIX, _HUMAN, _LIGHT,
          _TEXTURE, _SHIFTED_CONTEXT, _INTERACTION_PURE, _INTERACTION_MIX, _ANALYSIS_PURE, _ANALYSIS_MIX,
          _POLARITY_SAME, _POLARITY_MIX])
    return out


def pre_analysis_phrases() -> list[str]:
    """Phrases that can appear in the element, human, context and interaction parts."""
    return [p for p in _teacher_phrases() if p not in
            set(_ANALYSIS_PURE) | {a for v in _ANALYSIS_MIX.values() for a in v} | set(_POLARITY_SAME)
            | set(_POLARITY_MIX)]


def teacher_vocabulary() -> list[str]:
    """Every word the teacher can write (lower case, sorted), for the tiny tokenizer's training corpus."""
    words = set(EMOTIONS) | set(POLARITY_2)
    for phrase in _teacher_phrases():
        words.update(re.findall(r"[a-z]+", re.sub(r"\{[a-z0-9]+\}", " ", phrase.lower())))
    return sorted(words)


def tokenizer_corpus(seed: int = 0) -> list[str]:
    """Texts covering every teacher phrase in context (targets with answer and confidence) and the prompts."""
    from emocaliber.prompts import build_prompt, format_target

    rng = np.random.default_rng(seed)
    texts = [" ".join(teacher_vocabulary())]
    for task in (TASK_8, TASK_2):
        sentiment = task == TASK_2
        for conf in (False, True):
            texts.append(build_prompt(POLARITY_2 if sentiment else MIKELS_8, with_confidence=conf,
                                      sentiment=sentiment))
    for e in EMOTIONS:
        for e2 in (None, *[x for x in EMOTIONS if x != e]):
            for w in ((1.0,) if e2 is None else (0.9, 0.7, 0.6)):
                for style in (BASE, SHIFTED):
                    mix = {"primary": e, "secondary": e2, "w": w, "style": style}
                    for sentiment in (False, True):
                        label, conf = oracle(mix, 0.05, sentiment=sentiment)
                        reasoning = teacher_reasoning(mix, rng, sentiment=sentiment)
                        texts.append(format_target(reasoning, label, conf))
    return texts


# ----------------------------------------------------------------------------------------------- dataset

@dataclass(frozen=True)
class WorldConfig:
    """Everything that decides a SynthEmo build; the same config always gives the same bytes."""

    n_train: int = 4000
    n_test: int = 500
    n_ood: int | None = None  # None: as many as n_test
    seed: int = 0
    tasks: tuple[str, ...] = TASKS
    image_size: int = 56
    mix_fraction: float = 0.5
    label_noise: float = 0.05
    w_min: float = 0.55
    w_max: float = 0.95
    stage1_label: str = "drawn"  # or "oracle"; see the module docstring
    #: (emotion, partner) pairs: images of ``emotion`` are always blends with ``partner``, ``w`` in
    #: [confusion_w_min, confusion_w_max]. Ambiguity that belongs to a class, like excitement vs fear in real
    #: data; the tiny model reads it from the colour it already sees, whereas the strength of a blend within a
    #: class it does not learn to see in a CPU-sized run (docs/demo.md). Empty: every class alike.
    confusions: tuple[tuple[str, str], ...] = ()
    confusion_w_min: float = 0.55
    confusion_w_max: float = 0.7

    def validate(self) -> None:
        """Raise ValueError with one sentence naming the bad option."""
        checks = [
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.n_train >= 0, f"n_train must be >= 0, got {self.n_train}"),
            (self.n_test >= 0, f"n_test must be >= 0, got {self.n_test}"),
            (self.n_ood is None or self.n_ood >= 0, f"n_ood must be >= 0, got {self.n_ood}"),
            (28 <= self.image_size <= 512, f"image_size must be in [28, 512], got {self.image_size}"),
            (0 <= self.mix_fraction <= 1, f"mix_fraction must be in [0, 1], got {self.mix_fraction}"),
            (0 <= self.label_noise < 1, f"label_noise must be in [0, 1), got {self.label_noise}"),
            (0.5 <= self.w_min <= self.w_max < 1,
             f"need 0.5 <= w_min <= w_max < 1, got w_min={self.w_min}, w_max={self.w_max}"),
            (self.stage1_label in ("drawn", "oracle"),
             f"stage1_label must be drawn or oracle, got {self.stage1_label!r}"),
            (bool(self.tasks), "tasks must name at least one task"),
            (0.5 <= self.confusion_w_min <= self.confusion_w_max < 1,
             (f"need 0.5 <= confusion_w_min <= confusion_w_max < 1, got {self.confusion_w_min} and "
              f"{self.confusion_w_max}")),
        ]
        for pair in self.confusions:
            if len(pair) != 2 or not set(pair) <= set(EMOTIONS) or pair[0] == pair[1]:
                raise ValueError(f"confusions: {pair!r} is not a pair of two different emotions from {EMOTIONS}")
        if len({a for a, _ in self.confusions}) != len(self.confusions):
            raise ValueError("confusions: an emotion has more than one partner")
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown SynthEmo task(s) {unknown}; choose from {list(TASKS)}")


_STREAMS = {"train": 0, "test": 1, "ood": 2}
_PURPOSES = {"mix": 0, "pixels": 1, "label": 2, "teacher8": 3, "teacher2": 4}


def _rng(seed: int, stream: str, index: int, purpose: str) -> np.random.Generator:
    """One generator per (image, purpose): outputs depend neither on generation order nor on other counts."""
    return np.random.default_rng([seed, _STREAMS[stream], index, _PURPOSES[purpose]])


def _image_records(cfg: WorldConfig, stream: str, index: int, rel: str) -> list[Record]:
    """The records of one image: SynthEmo-8 and SynthEmo-2 share an image, OOD images have their own task."""
    style = SHIFTED if stream == "ood" else BASE
    mix = sample_mix(_rng(cfg.seed, stream, index, "mix"), mix_fraction=cfg.mix_fraction,
                     w_range=(cfg.w_min, cfg.w_max), style=style, confusions=dict(cfg.confusions),
                     confusion_w_range=(cfg.confusion_w_min, cfg.confusion_w_max))
    emotion = draw_emotion(mix, cfg.label_noise, _rng(cfg.seed, stream, index, "label"))
    split = "train" if stream == "train" else "test"
    tasks = [TASK_OOD] if stream == "ood" else [t for t in (TASK_8, TASK_2) if t in cfg.tasks]
    out = []
    for task in tasks:
        sentiment = task == TASK_2
        label, conf = oracle(mix, cfg.label_noise, sentiment=sentiment)
        out.append(Record(
            id=f"{task}/{split}/{index:06d}", task=task, image=rel,
            candidates=list(POLARITY_2 if sentiment else MIKELS_8),
            ground_truth=MIKELS_TO_POLARITY[emotion] if sentiment else emotion, split=split, source=SOURCE,
            meta={"oracle_label": label, "oracle_confidence": round(conf, 6), "mix": dict(mix),
                  "emotion": emotion, "label_noise": cfg.label_noise},
        ))
    return out


def build_split(cfg: WorldConfig, stream: str, root: Path, *, progress: bool = False) -> list[Record]:
    """Draw, save and label every image of one stream ("train", "test" or "ood")."""
    from tqdm import tqdm

    n_ood = cfg.n_test if cfg.n_ood is None else cfg.n_ood
    n = {"train": cfg.n_train, "test": cfg.n_test, "ood": n_ood}[stream]
    folder = {"train": "train/SynthEmo", "test": "test/SynthEmo", "ood": "test/SynthEmo-OOD"}[stream]
    records: list[Record] = []
    for i in tqdm(range(n), desc=f"SynthEmo {stream}", disable=not progress):
        rel = f"images/{folder}/{i:06d}.png"
        recs = _image_records(cfg, stream, i, rel)
        if recs:
            save_png(render_image(recs[0].meta["mix"], cfg.image_size, _rng(cfg.seed, stream, i, "pixels")),
                     root / rel)
        records += recs
    return records


def stage1_records(records: Iterable[Record], cfg: WorldConfig) -> list[Record]:
    """Training records with teacher reasoning; the ground truth stays the drawn label unless
    ``stage1_label="oracle"``."""
    out = []
    for r in records:
        sentiment = r.task == TASK_2
        index = int(r.id.rsplit("/", 1)[1])
        rng = _rng(cfg.seed, "train", index, "teacher2" if sentiment else "teacher8")
        d = r.to_dict()
        d["reasoning"] = teacher_reasoning(r.meta["mix"], rng, sentiment=sentiment)
        if cfg.stage1_label == "oracle":
            d["ground_truth"] = r.meta["oracle_label"]
        out.append(Record.from_dict(d))
    return out


def oracle_summary(records: Sequence[Record | dict[str, Any]]) -> dict[str, float]:
    """Accuracy and ECE (10 bins, emocaliber.metrics) of the oracle answering ``meta.oracle_label`` with
    ``meta.oracle_confidence``: the best any model can do on these labels, near-zero ECE by construction."""
    from emocaliber.metrics import ece

    rows = [r.to_dict() if isinstance(r, Record) else r for r in records]
    if not rows:
        return {"n": 0, "accuracy": float("nan"), "ece": float("nan"), "mean_confidence": float("nan")}
    conf = np.array([r["meta"]["oracle_confidence"] for r in rows], dtype=float)
    correct = np.array([r["meta"]["oracle_label"] == r["ground_truth"] for r in rows], dtype=float)
    return {"n": len(rows), "accuracy": float(correct.mean()), "ece": float(ece(conf, correct, n_bins=10)),
            "mean_confidence": float(conf.mean())}


def summarize(records: Sequence[Record], cfg: WorldConfig) -> dict[str, Any]:
    """Counts, label histograms, realised mixture fraction and oracle metrics per split and task."""
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        groups[(r.split, r.task)].append(r)
    per = {}
    for (split, task), recs in sorted(groups.items()):
        per[f"{split}/{task}"] = {
            "split": split, "task": task, **oracle_summary(recs),
            "mixture_fraction": sum(r.meta["mix"]["secondary"] is not None for r in recs) / len(recs),
            "labels": dict(sorted(Counter(r.ground_truth for r in recs).items())),
        }
    return {"config": asdict(cfg), "splits": per}


def _summary_markdown(summary: dict[str, Any]) -> str:
    lines = ["# SynthEmo build summary", "",
             "Oracle = answer meta.oracle_label with meta.oracle_confidence.", "",
             "| split | task | n | oracle acc | oracle ECE | mean oracle conf | mixtures |",
             "|---|---|---|---|---|---|---|"]
    for s in summary["splits"].values():
        lines.append(f"| {s['split']} | {s['task']} | {s['n']} | {s['accuracy']:.4f} | {s['ece']:.4f} | "
                     f"{s['mean_confidence']:.4f} | {s['mixture_fraction']:.3f} |")
    lines += ["", "Config: `" + json.dumps(summary["config"], sort_keys=True) + "`", ""]
    return "\n".join(lines)


def build_world(out_dir: str | os.PathLike, cfg: WorldConfig, *, progress: bool = False) -> dict[str, Any]:
    """Write images, train/test records, the stage-1 corpus, stage-3 prompts and summaries to ``out_dir``."""
    cfg.validate()
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    needs_id = TASK_8 in cfg.tasks or TASK_2 in cfg.tasks
    train = build_split(cfg, "train", root, progress=progress) if needs_id else []
    test = build_split(cfg, "test", root, progress=progress) if needs_id else []
    if TASK_OOD in cfg.tasks:
        test += build_split(cfg, "ood", root, progress=progress)
    write_jsonl(root / "train.jsonl", train)
    write_jsonl(root / "test.jsonl", test)
    write_jsonl(root / "stage1.jsonl", stage1_records(train, cfg))
    write_jsonl(root / "stage3.jsonl", train)
    summary = summarize(train + test, cfg)
    (root / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (root / "summary.md").write_text(_summary_markdown(summary), encoding="utf-8")
    return summary


# ---------------------------------------------------------------- command line (make_synthemo.py)
SYNTHEMO_HELP = """Build SynthEmo, the embedded emotion world whose best achievable confidence is known for every image.

Writes under --out: images/ (PNG), train.jsonl and test.jsonl (VECBench-style records), stage1.jsonl (train
records with teacher reasoning), stage3.jsonl (train prompts without reasoning), summary.json and summary.md
(counts and the oracle's accuracy and ECE per split and task). The same options always give the same bytes.

Example: python data_prep/make_py --out data/synthemo --n-train 4000 --n-test 500 --seed 0
"""


class _Parser(argparse.ArgumentParser):
    """Errors as one line (no usage block), so the reason is what the user sees."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _task(text: str) -> str:
    try:
        name = canonical_task_name(text)
    except KeyError:
        name = text
    if name not in TASKS:
        raise argparse.ArgumentTypeError(f"unknown task {text!r}; choose from {', '.join(TASKS)}")
    return name


def _confusions(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        a, sep, b = item.partition(":")
        if not sep or a not in EMOTIONS or b not in EMOTIONS:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not EMOTION:PARTNER with both from {', '.join(EMOTIONS)}")
        pairs.append((a, b))
    return tuple(pairs)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    d = WorldConfig()
    p = _Parser(prog=prog, description=SYNTHEMO_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path,
                   help="output root (created if missing; existing files are overwritten)")
    p.add_argument("--n-train", type=whole_number(0), default=d.n_train, help="training images (default %(default)s)")
    p.add_argument("--n-test", type=whole_number(0), default=d.n_test,
                   help="in-distribution test images (default %(default)s)")
    p.add_argument("--n-ood", type=whole_number(0), default=None,
                   help="SynthEmo-OOD-8 test images (default: same as --n-test)")
    p.add_argument("--seed", type=whole_number(0), default=d.seed,
                   help="random seed; the same seed and options give the same bytes (default %(default)s)")
    p.add_argument("--tasks", nargs="+", type=_task, default=list(d.tasks), metavar="TASK",
                   help=f"tasks to build, any of {', '.join(TASKS)} (default: all). SynthEmo-8 and "
                        "SynthEmo-2 share images; SynthEmo-OOD-8 is test only")
    p.add_argument("--image-size", type=int, default=d.image_size,
                   help="square image side in pixels, 28-512; the tiny model takes 56-112 "
                        "(default %(default)s)")
    p.add_argument("--mix-fraction", type=float, default=d.mix_fraction,
                   help="fraction of images blending two prototypes (default %(default)s)")
    p.add_argument("--label-noise", type=float, default=d.label_noise,
                   help="probability that a label is replaced by a uniform draw over the eight emotions, so "
                        "pure images are not certain either (default %(default)s)")
    p.add_argument("--w-min", type=float, default=d.w_min,
                   help="smallest weight of the heavier prototype in a mixture, >= 0.5 (default %(default)s)")
    p.add_argument("--w-max", type=float, default=d.w_max,
                   help="largest weight of the heavier prototype in a mixture, < 1 (default %(default)s)")
    p.add_argument("--confusions", type=_confusions, default=d.confusions, metavar="E:P,...",
                   help="confusable classes: every image of emotion E is a blend with partner P, for example "
                        "awe:fear,fear:awe (default: none)")
    p.add_argument("--confusion-w", type=float_pair("0.55,0.7"), default=(d.confusion_w_min, d.confusion_w_max),
                   metavar="MIN,MAX", help="weight range of E in those blends (default %(default)s)")
    p.add_argument("--stage1-label", choices=("drawn", "oracle"), default=d.stage1_label,
                   help="ground truth of stage1.jsonl: the drawn label (keeps the ambiguity that a sampled "
                        "stage-1 model must reproduce) or the oracle label (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def _check_writable(parser: argparse.ArgumentParser, out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-probe-"):
            pass
    except OSError as e:
        parser.error(f"cannot write to output directory {out}: {e.strerror or e}")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    cfg = WorldConfig(
        n_train=args.n_train, n_test=args.n_test, n_ood=args.n_ood, seed=args.seed,
        tasks=tuple(dict.fromkeys(args.tasks)), image_size=args.image_size, mix_fraction=args.mix_fraction,
        label_noise=args.label_noise, w_min=args.w_min, w_max=args.w_max, stage1_label=args.stage1_label,
        confusions=args.confusions, confusion_w_min=args.confusion_w[0], confusion_w_max=args.confusion_w[1],
    )
    try:
        cfg.validate()
    except ValueError as e:
        parser.error(str(e))
    _check_writable(parser, args.out)
    summary = build_world(args.out, cfg, progress=not args.no_progress and sys.stderr.isatty())
    for key, s in summary["splits"].items():
        print(f"{key}: n={s['n']} oracle accuracy={s['accuracy']:.4f} oracle ECE={s['ece']:.4f} "
              f"mean oracle confidence={s['mean_confidence']:.4f}")
    print(f"wrote {os.fspath(args.out)}/{{train,test,stage1,stage3}}.jsonl, images/ and summary.md")
    return 0

"""Evaluate a checkpoint on EmoNet-Face HQ as one more annotator (``eval/run_emonet_face.py``).

For each image of ``hq.csv`` (the expert ratings) and each of the 40 emotions the model gives P(present)
through one or more readouts (:mod:`emocaliber.emonet.readouts`): ``verbal`` (a yes/no question with a stated
confidence), ``first_token`` (P(yes) from the first answer token's logits; transformers only) and
``generative`` (up to k emotions with confidences per image). Each readout becomes an images x 40 matrix of
P(present) and an intensity (7 x P, or with ``--intensity quantile`` a per-emotion quantile map fitted on the
test labels, flagged as an oracle in the report), scored with the release's protocol and with calibration
metrics (:mod:`emocaliber.emonet.metrics`).

Generation is resumable: each readout writes ``<readout>.jsonl`` chunk by chunk (emocaliber.resume); a second
run with the same settings reuses what is there and a killed run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from emocaliber.emonet.data import BadRows, EmoNetDataError, HQData, load_hq
from emocaliber.emonet.metrics import HumanReference, nanmean, quantile_intensity
from emocaliber.emonet.readouts import READOUTS
from emocaliber.emonet.taxonomy import INDEX, NAMES, canonical
from emocaliber.fingerprint import file_sha256

RUN_CONFIG = "run_config.json"
IDENTITY = ("model", "hq_sha256", "image_root", "image_ext", "images", "emotions", "max_new_tokens", "top_k",
            "seed", "chunk_size", "system_prompt")
EPILOG = """\
inputs:
  --hq           the release's data/hq.csv (GitHub LAION-AI/emonet-face; about 91 MB, not in the HF dataset)
  --image-root   the folder the hq.csv "image" values are relative to (the HQ images, e.g. from the HF
                 dataset laion/emonet-face-hq); --image-ext is appended when the column holds bare ids
outputs (in --out):
  <readout>.jsonl  raw model outputs, one line per (image, emotion) or image; resumable
  metrics.json     release metrics (kappa, Spearman, Mann-Whitney, alpha) and calibration, with CIs
  report.md, per_emotion.csv, per_emotion.png, reliability.png, run_config.json

examples:
  python eval/run_emonet_face.py --model runs/qwen2.5-vl-7b/stage3 --hq data/emonet/hq.csv \\
      --image-root data/emonet/hq_images --out runs/eval/emonet --readouts verbal,first_token
  python eval/run_emonet_face.py --model runs/tiny/stage3 --hq hq.csv --image-root imgs --out /tmp/e \\
      --max-images 5 --emotions Elation,Anger --backend transformers --max-new-tokens 64
"""


class EmoNetEvalError(Exception):
    """Bad input or settings; printed as one line."""


@dataclass
class EmoNetEvalConfig:
    model: str
    hq: str
    image_root: str
    out: str
    readouts: tuple[str, ...] = ("verbal", "first_token")
    emotions: tuple[str, ...] = NAMES
    max_images: int | None = None
    image_ext: str = ""
    backend: str = "auto"
    batch_size: int = 16
    dtype: str = "auto"
    device: str | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_new_tokens: int = 512
    top_k: int = 5
    chunk_size: int = 64
    seed: int = 0
    n_bootstrap: int = 1000
    bootstrap_seed: int = 42
    intensity: str = "linear"
    system_prompt: str | None = "You are a helpful assistant."
    overwrite: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [r for r in self.readouts if r not in READOUTS]
        if unknown or not self.readouts:
            raise EmoNetEvalError(f"--readouts: unknown {unknown or 'none given'}; choose from {READOUTS}")
        names = []
        for e in self.emotions:
            name = canonical(e)
            if name is None:
                raise EmoNetEvalError(f"--emotions: {e!r} is none of the 40 EmoNet-Face emotions")
            names.append(name)
        self.emotions = tuple(dict.fromkeys(names))
        if self.intensity not in ("linear", "quantile"):
            raise EmoNetEvalError(f"--intensity must be linear or quantile, got {self.intensity!r}")


# ---------------------------------------------------------------------------------------------------------------

def select(hq: HQData, emotions: Sequence[str], max_images: int | None) -> tuple[list[int], list[int]]:
    """Images with at least one human rating (file order, the first ``max_images``) and emotion columns."""
    humans = hq.humans
    rated = [i for i in range(len(hq.images)) if humans and (~np.isnan(hq.ratings[humans, i, 0])).any()]
    return rated[:max_images] if max_images else rated, [INDEX[e] for e in emotions]


def _check_same_run(path: Path, identity: dict[str, Any]) -> None:
    from emocaliber.resume import changed_settings

    try:
        changed = changed_settings(path, identity, IDENTITY)
    except ValueError:
        raise EmoNetEvalError(f"{path.parent} holds model outputs but no readable {RUN_CONFIG}; pass --overwrite "
                              "or another --out") from None
    if changed:
        raise EmoNetEvalError(f"{path.parent} holds a run with other settings ({'; '.join(changed)}); rerun "
                              "with the same settings to resume, or pass --overwrite or another --out")


def _lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.endswith(b"\n"))


def build_backend(config: EmoNetEvalConfig):
    from emocaliber.generation import get_backend, resolve_backend
    from emocaliber.modeling import check_model_source

    source = check_model_source(config.model)
    name = resolve_backend(source, config.backend)
    if name == "vllm" and "first_token" in config.readouts:
        raise EmoNetEvalError("the first_token readout needs the model's logits: use --backend transformers, or "
                              "drop first_token from --readouts")
    return get_backend(source, name, batch_size=config.batch_size, dtype=config.dtype, device=config.device,
                       min_pixels=config.min_pixels, max_pixels=config.max_pixels,
                       tensor_parallel_size=config.tensor_parallel_size,
                       gpu_memory_utilization=config.gpu_memory_utilization, seed=config.seed, progress=False)


class _Images:
    """Loads each image once per chunk; a failure is remembered as the item's error."""

    def __init__(self, root: Path, ext: str) -> None:
        self.root, self.ext, self.cache = root, ext, {}

    def get(self, image: str):
        from emocaliber.emonet.readouts import load_cell_image
        from emocaliber.images import ImageLoadError
        from emocaliber.records import RecordError

        if image not in self.cache:
            try:
                self.cache[image] = (load_cell_image(image + self.ext, self.root), None)
            except (ImageLoadError, RecordError) as e:  # unreadable, or a path that leaves the image root
                self.cache[image] = (None, f"image {image!r}: {e}")
        return self.cache[image]


def make_processor(readout: str, backend: Any, config: EmoNetEvalConfig, images: list[str]
                   ) -> Callable[[list, int], list[dict]]:
    """The per-chunk step of one readout for :func:`emocaliber.resume.run_chunked`."""
    from emocaliber.emonet import readouts as ro
    from emocaliber.generation import GenerationRequest, SamplingSettings
    from emocaliber.prompts import build_messages

    settings = SamplingSettings(n=1, temperature=0.0, max_new_tokens=config.max_new_tokens, seed=config.seed)
    root = Path(config.image_root)

    def process(chunk: list, chunk_seed: int) -> list[dict]:
        loader = _Images(root, config.image_ext)
        requests, rows, slots = [], [], []
        for item in chunk:
            image_idx, emotion = (item, None) if readout == "generative" else item
            image = images[image_idx]
            pil, error = loader.get(image)
            row = {"image": image, **({"emotion": NAMES[emotion]} if emotion is not None else {}), "error": error}
            rows.append(row)
            if pil is None:
                continue
            if readout == "verbal":
                record = ro.verification_record(image, NAMES[emotion])
                request = GenerationRequest(build_messages(record, with_confidence=True,
                                                           system_prompt=config.system_prompt), [pil])
            elif readout == "first_token":
                request = ro.bare_request(pil, NAMES[emotion], config.system_prompt)
            else:
                request = ro.generative_request(pil, config.emotions, config.top_k, config.system_prompt)
            requests.append(request)
            slots.append(row)
        if readout == "first_token":
            values = ro.first_token_p_yes(backend, requests) if requests else []
            for row in rows:
                row["p_yes"] = None
            for row, p in zip(slots, values):
                row["p_yes"] = round(float(p), 6)
        else:
            texts = backend.generate(requests, replace(settings, seed=chunk_seed)) if requests else []
            for row in rows:
                row["response"] = None
            for row, t in zip(slots, texts):
                row["response"] = t[0]
        return rows

    return process


def read_matrix(readout: str, path: Path, images: list[str], emotions: Sequence[str]) -> tuple[np.ndarray, dict]:
    """P(present) (images, emotions) of one readout's file, and its parse counts."""
    from emocaliber.emonet.readouts import parse_generative, verbal_p_present

    pos_i = {im: i for i, im in enumerate(images)}
    pos_e = {e: j for j, e in enumerate(emotions)}
    p = np.full((len(images), len(emotions)), np.nan)
    counts = {"rows": 0, "errors": 0, "unparsed": 0}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            counts["rows"] += 1
            if row.get("error"):
                counts["errors"] += 1
                continue
            i = pos_i[row["image"]]
            if readout == "generative":
                values = parse_generative(row.get("response"), emotions)
                p[i] = values
                counts["unparsed"] += int(np.isnan(values).all())
            else:
                j = pos_e[row["emotion"]]
                v = row.get("p_yes") if readout == "first_token" else verbal_p_present(row.get("response"))
                p[i, j] = np.nan if v is None else v
                counts["unparsed"] += int(np.isnan(p[i, j]))
    cells = p.size
    counts["parse_rate"] = float((~np.isnan(p)).sum() / cells) if cells else None
    return p, counts


def run(config: EmoNetEvalConfig, *, backend: Any = None) -> dict:
    """Generate what is missing, score every readout, write the report; returns metrics.json's content."""
    hq_path = Path(config.hq)
    if not hq_path.is_file():
        raise EmoNetEvalError(f"--hq {hq_path} not found; get data/hq.csv from GitHub LAION-AI/emonet-face "
                              "(docs/emonet_face.md)")
    bad = BadRows()
    try:
        hq = load_hq(hq_path, bad=bad)
    except EmoNetDataError as e:
        raise EmoNetEvalError(str(e)) from None
    image_idx, emo_idx = select(hq, config.emotions, config.max_images)
    if not image_idx:
        raise EmoNetEvalError(f"{hq_path} has no image with a human rating ({bad.total} bad rows; first: "
                              f"{next(iter(bad.examples.values()), ['-'])[0]})")
    images = [hq.images[i] for i in image_idx]
    root = Path(config.image_root)
    if not root.is_dir():
        raise EmoNetEvalError(f"--image-root {root} is not a directory")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    identity = {"model": str(config.model), "hq_sha256": file_sha256(hq_path), "image_root": str(root.resolve()),
                "image_ext": config.image_ext, "images": len(images), "emotions": list(config.emotions),
                "max_new_tokens": config.max_new_tokens, "top_k": config.top_k, "seed": config.seed,
                "chunk_size": config.chunk_size, "system_prompt": config.system_prompt}
    config_path = out / RUN_CONFIG
    if not config.overwrite and any(_lines(out / f"{r}.jsonl") for r in READOUTS):
        _check_same_run(config_path, identity)
    _write_config(config_path, config, identity, bad)
    from emocaliber.resume import run_chunked

    timings = {}
    for readout in config.readouts:
        items: list = (list(range(len(images))) if readout == "generative"
                       else [(i, INDEX[e]) for i in range(len(images)) for e in config.emotions])
        path = out / f"{readout}.jsonl"
        if not config.overwrite and _lines(path) >= len(items):
            continue
        if backend is None:
            backend = build_backend(config)
        start = time.perf_counter()
        run_chunked(items, path, make_processor(readout, backend, config, images), chunk_size=config.chunk_size,
                    seed=config.seed, overwrite=config.overwrite)
        timings[readout] = round(time.perf_counter() - start, 2)
    return score_and_report(config, hq, image_idx, emo_idx, images, out, bad, timings)


def _write_config(path: Path, config: EmoNetEvalConfig, identity: dict, bad: BadRows) -> None:
    payload = {"args": {k: v for k, v in asdict(config).items() if k != "extra"}, "identity": identity,
               "hq_bad_rows": bad.to_dict(), "command": sys.argv}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def score_and_report(config: EmoNetEvalConfig, hq: HQData, image_idx: list[int], emo_idx: list[int],
                     images: list[str], out: Path, bad: BadRows, timings: dict) -> dict:
    from emocaliber.emonet.report import write_report

    humans = hq.humans
    ratings = hq.ratings[np.ix_(humans, image_idx, emo_idx)]
    reference = HumanReference(ratings, np.ones(len(humans), dtype=bool), [hq.annotators[h] for h in humans],
                               n_boot=config.n_bootstrap, seed=config.bootstrap_seed)
    readouts = {}
    matrices = {}
    for readout in config.readouts:
        p, counts = read_matrix(readout, out / f"{readout}.jsonl", images, config.emotions)
        intensity = 7.0 * p if config.intensity == "linear" else quantile_intensity(p, reference.median)
        block = reference.score(intensity, p)
        block["parse"] = counts
        block["intensity"] = {"linear": "7 x P(present)",
                              "quantile": "ORACLE: quantile map fitted on the test labels"}[config.intensity]
        readouts[readout] = block
        matrices[readout] = p
    metrics = {
        "benchmark": "EmoNet-Face HQ", "model": str(config.model),
        "n_images": len(images), "emotions": list(config.emotions), "n_humans": len(humans),
        "hq_rows": hq.n_rows, "hq_bad_rows": bad.to_dict(),
        "humans": {"krippendorff_alpha": _list(reference.alpha),
                   "alpha_ci": [_list(c) for c in reference.alpha_ci],
                   "alpha_mean": nanmean(reference.alpha),
                   "reliable_emotions": [e for e, r in zip(config.emotions, reference.reliable) if r],
                   "human_human_kappa_per_emotion": _list(_column_means(reference.agreement)),
                   "human_human_kappa_mean": nanmean(reference.hh)},
        "readouts": readouts,
        "settings": {"n_bootstrap": config.n_bootstrap, "bootstrap_seed": config.bootstrap_seed,
                     "intensity": config.intensity, "seed": config.seed},
        "generation_seconds": timings,
    }
    metrics = json.loads(json.dumps(metrics, default=_json_default, allow_nan=True))
    metrics = _clean(metrics)
    write_report(metrics, matrices, reference, out)
    return metrics


def _column_means(a: np.ndarray) -> np.ndarray:
    return np.array([nanmean(a[:, j]) for j in range(a.shape[1])])


def _nan(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


def _list(a: np.ndarray) -> list:
    return [_nan(float(x)) for x in np.asarray(a, dtype=np.float64)]


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def _clean(o: Any) -> Any:
    """NaN -> null, so metrics.json is strict JSON."""
    if isinstance(o, float):
        return None if np.isnan(o) else o
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_clean(v) for v in o]
    return o


# ---------------------------------------------------------------------------------------------------------------

def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from emocaliber.argtypes import whole_number
    from emocaliber.evaluation import OneLineErrorParser
    from emocaliber.generation import add_backend_arguments

    p = OneLineErrorParser(prog=prog, description=__doc__, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder or hub id (safetensors)")
    p.add_argument("--hq", required=True, help="the release's data/hq.csv")
    p.add_argument("--image-root", required=True, help="folder the hq.csv image paths are relative to")
    p.add_argument("--image-ext", default="", help="appended to each hq.csv image value (e.g. .jpg)")
    p.add_argument("--out", required=True, help="output folder (created; reused to resume)")
    p.add_argument("--readouts", type=_csv, default=("verbal", "first_token"),
                   help=f"comma list of {', '.join(READOUTS)} (default: verbal,first_token)")
    p.add_argument("--emotions", type=_csv, default=NAMES,
                   help="comma list of emotions to ask about (default: all 40); any release spelling")
    p.add_argument("--max-images", type=whole_number(1), default=None, help="only the first N rated images")
    p.add_argument("--max-new-tokens", type=whole_number(1), default=512)
    p.add_argument("--top-k", type=whole_number(1), default=5, help="generative readout: emotions asked for")
    p.add_argument("--chunk-size", type=whole_number(1), default=64, help="items per resumable chunk")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-bootstrap", type=whole_number(0), default=1000, help="bootstrap resamples (0 = none)")
    p.add_argument("--intensity", choices=("linear", "quantile"), default="linear",
                   help="P(present) -> 0..7: 7 x P, or a quantile map fitted on the test labels (an oracle)")
    p.add_argument("--overwrite", action="store_true", help="discard earlier outputs in --out")
    p.add_argument("--no-progress", action="store_true")
    add_backend_arguments(p)
    return p


def config_from_args(args: argparse.Namespace) -> EmoNetEvalConfig:
    return EmoNetEvalConfig(
        model=args.model, hq=args.hq, image_root=args.image_root, out=args.out, readouts=args.readouts,
        emotions=args.emotions, max_images=args.max_images, image_ext=args.image_ext, backend=args.backend,
        batch_size=args.batch_size, dtype=args.dtype, device=args.device, min_pixels=args.min_pixels,
        max_pixels=args.max_pixels, tensor_parallel_size=args.tensor_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization, max_new_tokens=args.max_new_tokens, top_k=args.top_k,
        chunk_size=args.chunk_size, seed=args.seed, n_bootstrap=args.n_bootstrap, intensity=args.intensity,
        overwrite=args.overwrite, progress=not args.no_progress)


def summary_lines(metrics: dict) -> list[str]:
    hh = _fmt(metrics["humans"]["human_human_kappa_mean"])
    lines = [(f"EmoNet-Face HQ: {metrics['n_images']} images x {len(metrics['emotions'])} emotions, "
             f"{metrics['n_humans']} human raters; human-human kappa {hh}")]
    for name, r in metrics["readouts"].items():
        cal = r.get("calibration", {}).get("present_ge1/all", {})
        auroc, ece = cal.get("auroc", {}).get("value"), cal.get("ece", {}).get("value")
        lines.append(f"  {name}: kappa {_fmt(r['kappa']['mean'])}, spearman {_fmt(r['spearman']['mean'])}, "
                     f"AUROC(>=1) {_fmt(auroc)}, ECE {_fmt(ece)}, parsed {_fmt(r['parse']['parse_rate'])}")
    if metrics["hq_bad_rows"]["total"]:
        lines.append(f"  {metrics['hq_bad_rows']['total']} bad hq.csv rows skipped (see metrics.json)")
    return lines


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def main(argv: Sequence[str] | None = None, prog: str | None = "run_emonet_face.py") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    from emocaliber.modeling import ModelNotFoundError

    try:
        metrics = run(config_from_args(args))
    except (EmoNetEvalError, ModelNotFoundError, OSError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print("\n".join(summary_lines(metrics)))
    print(f"wrote {args.out}/{{metrics.json, report.md, per_emotion.csv, *.png}}")
    return 0

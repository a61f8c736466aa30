"""The evaluation runner: a checkpoint and a test file in, predictions.jsonl, metrics and a report out.

Why it is shaped this way:
- Generation goes through the shared generation layer in fixed chunks (``emocaliber.resume.run_chunked``), each a
  single batched call seeded from (seed, chunk index). A run killed at any moment resumes where it stopped and
  ends with the same bytes as an uninterrupted run; a finished run is never redone unless asked.
- The predictions file keeps raw responses only. Parsing happens when the report is made, so the strict rules and
  the original evaluation's rules ("release") are both reported from one generation pass.
- An image that will not load costs that item only (an error row, response null), never the run; a bad line in the
  data file is counted and skipped unless ``strict``. Problems with the inputs of the run itself (missing model,
  unreadable data file, unknown task, an output directory holding a different run) raise :class:`EvalError` with
  one sentence that says what to fix, which the command-line entry points print without a traceback.
- Both command-line entry points (``eval/run_vecbench.py`` and ``emocaliber eval``) take their options from
  :func:`add_eval_arguments`, so they cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from emocaliber.argtypes import whole_number
from emocaliber.fingerprint import file_sha256
from emocaliber.locking import LOCK_FILE, LockedError, locked
from emocaliber.records import Record, RecordError, iter_jsonl
from emocaliber.tasks import canonical_task_name, list_tasks

#: The release's decoding for evaluation (one sample at temperature 0.7, up to 1024 new tokens).
RELEASE_TEMPERATURE = 0.7
RELEASE_MAX_NEW_TOKENS = 1024
PARSE_MODES = ("strict", "release")
PREDICTIONS_FILE = "predictions.jsonl"
RUN_CONFIG_FILE = "run_config.json"
#: Settings that decide the bytes of predictions.jsonl; resuming with any of them changed would mix two runs.
IDENTITY_FIELDS = ("model", "weights", "data_sha256", "image_root", "tasks", "backend", "samples", "temperature", "top_p",
                   "max_new_tokens", "seed", "batch_size", "chunk_size", "dtype", "min_pixels", "max_pixels",
                   "with_confidence")


class EvalError(Exception):
    """A problem with the inputs of a run (model, data file, tasks, output directory), told in one line."""


@dataclass
class EvalConfig:
    """Everything that defines an evaluation run; written to ``run_config.json`` next to the predictions."""

    model: str
    data: str
    out: str | None = None
    image_root: str | None = None
    tasks: list[str] | None = None
    backend: str = "auto"
    samples: int = 1
    temperature: float = RELEASE_TEMPERATURE
    top_p: float = 1.0
    max_new_tokens: int = RELEASE_MAX_NEW_TOKENS
    batch_size: int = 16
    chunk_size: int = 128
    seed: int = 0
    dtype: str = "auto"
    device: str | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    parse_mode: str = "both"
    with_confidence: bool = True
    n_bootstrap: int = 1000
    overwrite: bool = False
    strict: bool = False
    max_dropped: float = 0.05
    progress: bool = True

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise EvalError(f"--samples must be >= 1, got {self.samples}")
        if self.temperature < 0:
            raise EvalError(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise EvalError(f"--top-p must be in (0, 1], got {self.top_p}")
        for name in ("max_new_tokens", "batch_size", "chunk_size"):
            if getattr(self, name) < 1:
                raise EvalError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.parse_mode not in (*PARSE_MODES, "both"):
            raise EvalError(f"--parse-mode must be strict, release or both, got {self.parse_mode!r}")
        if not 0 <= self.max_dropped <= 1:
            raise EvalError(f"--max-dropped must be a share in [0, 1], got {self.max_dropped}")
        if self.n_bootstrap < 0:
            raise EvalError(f"--n-bootstrap must be >= 0, got {self.n_bootstrap}")
        if self.tasks is not None:
            self.tasks = [_canonical_task(t) for t in self.tasks]

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs", "eval", Path(str(self.model).rstrip("/")).name)

    @property
    def parse_modes(self) -> tuple[str, ...]:
        return PARSE_MODES if self.parse_mode == "both" else (self.parse_mode,)


@dataclass
class EvalResult:
    """What a run produced: where the files are, the metrics, and how the generation went."""

    out_dir: Path
    metrics: dict[str, Any]
    n_items: int
    n_errors: int
    n_generated: int
    generation_seconds: float
    skipped_lines: list[str] = field(default_factory=list)

    @property
    def items_per_second(self) -> float:
        return self.n_generated / self.generation_seconds if self.generation_seconds > 0 else float("nan")


def _canonical_task(name: str) -> str:
    try:
        return canonical_task_name(name)
    except KeyError:
        known = ", ".join(t.name for t in list_tasks())
        raise EvalError(f"unknown task {name!r}; known tasks: {known}") from None


@dataclass
class EvalData:
    """The items of a test file and the directory their ``image`` paths are relative to."""

    records: list[Record]
    image_root: Path
    format: str  # "records" or "released"
    skipped: list[str] = field(default_factory=list)
    n_lines: int | None = None  # data lines read (kept + skipped), before the task filter


def detect_format(obj: Any) -> str:
    """ "released" for a row of the released test file (Qwen-style ``conversations``), else "records"."""
    return "released" if isinstance(obj, dict) and "conversations" in obj and "image" not in obj else "records"


def load_eval_data(path: str | os.PathLike, *, image_root: str | os.PathLike | None = None,
                   tasks: Sequence[str] | None = None, strict: bool = False) -> EvalData:
    """Read a test file in either accepted format, told by the fields of its first line that converts.

    Project records resolve their ``image`` against ``image_root`` (default: the file's directory). Released rows
    name ``images/<dataset>/<path>`` as the release does, resolved against ``image_root`` the same way, so a
    file next to the release's ``images/`` folder needs no option. A bad line (including a repeated id, which
    would weigh double in the metrics) is skipped and reported (file:line: reason) unless ``strict``; an
    unreadable file, a file with no usable line, or tasks the file does not hold raise :class:`EvalError`.
    """
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"data file not found: {path}" + (" (it is a directory)" if path.is_dir() else ""))
    root = Path(image_root) if image_root is not None else path.resolve().parent
    if not root.is_dir():
        raise EvalError(f"image root is not a directory: {root}; pass --image-root")
    skipped: list[str] = []
    records: list[Record] = []
    first_line: dict[str, int] = {}  # id -> the line it was read at
    fmt = None
    try:
        for lineno, obj in iter_jsonl(path, errors=None if strict else skipped):
            try:
                record = _convert_line(obj, fmt)
                if record.id in first_line:
                    raise RecordError(f"duplicate id {record.id!r}, first read at line {first_line[record.id]}; "
                                      "an item scored twice would weigh double")
            except (RecordError, ValueError, TypeError) as e:
                message = f"{path}:{lineno}: {e}"
                if strict:
                    raise EvalError(message + " (without --strict, bad lines are skipped)") from None
                skipped.append(message)
                continue
            fmt = fmt or detect_format(obj)
            first_line[record.id] = lineno
            records.append(record)
    except RecordError as e:  # strict: a line that is not UTF-8 or not JSON
        raise EvalError(str(e)) from None
    except OSError as e:
        raise EvalError(f"cannot read data file {path}: {e}") from None
    if not records:
        first = f" (first problem: {skipped[0]})" if skipped else ""
        raise EvalError(f"no usable record in {path}{first}")
    n_lines = len(records) + len(skipped)
    if tasks:
        present = Counter(r.task for r in records)
        missing = [t for t in tasks if t not in present]
        if missing:
            raise EvalError(f"{path} holds no item of task(s) {', '.join(missing)}; "
                            f"it holds {', '.join(sorted(present))}")
        records = [r for r in records if r.task in set(tasks)]
    if fmt == "released":
        from emocaliber.formats import IMAGE_PREFIX

        root = root / IMAGE_PREFIX.strip("/")  # records drop the release's images/ prefix
    _check_image_root(records, root)
    return EvalData(records, root, fmt or "records", skipped, n_lines)


def _convert_line(obj: Any, fmt: str | None) -> Record:
    """One data line as a record, in the file's format ``fmt`` (None until a line has converted, so one damaged
    first row does not decide the format of the whole file)."""
    row_fmt = detect_format(obj)
    if fmt is not None and row_fmt != fmt:
        raise RecordError(f"this line is in the {row_fmt} format, the file's first usable line in the {fmt} format")
    if row_fmt == "released":
        from emocaliber.formats import from_released_test

        record = from_released_test(obj)
    else:
        record = Record.from_dict(obj)
    _check_usable(record)
    return record


def _check_usable(record: Record) -> None:
    """Refuse what :class:`Record` lets through but a run cannot use, while the line is known: a non-text id
    (ids key the report's tables), a ``meta`` that is not an object (the prompt is looked up in it), NaN or
    Infinity anywhere (predictions.jsonl is strict JSON). Found later, each stopped the run at its chunk."""
    if not isinstance(record.id, str):
        raise RecordError(f"field 'id' must be a string, got {type(record.id).__name__} {record.id!r}")
    if not isinstance(record.meta, dict):
        raise RecordError(f"record {record.id!r}: field 'meta' must be a JSON object, got "
                          f"{type(record.meta).__name__}")
    for key, value in record.to_dict().items():
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise RecordError(f"record {record.id!r}: field {key!r} holds NaN or Infinity, which predictions.jsonl "
                              "(strict JSON) cannot store; use a number or null") from None


def _check_image_root(records: Sequence[Record], root: Path, probe: int = 20) -> None:
    """A wrong --image-root would turn every item into an error row; when none of the first ``probe`` images
    exists, say so before any model is loaded. A few missing images are the per-item errors they should be."""
    sample = records[:probe]
    if not any((root / r.image).is_file() for r in sample):
        raise EvalError(f"none of the first {len(sample)} images exists under {root} (e.g. {root / sample[0].image}); "
                        "pass --image-root, the directory the data file's image paths are relative to")


def _versions() -> dict[str, str | None]:
    """Versions of what decides the numbers; read from package metadata so nothing heavy is imported."""
    out: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("emocaliber", "torch", "transformers", "vllm", "trl", "pillow", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _complete_lines(path: Path) -> int:
    """Lines of ``path`` finished with a newline (a line cut by a kill does not count)."""
    if not path.is_file():
        return 0
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.endswith(b"\n"))


def _check_same_run(config_path: Path, identity: dict[str, Any]) -> None:
    """Refuse to resume into an output directory written with other settings: the file would mix two runs."""
    from emocaliber.resume import NOT_RECORDED, changed_settings

    def ignore(name: str, old: Any, new: Any) -> bool:
        # "auto" matches whichever backend the earlier run resolved to (the resolved name is checked once built);
        # weights that cannot be fingerprinted, or a record without them, cannot be compared.
        return ((name == "backend" and new == "auto")
                or (name == "weights" and (old == NOT_RECORDED or not _weights_known(new))))

    try:
        changed = changed_settings(config_path, identity, IDENTITY_FIELDS, ignore)
    except ValueError:
        raise EvalError(f"{config_path.parent} holds predictions but no readable {RUN_CONFIG_FILE}; "
                        "pass --overwrite to start again or choose another --out") from None
    if changed:
        raise EvalError(f"{config_path.parent} holds a run with other settings ({'; '.join(changed)}); "
                        "rerun with the same settings to resume, or pass --overwrite or another --out")


def _weights_known(weights: Any) -> bool:
    """Whether the weights' fingerprint could be read (a local directory, or a hub snapshot on disk); when not,
    nothing can be generated either, so a finished run may still be re-reported. (A run_config.json written
    before weights were fingerprinted has no entry to compare with.)"""
    return isinstance(weights, dict) and bool(weights.get("sha256") or weights.get("revision"))


def eval_request(record: Record, image_root: Path, with_confidence: bool = True):
    """The evaluation request of a record: the prompt with the confidence instruction (without it for a stage-1
    scaffold model, ``with_confidence=False``), or, for a record imported
    from a released file (``meta["prompt"]``), that file's own question verbatim, so the released test set is
    asked exactly what the release asked. Raises ``ImageLoadError`` when the image does not load."""
    from emocaliber.generation import record_request

    request = record_request(record, image_root=image_root, with_confidence=with_confidence)
    prompt = record.meta.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        next(p for p in request.messages[-1]["content"] if p["type"] == "text")["text"] = prompt
    return request


def make_chunk_processor(backend: Any, image_root: Path, settings: Any, with_confidence: bool = True,
                         ) -> Callable[[list[Record], int], list[dict[str, Any]]]:
    """The per-chunk step for :func:`run_chunked`: one batched generation call for the chunk's loadable images.

    An item whose image fails to load gets ``settings.n`` error rows (response null) and the rest of the chunk
    goes on. The chunk's seed replaces the settings' seed, so a redone chunk samples what it sampled before.
    """
    from emocaliber.images import ImageLoadError

    def process(chunk: list[Record], chunk_seed: int) -> list[dict[str, Any]]:
        requests, errors = [], {}
        for i, record in enumerate(chunk):
            try:
                requests.append(eval_request(record, image_root, with_confidence))
            except ImageLoadError as e:
                errors[i] = str(e)
        texts = iter(backend.generate(requests, replace(settings, seed=chunk_seed)) if requests else [])
        rows = []
        for i, record in enumerate(chunk):
            responses = [None] * settings.n if i in errors else list(next(texts))
            if len(responses) != settings.n:
                raise RuntimeError(f"backend returned {len(responses)} samples for one request, expected {settings.n}")
            rows += [{"record": record.to_dict(), "sample": k, "response": text, "error": errors.get(i)}
                     for k, text in enumerate(responses)]
        return rows

    return process


def run_evaluation(config: EvalConfig, *, backend: Any = None) -> EvalResult:
    """Generate (or resume) the predictions of ``config``, then write metrics.json, report.md and the plots.

    ``backend`` lets a caller reuse a loaded generation backend (benchmarks, notebooks); by default one is built
    from ``config.model``, and only when something is left to generate.
    """
    items = load_eval_data(config.data, image_root=config.image_root, tasks=config.tasks, strict=config.strict)
    out = config.out_dir
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EvalError(f"cannot create output directory {out}: {e.strerror or e}") from None
    try:
        with locked(out):
            return _run_locked(config, items, out, backend)
    except BaseException:
        if created and out.is_dir() and {p.name for p in out.iterdir()} <= {LOCK_FILE}:
            shutil.rmtree(out, ignore_errors=True)  # a run that failed its checks leaves no empty directory
        raise


def _run_locked(config: EvalConfig, items: EvalData, out: Path, backend: Any) -> EvalResult:
    """:func:`run_evaluation` once the output directory is held by this process."""
    from emocaliber.fingerprint import model_fingerprint

    predictions, config_path = out / PREDICTIONS_FILE, out / RUN_CONFIG_FILE
    identity = {**{k: v for k, v in asdict(config).items() if k in IDENTITY_FIELDS},
                "data_sha256": file_sha256(Path(config.data)), "image_root": str(items.image_root.resolve()),
                "backend": backend.name if backend is not None else config.backend,
                "weights": model_fingerprint(config.model)}
    done = 0 if config.overwrite else _complete_lines(predictions)
    if done:
        _check_same_run(config_path, identity)
    seconds, n_generated = 0.0, 0
    if done < len(items.records) * config.samples:
        if backend is None:
            from emocaliber.generation import resolve_backend
            from emocaliber.modeling import check_model_source

            check_model_source(config.model)  # before anything slow, so a typo fails at once
            identity["backend"] = resolve_backend(config.model, config.backend)
            if done:
                _check_same_run(config_path, identity)
            backend = _build_backend(config, identity["backend"])
        _write_run_config(config_path, config, identity, items)
        seconds, n_generated = _generate(items, backend, config, predictions, done)
    from emocaliber.report import write_report

    metrics = write_report(predictions, out, parse_modes=config.parse_modes, n_bootstrap=config.n_bootstrap,
                           seed=config.seed, dropped=dropped_summary(items))
    n_error_rows = metrics["modes"][config.parse_modes[0]]["overall"]["parse"]["n_error_rows"]
    result = EvalResult(out, metrics, len(items.records), n_error_rows // config.samples, n_generated, seconds,
                        items.skipped)
    return result


def dropped_summary(items: EvalData) -> dict[str, Any]:
    """Lines read, lines dropped and a count per reason (ids, quotes and numbers blanked so alike lines group)."""
    import re

    reasons: Counter[str] = Counter()
    for message in items.skipped:
        reason = message.split(": ", 1)[-1]
        reasons[re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "_", reason)[:100]] += 1
    n_lines = items.n_lines if items.n_lines is not None else len(items.records) + len(items.skipped)
    return {"n_lines": n_lines, "n_dropped": len(items.skipped), "reasons": dict(reasons.most_common()),
            "first": items.skipped[:5]}


def dropped_share(result: EvalResult) -> float:
    dropped = result.metrics.get("dropped_input") or {}
    return dropped["n_dropped"] / dropped["n_lines"] if dropped.get("n_lines") else 0.0


def _generate(items: EvalData, backend: Any, config: EvalConfig, predictions: Path, done_rows: int,
              ) -> tuple[float, int]:
    """Run the remaining chunks into ``predictions``; (seconds, items generated)."""
    from tqdm.auto import tqdm

    from emocaliber.generation import SamplingSettings
    from emocaliber.resume import run_chunked

    settings = SamplingSettings(n=config.samples, temperature=config.temperature, top_p=config.top_p,
                                max_new_tokens=config.max_new_tokens, seed=config.seed)
    n = len(items.records)
    resumed = min(n, done_rows // (config.samples * config.chunk_size) * config.chunk_size)
    start = time.perf_counter()
    with tqdm(total=n, unit="item", desc="generating", disable=not config.progress, dynamic_ncols=True) as bar:
        process = make_chunk_processor(backend, items.image_root, settings, config.with_confidence)
        run_chunked(items.records, predictions, process, chunk_size=config.chunk_size, seed=config.seed, rows_per_item=config.samples,
                    overwrite=config.overwrite, progress=bar.update)
    return time.perf_counter() - start, n - resumed


def _build_backend(config: EvalConfig, name: str):
    from emocaliber.generation import get_backend, refuse_lora_adapter, vllm_available
    from emocaliber.modeling import check_model_source

    source = check_model_source(config.model)
    pixels = {"min_pixels": config.min_pixels, "max_pixels": config.max_pixels}
    if name == "vllm":
        if not vllm_available():
            raise EvalError("--backend vllm needs vLLM: pip install 'emocaliber[vllm]' (GPU machines only), "
                            "or use --backend transformers")
        try:
            refuse_lora_adapter(source)
        except ValueError as e:
            raise EvalError(str(e)) from None
        return get_backend(source, "vllm", dtype=config.dtype, seed=config.seed, progress=False, **pixels)
    import torch

    device = config.device or ("cuda" if torch.cuda.is_available() else None)
    return get_backend(source, "transformers", batch_size=config.batch_size, dtype=config.dtype, device=device,
                       progress=False, **pixels)


def _write_run_config(path: Path, config: EvalConfig, identity: dict[str, Any], items: EvalData) -> None:
    payload = {"args": asdict(config), "identity": identity, "data_format": items.format,
               "n_items": len(items.records), "skipped_lines": {"n": len(items.skipped), "first": items.skipped[:10]},
               "versions": _versions(), "command": sys.argv}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------------
# Command line (shared by eval/run_vecbench.py and `emocaliber eval`)

EVAL_DESCRIPTION = """\
Evaluate a checkpoint on VECBench (or any records file): generate, parse, score, report.

Writes into --out: predictions.jsonl (one row per item and sample, written as it is produced), run_config.json
(all settings and library versions), metrics.json, report.md and PNG plots, and prints a one-screen summary.
A killed run resumes where it stopped when the same command is run again; a finished run is not redone unless
--overwrite is given. Items whose image will not load are recorded with the reason and do not stop the run."""

EVAL_EPILOG = """\
examples:
  # the release's protocol on the released test file (temperature 0.7, one sample, 1024 new tokens)
  # (test_8k.jsonl: wdqqdw/EmoCaliber on GitHub, input_data/; images: the hub dataset wudq/VECBench)
  %(prog)s --model wudq/EmoCaliber --data EmoCaliber/input_data/test_8k.jsonl --image-root VECBench \\
      --out runs/emocaliber
  # a local checkpoint, two tasks, greedy decoding
  %(prog)s --model ckpt/stage3 --data data/vecbench/test.jsonl --tasks FI-8,EmoSet-8 --temperature 0
  # five samples per image, only the strict parser
  %(prog)s --model ckpt/stage3 --data data/synthemo/test.jsonl --samples 5 --parse-mode strict

--data takes project records (JSONL with id, task, image, candidates, ground_truth, ...) or the released
test_8k.jsonl (conversations, task, candidates, ground_truth); image paths are relative to --image-root,
which defaults to the data file's directory."""


_positive_int = whole_number(1)


def _task_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected task names separated by commas, e.g. FI-8,EmoSet-8")
    try:
        return [_canonical_task(n) for n in names]
    except EvalError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the evaluation options to ``parser`` (one definition for both command-line entry points)."""
    d = EvalConfig(model="", data="")
    p = parser
    p.add_argument("--model", required=True, help="checkpoint directory or hub id (e.g. wudq/EmoCaliber)")
    p.add_argument("--data", required=True, help="test file: project records JSONL or the released test_8k.jsonl")
    p.add_argument("--image-root", help="directory image paths are relative to (default: the data file's directory)")
    p.add_argument("--tasks", type=_task_list, metavar="T1,T2", help="evaluate only these tasks (default: all in the file)")
    p.add_argument("--out", help="output directory (default: runs/eval/<model directory name>)")
    g = p.add_argument_group("generation")
    g.add_argument("--backend", choices=("auto", "vllm", "transformers"), default=d.backend,
                   help="vllm on a GPU when installed, transformers otherwise (default %(default)s)")
    g.add_argument("--samples", type=_positive_int, default=d.samples, metavar="K",
                   help="responses per image (default %(default)s, as the release)")
    g.add_argument("--temperature", type=float, default=d.temperature,
                   help="sampling temperature, 0 = greedy (default %(default)s, as the release)")
    g.add_argument("--top-p", type=float, default=d.top_p, help="nucleus sampling mass (default %(default)s)")
    g.add_argument("--max-new-tokens", type=_positive_int, default=d.max_new_tokens,
                   help="longest response in tokens (default %(default)s, as the release)")
    g.add_argument("--batch-size", type=_positive_int, default=d.batch_size,
                   help="requests per forward pass for the transformers backend (default %(default)s)")
    g.add_argument("--chunk-size", type=_positive_int, default=d.chunk_size,
                   help="items per generation call and per resumable write; a kill loses at most one chunk "
                        "(default %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed; same seed and settings, same predictions "
                                                              "(default %(default)s)")
    g.add_argument("--dtype", default=d.dtype, choices=("auto", "bfloat16", "float16", "float32"),
                   help="weight dtype (default %(default)s: the checkpoint's)")
    g.add_argument("--device", help="torch device for the transformers backend, e.g. cuda:1 (default: the "
                                    "first GPU if any, else cpu)")
    g.add_argument("--min-pixels", type=_positive_int, help="image pixel lower bound (default: the checkpoint's "
                                                             "processor, which the release's evaluation used too)")
    g.add_argument("--max-pixels", type=_positive_int, help="image pixel upper bound (default: the checkpoint's "
                                                             "processor, which the release's evaluation used too)")
    r = p.add_argument_group("report")
    r.add_argument("--parse-mode", choices=(*PARSE_MODES, "both"), default=d.parse_mode,
                   help="strict: this project's parser; release: the original evaluation's rules, for "
                        "comparison with the paper; both (default)")
    r.add_argument("--no-confidence", dest="with_confidence", action="store_false",
                   help="ask the stage-1 question (reasoning + answer, no confidence instruction), for scaffold "
                        "models trained without confidence; calibration metrics are then empty")
    r.add_argument("--n-bootstrap", type=int, default=d.n_bootstrap,
                   help="bootstrap resamples for confidence intervals, 0 = none (default %(default)s)")
    r.add_argument("--overwrite", action="store_true", help="discard existing predictions and start again")
    r.add_argument("--strict", action="store_true", help="stop at the first bad line of the data file "
                                                          "(default: skip it and report it)")
    r.add_argument("--max-dropped", type=float, default=d.max_dropped, metavar="SHARE",
                   help="exit with an error when more than this share of the data file's lines were unusable and "
                        "dropped (default %(default)s; 1 accepts any)")
    r.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one line (no usage block), so the reason is what the user sees; subparsers inherit it."""

    def error(self, message: str):
        import difflib

        if message.startswith("unrecognized arguments:"):
            known = set(self._option_string_actions)
            subcommands = [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]
            for action in subcommands:  # their options too (`emocaliber eval --modle`)
                for sub in action.choices.values():
                    known |= set(sub._option_string_actions)
            hints = []
            for flag in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(flag.split("=", 1)[0], sorted(known), n=1)
                if flag.startswith("--") and close:
                    hints.append(f"{flag} -> did you mean {close[0]}?")
            if hints:
                message += f" ({'; '.join(hints)})"
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_eval_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog=prog, description=EVAL_DESCRIPTION, epilog=EVAL_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_eval_arguments(parser)


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    names = {f.name for f in fields(EvalConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return EvalConfig(**values, progress=not args.no_progress)


def summary_text(result: EvalResult) -> list[str]:
    """The one-screen summary: the report's headline lines plus where everything is."""
    from emocaliber.report import summary_lines

    lines = list(summary_lines(result.metrics))
    speed = (f", {result.n_generated} generated at {result.items_per_second:.2f} items/s"
             if result.n_generated else ", predictions already complete (nothing generated)")
    lines.append(f"{result.n_items} items{speed}; {result.n_errors} without a response (see the error field)")
    if result.skipped_lines:
        lines.append(f"{len(result.skipped_lines)} bad line(s) of the data file skipped, first: "
                     f"{result.skipped_lines[0]}")
    lines.append(f"wrote {result.out_dir}/{{predictions.jsonl, run_config.json, metrics.json, report.md}} and plots")
    return lines


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input rather than a bug: printed as one line, no traceback."""
    from emocaliber.atomic import OutputError
    from emocaliber.modeling import ModelNotFoundError
    from emocaliber.weights import CorruptWeightsError

    return EvalError, ModelNotFoundError, LockedError, OutputError, CorruptWeightsError


def run_from_args(args: argparse.Namespace, prog: str = "run_vecbench") -> int:
    """Run an evaluation from parsed arguments; print the summary, or one line saying what went wrong."""
    try:
        config = config_from_args(args)
        result = run_evaluation(config)
    except user_errors() as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print("\n".join(summary_text(result)))
    share = dropped_share(result)
    if share > config.max_dropped:
        print(f"{prog}: error: {100 * share:.1f}% of the lines of {config.data} were dropped (above --max-dropped "
              f"{config.max_dropped:g}), so the scores cover part of the input only; fix the lines listed above or "
              "pass --max-dropped 1 to accept", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = build_eval_parser(prog)
    return run_from_args(parser.parse_args(argv), parser.prog)

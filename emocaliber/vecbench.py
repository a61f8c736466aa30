"""Build VECBench from the six raw datasets: merge, check, de-duplicate, split, place images, summarise.

Design (why it looks like this):

* **Streaming, two passes, flat memory.** Pass 1 reads every source once, checks each image, de-duplicates and
  appends the survivors to a spool file on disk while keeping, per task, only a heap of the ``test_size`` items
  with the smallest seeded hash (the test set). Pass 2 re-reads the spool and routes each record to
  ``train.jsonl`` or ``test.jsonl``. The de-duplication index is an on-disk SQLite table, so 360k records need
  no more memory than 36k.
* **Deterministic.** The test set of a task is the ``test_size`` items whose ``blake2b(seed, image path)`` is
  smallest: no random state, independent of reading order, and the same images for tasks that share them
  (FI-8/FI-2, WebEmo-25/-7/-2), so an image never sits in one task's test set and a sibling task's train set.
  Output lines follow the sources' (sorted) reading order. Same inputs and seed -> same bytes.
* **Splits** follow each source's policy: EmoSet and WebEmo keep their official train files as train and draw
  the test set from their official test files (the rest of those is unused; EmoSet's val split is unused unless
  ``use_val``); FI has no split, so its test set is drawn from all of it and the rest is train; Abstract,
  ArtPhoto and UnbiasedEmo are OOD and test-only (all of Abstract's non-tied items and all of ArtPhoto's,
  ``test_size`` of UnbiasedEmo's).
* **Images.** Records' ``image`` paths are relative to ``<out>/images`` and keep each dataset's own relative path
  under a per-dataset folder (``EmoSet-118K/image/amusement/amusement_08258.jpg``), as the released VECBench
  does. Link modes: ``hardlink`` (default: no extra disk space, and the files really are inside the image root,
  which :func:`emocaliber.records.resolve_image` insists on; falls back to a copy across file systems),
  ``copy``, ``symlink`` (links leave the root, so ``resolve_image`` rejects them: only for tools that follow
  links) and ``none`` (records only; ``image_roots.json`` says where each folder's originals are).
* **Bad input** is counted by reason in the summary (see :data:`emocaliber.sources.common.REASONS`); the
  result's ``n_errors`` lets a caller fail under ``--strict``.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import logging
import os
import shutil
import sqlite3
import sys
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from emocaliber.records import Record, dumps
from emocaliber.sources.common import REASONS, ImageCheck, SkipLog, Source, check_image
from emocaliber.tasks import VECBENCH_TASKS, get_task

LINK_MODES = ("hardlink", "copy", "symlink", "none")
#: Why a record was read but is in neither output file (not an error: a sampling decision).
UNUSED_REASONS = {
    "test_pool_not_sampled": "in the source's test pool (or an OOD set) but beyond the task's test size",
    "val_split_not_used": "EmoSet val split (VECBench trains on the official train split only)",
}


@dataclass
class BuildConfig:
    out: Path
    seed: int = 0
    test_size: int = 1000
    verify: bool = True
    link_mode: str = "hardlink"
    use_val: bool = False
    progress: bool = True
    workers: int = 4  # threads decoding images ahead of the (sequential, deterministic) scan when verifying

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.link_mode not in LINK_MODES:
            raise ValueError(f"link_mode must be one of {LINK_MODES}, got {self.link_mode!r}")
        if self.test_size < 0:
            raise ValueError(f"test_size must be >= 0, got {self.test_size}")


@dataclass
class BuildResult:
    out: Path
    summary: dict
    skips: SkipLog = field(repr=False)

    @property
    def n_errors(self) -> int:
        return self.skips.n_errors


class SeenStore:
    """The set of (group, key) already kept, on disk: de-duplication without memory growing with the data."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-2000", "temp_store=FILE"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute("CREATE TABLE seen (k BLOB PRIMARY KEY, first TEXT NOT NULL) WITHOUT ROWID")

    def add(self, group: str, key: bytes, name: str) -> str | None:
        """Remember ``key`` within ``group``; returns the name stored with it first (a duplicate), else None."""
        k = hashlib.blake2b(group.encode() + b"\0" + key, digest_size=16).digest()
        if self.db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (k, name)).rowcount:
            return None
        return self.db.execute("SELECT first FROM seen WHERE k = ?", (k,)).fetchone()[0]

    def close(self) -> None:
        self.db.close()  # uncommitted on purpose: the table is scratch, deleted with the work folder


class TestSelector:
    """Keeps the ``cap`` candidates with the smallest rank (a max-heap), or all of them when ``cap`` is None."""

    def __init__(self, cap: int | None) -> None:
        self.cap = cap
        self.heap: list[tuple[int, str]] = []

    def offer(self, rank: int, record_id: str) -> None:
        if self.cap is None:
            return
        item = (-rank, record_id)
        if len(self.heap) < self.cap:
            heapq.heappush(self.heap, item)
        elif self.cap and item > self.heap[0]:
            heapq.heapreplace(self.heap, item)

    def chosen(self) -> set[str] | None:
        """Ids in the test set; None means every candidate."""
        return None if self.cap is None else {rid for _, rid in self.heap}


def _placed(src: Path, dst: Path) -> bool:
    """``dst`` already serves ``src``'s current bytes: the same file (a hard or symbolic link to it), or a copy
    with its size and modification time."""
    try:
        if os.path.samefile(src, dst):
            return True
        s, d = os.stat(src), os.stat(dst)
    except OSError:
        return False
    return (s.st_size, s.st_mtime_ns) == (d.st_size, d.st_mtime_ns)


def place_file(src: Path, dst: Path, mode: str) -> None:
    """Put ``src`` at ``dst`` by ``mode``: ``hardlink`` (falls back to a copy across file systems), ``copy`` or
    ``symlink``. A ``dst`` that already serves ``src`` is kept, so a re-run resumes instead of redoing the work;
    one left from an older original is replaced, so a corrected image reaches the output."""
    if _placed(src, dst):
        return
    if os.path.lexists(dst):
        os.unlink(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        os.symlink(src.resolve(), dst)
        return
    if mode == "hardlink":
        try:
            os.link(src.resolve(), dst)  # link() on Linux would hard-link a symbolic link itself, not its file
            return
        except OSError:
            pass  # another file system, or links not allowed: copy instead
    elif mode != "copy":
        raise ValueError(f"unknown link mode {mode!r}")
    tmp = dst.with_name(dst.name + ".part")
    shutil.copy2(src, tmp)  # with its modification time, which tells a re-run that the copy is current
    os.replace(tmp, dst)




def split_rank(seed: int, image: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}\0{image}".encode(), digest_size=8).digest(), "big")


def _pool(source: Source, record: Record) -> str:
    """Where a record may go: ``train``, ``test`` (test candidate only), ``any`` (test candidate, else train),
    ``val``."""
    if source.split_policy == "sample":
        return "any"
    if source.split_policy == "test_only":
        return "test"
    if record.meta.get("source_split") == "val":
        return "val"
    return record.split


@dataclass
class _ImageState:
    """What pass 1 decided about one image; sibling tasks' records of an image arrive one after another and
    share it, so an image is checked, hashed and de-duplicated once, not once per task."""

    image: str
    src: str
    check: ImageCheck
    duplicate_of: str | None
    rank: int
    tasks: set[str] = field(default_factory=set)


def _with_checks(source: Source, records: Iterable[Record], cfg: BuildConfig, pool: ThreadPoolExecutor | None
                 ) -> Iterator[tuple[Record, Path, ImageCheck]]:
    """(record, original path, check) in reading order. With a pool, checks run up to ``_WINDOW`` records ahead
    on threads (decoding and hashing release the GIL); the order, and so the output, stays the same."""
    window: deque[tuple[Record, Path, Future | ImageCheck]] = deque()
    ahead = _WINDOW if pool else 0
    last_image, src, check = None, Path(), None
    for record in records:
        if record.image != last_image:
            last_image, src = record.image, source.original_path(record)
            check = (pool.submit(check_image, src, verify=cfg.verify, root=source.root) if pool
                     else check_image(src, verify=cfg.verify, root=source.root))
        window.append((record, src, check))
        while len(window) > ahead:
            rec, path, result = window.popleft()
            yield rec, path, result.result() if isinstance(result, Future) else result
    for rec, path, result in window:
        yield rec, path, result.result() if isinstance(result, Future) else result


_WINDOW = 256


def _image_state(source: Source, record: Record, src: Path, result: ImageCheck, cfg: BuildConfig,
                 seen: SeenStore) -> _ImageState:
    first = None
    if result.ok:  # tasks of one source share their images, so de-duplicating per source is per task
        first = seen.add(source.name, result.digest if cfg.verify else record.image.encode(), record.image)
    return _ImageState(record.image, str(src), result, first, split_rank(cfg.seed, record.image))


def _scan(sources: Iterable[Source], cfg: BuildConfig, work: Path, skips: SkipLog
          ) -> tuple[Path, dict[str, TestSelector]]:
    """Pass 1: read, check, de-duplicate, spool; choose each task's test set.

    A spool line is ``[pool, task, id, ground_truth, source path, image]`` and the record's JSON, joined by a tab
    (JSON escapes tabs inside strings, so the first tab is the separator).
    """
    spool = work / "spool.jsonl"
    seen = SeenStore(work / "seen.sqlite")
    selectors: dict[str, TestSelector] = {}
    bar = tqdm(desc="reading sources", unit="rec", disable=not cfg.progress)
    executor = ThreadPoolExecutor(cfg.workers) if cfg.verify and cfg.workers > 1 else None
    try:
        with spool.open("w", encoding="utf-8") as fh:
            for source in sources:
                bar.set_postfix_str(source.name)
                state: _ImageState | None = None
                for record, src, check in _with_checks(source, source.records(skips), cfg, executor):
                    bar.update()
                    if state is None or state.image != record.image or record.task in state.tasks:
                        state = _image_state(source, record, src, check, cfg, seen)  # new image, or a repeat
                    state.tasks.add(record.task)
                    if not state.check.ok:
                        reason = state.check.reason
                        skips.add(reason, record.task, record.id, state.check.detail or REASONS[reason][1])
                        continue
                    if state.duplicate_of is not None:
                        how = "same bytes" if cfg.verify else "same image path"
                        skips.add("duplicate", record.task, record.id, f"{how} as {state.duplicate_of}; dropped")
                        continue
                    pool = _pool(source, record)
                    if pool in ("test", "any"):
                        cap = None if source.test_all else cfg.test_size
                        selectors.setdefault(record.task, TestSelector(cap)).offer(state.rank, record.id)
                    head = json.dumps([pool, record.task, record.id, record.ground_truth, state.src, record.image],
                                      ensure_ascii=False)
                    fh.write(f"{head}\t{dumps(record.to_dict())}\n")
    finally:
        bar.close()
        seen.close()
        if executor:
            executor.shutdown(cancel_futures=True)
    return spool, selectors


def _with_split(record_json: str, split: str) -> str:
    """Set the split in a record's JSON text without re-parsing it. ``dumps`` sorts keys, so ``split`` is the
    second-to-last key (only ``task``, a registered name, follows): its last occurrence is the field."""
    head, key, tail = record_json.rpartition('"split": "')
    return head + key + split + tail[tail.index('"'):]


def _route(spool: Path, selectors: dict[str, TestSelector], cfg: BuildConfig, skips: SkipLog) -> dict:
    """Pass 2: assign splits, place images, write train/test files; returns per-task counts."""
    chosen = {task: sel.chosen() for task, sel in selectors.items()}
    counts: dict[str, dict] = defaultdict(lambda: {"labels": defaultdict(Counter), "unused": Counter()})
    image_root = cfg.out / "images"
    outs = {split: (cfg.out / f"{split}.jsonl.tmp").open("w", encoding="utf-8") for split in ("train", "test")}
    try:
        with spool.open(encoding="utf-8") as fh:
            for line in tqdm(fh, desc="writing splits", unit="rec", disable=not cfg.progress):
                head, record_json = line.split("\t", 1)
                pool, task, rid, label, src, image = json.loads(head)
                entry = counts[task]
                if pool in ("test", "any"):
                    ids = chosen[task]
                    split = "test" if ids is None or rid in ids else ("train" if pool == "any" else None)
                    if split is None:
                        entry["unused"]["test_pool_not_sampled"] += 1
                        continue
                elif pool == "val" and not cfg.use_val:
                    entry["unused"]["val_split_not_used"] += 1
                    continue
                else:
                    split = "train"
                if cfg.link_mode != "none":
                    try:
                        place_file(Path(src), image_root / image, cfg.link_mode)
                    except OSError as e:
                        skips.add("link_failed", task, rid, f"{src}: {e}")
                        continue
                outs[split].write(_with_split(record_json, split))
                entry["labels"][label][split] += 1
    finally:
        for fh in outs.values():
            fh.close()
    for split in ("train", "test"):
        (cfg.out / f"{split}.jsonl.tmp").replace(cfg.out / f"{split}.jsonl")
    return counts


def _task_order(task: str) -> tuple[int, str]:
    return (VECBENCH_TASKS.index(task) if task in VECBENCH_TASKS else len(VECBENCH_TASKS), task)


def make_summary(counts: dict, sources: list[Source], cfg: BuildConfig, skips: SkipLog) -> dict:
    tasks = {}
    for task in sorted(counts, key=_task_order):
        entry = counts[task]
        labels = {lab: {s: entry["labels"][lab][s] for s in ("train", "test")}
                  for lab in get_task(task).labels if lab in entry["labels"]}
        tasks[task] = {
            "train": sum(v["train"] for v in labels.values()),
            "test": sum(v["test"] for v in labels.values()),
            "unused": dict(sorted(entry["unused"].items())),
            "labels": labels,
        }
    return {
        "settings": {"seed": cfg.seed, "test_size": cfg.test_size, "verify": cfg.verify,
                     "link_mode": cfg.link_mode, "use_val": cfg.use_val},
        "sources": {s.name: {"folder": s.folder, "root": str(s.root), "split_policy": s.split_policy}
                    for s in sources},
        "totals": {"train": sum(t["train"] for t in tasks.values()), "test": sum(t["test"] for t in tasks.values()),
                   "dropped": skips.total() - skips.total("warning"), "errors": skips.n_errors},
        "tasks": tasks,
        "skipped": skips.to_dict(),
    }


def render_summary_md(summary: dict) -> str:
    """The summary for people: totals per task, per label, and every skipped item by reason."""
    s = summary["settings"]
    lines = [
        "# VECBench build summary", "",
        (f"seed {s['seed']}, test size {s['test_size']} per task, verify images: {s['verify']}, "
        f"link mode: {s['link_mode']}, EmoSet val used: {s['use_val']}"), "",
        (f"**{summary['totals']['train']} train, {summary['totals']['test']} test records; "
        f"{summary['totals']['dropped']} items dropped ({summary['totals']['errors']} for bad input).**"), "",
        "## Tasks", "", "| task | train | test | unused |", "|---|---:|---:|---|",
    ]
    for task, t in summary["tasks"].items():
        unused = ", ".join(f"{k}: {v}" for k, v in t["unused"].items()) or "-"
        lines.append(f"| {task} | {t['train']} | {t['test']} | {unused} |")
    lines += ["", "Unused means read but not selected: " + "; ".join(f"`{k}`: {v}" for k, v in UNUSED_REASONS.items()),
              "", "## Labels", ""]
    for task, t in summary["tasks"].items():
        lines += [f"### {task}", "", "| label | train | test |", "|---|---:|---:|"]
        lines += [f"| {lab} | {c['train']} | {c['test']} |" for lab, c in t["labels"].items()]
        lines.append("")
    lines += ["## Skipped items by reason", ""]
    if not summary["skipped"]:
        lines.append("None.")
    else:
        lines += ["| reason | kind | count | by task or source | meaning |", "|---|---|---:|---|---|"]
        for reason, r in summary["skipped"].items():
            groups = ", ".join(f"{g}: {n}" for g, n in r["by_group"].items())
            lines.append(f"| {reason} | {r['kind']} | {r['total']} | {groups} | {REASONS[reason][1]} |")
        lines += ["", "### First examples", ""]
        for reason, r in summary["skipped"].items():
            lines += [f"- **{reason}**"] + [f"  - `{ex}`" for ex in r["examples"]]
    return "\n".join(lines) + "\n"


def build_vecbench(sources: list[Source], cfg: BuildConfig, skips: SkipLog | None = None) -> BuildResult:
    """Build VECBench into ``cfg.out`` from the given sources; see the module docstring for the design."""
    if not sources:
        raise ValueError("no source datasets given")
    skips = skips or SkipLog()
    cfg.out.mkdir(parents=True, exist_ok=True)
    work = cfg.out / ".vecbench-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        spool, selectors = _scan(sources, cfg, work, skips)
        counts = _route(spool, selectors, cfg, skips)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = make_summary(counts, sources, cfg, skips)
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (cfg.out / "summary.md").write_text(render_summary_md(summary), encoding="utf-8")
    roots = {s.folder: str(Path(s.root).resolve()) for s in sources}
    (cfg.out / "image_roots.json").write_text(json.dumps(roots, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return BuildResult(cfg.out, summary, skips)


# --------------------------------------------------------------- command line (build_vecbench.py)
VECBENCH_HELP = """Build VECBench (records + image root + summary) from the six raw datasets you downloaded.

Any subset of the datasets may be given. Output in --out: train.jsonl, test.jsonl, summary.md, summary.json,
image_roots.json and images/<dataset folder>/<original relative path> (see --link-mode). Bad items are counted
by reason in the summary and skipped; --strict turns any of them into exit status 1.

Example:
  python data_prep/build_vecbench.py --fi raw/FI --emoset raw/EmoSet-118K --webemo raw/WEBEmo \\
      --abstract raw/testImages_abstract --artphoto raw/testImages_artphoto --unbiasedemo raw/UnBiasedEmo \\
      --out data/vecbench
"""


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=VECBENCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("source datasets (any subset)")
    g.add_argument("--fi", help="FI folder (holding emotion_dataset/ or the 8 emotion folders)")
    g.add_argument("--emoset", help="EmoSet-118K folder (train.json, val.json, test.json, image/, annotation/)")
    g.add_argument("--webemo", help="WEBEmo folder (category.txt, train25.txt, test25.txt)")
    g.add_argument("--webemo-cache", help="downloaded WebEmo images, named by URL base name "
                                          "(default: <webemo>/images; fill it with download_webemo.py)")
    g.add_argument("--abstract", help="testImages_abstract folder (ABSTRACT_groundTruth.csv + images)")
    g.add_argument("--artphoto", help="testImages_artphoto folder")
    g.add_argument("--unbiasedemo", help="UnBiasedEmo folder (images/, images.zip or UnBiasedEmo.zip); "
                                         "archives are extracted safely into <out>/extracted/")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the test-set selection (default 0)")
    p.add_argument("--test-size", type=int, default=1000,
                   help="test items per task (default 1000; Abstract and ArtPhoto always use all items)")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="decode every image and de-duplicate by content (default); --no-verify only checks "
                        "that files exist and de-duplicates by path")
    p.add_argument("--workers", type=int, default=4, help="threads decoding images ahead when verifying (default 4; "
                                                          "the output does not depend on it)")
    p.add_argument("--use-emoset-val", action="store_true", help="add EmoSet's val split to train (default: unused)")
    p.add_argument("--link-mode", choices=LINK_MODES, default="hardlink",
                   help="how originals appear under <out>/images: hardlink (default; copies across file "
                        "systems), copy, symlink (links point outside the root, which "
                        "emocaliber.records.resolve_image refuses), none (records only; see image_roots.json)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 if any item was bad input")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``emocaliber prepare vecbench`` (``data_prep/build_vecbench.py``)."""
    from emocaliber.sources import open_sources
    from emocaliber.sources.unbiasedemo import ZipSafetyError

    args = parse_args(argv, prog)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        sources = open_sources(fi=args.fi, emoset=args.emoset, webemo=args.webemo, webemo_cache=args.webemo_cache,
                               abstract=args.abstract, artphoto=args.artphoto, unbiasedemo=args.unbiasedemo,
                               extract_to=f"{args.out}/extracted")
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not sources:
        print("error: give at least one dataset (--fi, --emoset, --webemo, --abstract, --artphoto, --unbiasedemo)",
              file=sys.stderr)
        return 2
    cfg = BuildConfig(out=args.out, seed=args.seed, test_size=args.test_size, verify=args.verify,
                      link_mode=args.link_mode, use_val=args.use_emoset_val, progress=not args.no_progress,
                      workers=args.workers)
    try:
        result = build_vecbench(sources, cfg)
    except (FileNotFoundError, ZipSafetyError, ValueError) as e:  # a whole source unusable (see the message)
        print(f"error: {e}", file=sys.stderr)
        return 1
    totals = result.summary["totals"]
    print(f"wrote {totals['train']} train and {totals['test']} test records to {cfg.out} "
          f"({totals['dropped']} items dropped, {totals['errors']} of them bad input; see {cfg.out}/summary.md)")
    if args.strict and result.n_errors:
        for reason, r in result.summary["skipped"].items():
            if r["kind"] == "error":
                print(f"strict: {r['total']} x {reason}, e.g. {r['examples'][0]}", file=sys.stderr)
        return 1
    return 0

#!/usr/bin/env python
"""Time and peak memory of build_vecbench at two sizes, to show memory does not grow with the data.

Generates raw trees (FI 10% of the index entries, EmoSet 30%, WebEmo 60%; every image and annotation a hard link
to one tiny file, so generation is cheap) and builds each in a fresh process with --no-verify and link mode
none (the figures are for reading, checking existence, de-duplicating, splitting and writing; image decoding
scales with the images, not with this code). Prints, per size: index entries, records written, build seconds,
CPU seconds, peak RSS of the build process, and RSS above the same process's baseline after imports.

  python bench/vecbench_bench.py                      # 36,000 and 360,000 entries
  python bench/vecbench_bench.py --sizes 10000 100000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

MIKELS = ("amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness")


def _link_many(src: Path, dests: list[Path], per_inode: int = 60_000) -> None:
    """Hard-link ``dests`` to copies of ``src``, a new copy every ``per_inode`` links (ext4 allows 65,000)."""
    for start in range(0, len(dests), per_inode):
        proto = src.with_name(f"{src.stem}-{start}-{len(dests)}{src.suffix}")
        if not proto.exists():
            shutil.copyfile(src, proto)
        for d in dests[start:start + per_inode]:
            os.link(proto, d)


def generate(root: Path, entries: int) -> dict[str, Path]:
    """A raw tree with ``entries`` index entries (files for FI, split entries for EmoSet, lines for WebEmo)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 40)).save(buf, format="JPEG")
    proto = root / "proto.jpg"
    root.mkdir(parents=True)
    proto.write_bytes(buf.getvalue())
    ann = root / "proto.json"
    ann.write_text(json.dumps({"emotion": "awe", "scene": "beach", "object": ["Sky"], "brightness": 0.4}))
    n_fi, n_es = entries // 10, entries * 3 // 10
    n_we = entries - n_fi - n_es

    fi = root / "FI" / "emotion_dataset"
    for emo in MIKELS:
        (fi / emo).mkdir(parents=True)
    _link_many(proto, [fi / MIKELS[i % 8] / f"{MIKELS[i % 8]}_{i}.jpg" for i in range(n_fi)])

    es = root / "EmoSet-118K"
    for emo in MIKELS:
        (es / "image" / emo).mkdir(parents=True)
        (es / "annotation" / emo).mkdir(parents=True)
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    for i in range(n_es):
        emo = MIKELS[i % 8]
        split = "test" if i % 20 < 3 else "val" if i % 20 == 3 else "train"
        splits[split].append([emo, f"image/{emo}/{emo}_{i:06d}.jpg", f"annotation/{emo}/{emo}_{i:06d}.json"])
    for split, items in splits.items():
        (es / f"{split}.json").write_text(json.dumps(items))
    for items in splits.values():
        _link_many(proto, [es / e[1] for e in items])
        _link_many(ann, [es / e[2] for e in items])

    we = root / "WEBEmo"
    (we / "images").mkdir(parents=True)
    with open(we / "train25.txt", "w") as train, open(we / "test25.txt", "w") as test:
        for i in range(n_we):
            (test if i % 5 == 0 else train).write(f"https://as2.example.net/jpg/{i % 97}/220_F_{i}.jpg {i % 25}\n")
    _link_many(proto, [we / "images" / f"220_F_{i}.jpg" for i in range(n_we)])
    return {"fi": root / "FI", "emoset": es, "webemo": we}


def run_build(raw: dict[str, str], out: str) -> dict:
    """In this (fresh) process: build and report time and memory."""
    from emocaliber.sources import open_sources
    from emocaliber.vecbench import BuildConfig, build_vecbench

    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    baseline, cpu0 = usage0.ru_maxrss, usage0.ru_utime + usage0.ru_stime
    start = time.perf_counter()
    result = build_vecbench(open_sources(**raw), BuildConfig(out=Path(out), verify=False, link_mode="none",
                                                             progress=False))
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss
    totals = result.summary["totals"]
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu0, "peak_mb": peak / 1024, "growth_mb": (peak - baseline) / 1024,
            "records": totals["train"] + totals["test"]}


def _child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[36_000, 360_000], help="index entries per run")
    p.add_argument("--workdir", help="where to generate (default: a temporary folder, removed afterwards)")
    p.add_argument("--_build", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--_generate", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._build:
        print(json.dumps(run_build(json.loads(args._build[0]), args._build[1])))
        return 0
    if args._generate:
        raw = generate(Path(args._generate[0]), int(args._generate[1]))
        print(json.dumps({k: str(v) for k, v in raw.items()}))
        return 0
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        print(f"{'entries':>9} {'records':>9} {'build s':>8} {'CPU s':>7} {'peak RSS MB':>12} {'growth MB':>10}")
        for size in args.sizes:
            # Both steps run in fresh processes: Linux keeps a parent's peak RSS across fork + exec.
            t0 = time.perf_counter()
            raw = _child("--_generate", str(Path(tmp) / f"raw-{size}"), str(size))
            gen = time.perf_counter() - t0
            r = _child("--_build", json.dumps(raw), str(Path(tmp) / f"out-{size}"))
            print(f"{size:>9} {r['records']:>9} {r['seconds']:>8.1f} {r['cpu_seconds']:>7.1f} {r['peak_mb']:>12.1f} "
                  f"{r['growth_mb']:>10.1f}"
                  f"   (tree generated in {gen:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

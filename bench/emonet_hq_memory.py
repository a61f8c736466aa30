#!/usr/bin/env python
"""Memory of reading an hq.csv of the release's size: a generated 44,000-row file (2,500 images, 8 experts
with 4 per image, 14 model annotators with continuous values; about 90 MB like the real one).

Prints the file size, the time and peak RSS of an untraced run, tracemalloc's peak for streaming the rows (iter_hq) and for building the full
ratings array (load_hq), and the process's peak RSS; each measurement runs in a fresh process. With --eager it
also measures the release notebook's way (pandas read_csv, then ast.literal_eval on every row) for comparison.

  python bench/emonet_hq_memory.py [--rows 44000] [--eager]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from emocaliber.emonet.taxonomy import EMOTIONS

MEASURE = r"""
import json, resource, sys, time, tracemalloc
from emocaliber.emonet.data import iter_hq, load_hq
what, path, trace = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if trace:
    tracemalloc.start()
t = time.perf_counter()
if what == "stream":
    n = sum(1 for _ in iter_hq(path))
elif what == "load":
    data = load_hq(path); n = data.n_rows
else:
    import ast, pandas as pd
    df = pd.read_csv(path); df["annotations"] = df["annotations"].apply(ast.literal_eval); n = len(df)
seconds = time.perf_counter() - t
peak = tracemalloc.get_traced_memory()[1] if trace else 0
print(json.dumps({"rows": n, "seconds": seconds, "tracemalloc_peak_mb": peak / 2**20,
                  "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_after_imports_mb": base / 1024}))
"""


def write_file(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n_images, n_models = 2500, 14
    keys = [e.hq_key for e in EMOTIONS]
    written = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "annotator", "human", "annotations"])
        for i in range(n_images):
            for r in rng.choice(8, size=4, replace=False):
                d = dict(zip(keys, rng.integers(0, 8, 40).tolist()))
                d["Extra Dimensions|Arousal"] = int(rng.integers(0, 8))
                w.writerow([f"{i:05d}.jpg", f"human-{r + 1}", True, repr(d)])
                written += 1
        for m in range(n_models):
            for i in range(n_images):
                if written >= rows:
                    return
                d = dict(zip(keys, np.round(rng.uniform(0, 7, 40), 4).tolist()))
                w.writerow([f"{i:05d}.jpg", f"model-{m} ZS", False, repr(d)])
                written += 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=44_000)
    p.add_argument("--eager", action="store_true", help="also measure the pandas + literal_eval way")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hq.csv"
        t = time.perf_counter()
        write_file(path, args.rows)
        print(f"generated {path.stat().st_size / 2**20:.1f} MB in {time.perf_counter() - t:.1f} s")
        for what in ("stream", "load") + (("eager",) if args.eager else ()):
            r, traced = (json.loads(subprocess.run([sys.executable, "-c", MEASURE, what, str(path), trace],
                                                   check=True, capture_output=True, text=True).stdout)
                         for trace in ("0", "1"))
            print(f"{what:>6}: {r['rows']} rows in {r['seconds']:.1f} s; peak RSS {r['rss_peak_mb']:.0f} MB "
                  f"(after imports {r['rss_after_imports_mb']:.0f} MB); tracemalloc peak "
                  f"{traced['tracemalloc_peak_mb']:.1f} MB (a separate, traced run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

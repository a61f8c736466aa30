#!/usr/bin/env python
"""Does a stage-1 tiny model see how strongly a SynthEmo image is blended?

The teacher's analysis states the blend degree of every training image ("clearly evokes X" for pure images,
"X dominates, only a trace of Y" ... "torn between X and Y" for ever weaker blends). If the trained model saw the
degree, the degree its own sampled analyses state would follow the image's true degree. This script builds the
default SynthEmo world (blends in every class), trains stage 1 with the demo's recipe, samples K responses per
SynthEmo-8 test image and prints, for each true degree, the share of responses stating each degree.

Measured answer (docs/demo.md): the rows are the same for every true degree, so per-image confidence cannot be
learnt from the reasoning in a CPU-sized run; the demo's world therefore puts most ambiguity in confusable classes.

Example: OMP_NUM_THREADS=1 python bench/blend_perception.py --out runs/bench/blend --n-train 1500 --epochs 2
"""

from __future__ import annotations

import argparse
import collections
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DEGREES = ("pure", "strong", "moderate", "weak")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench/blend_perception", help="work directory (default %(default)s)")
    p.add_argument("--n-train", type=int, default=1500, help="SynthEmo training images (default %(default)s)")
    p.add_argument("--n-test", type=int, default=300, help="SynthEmo test images (default %(default)s)")
    p.add_argument("--epochs", type=float, default=2.0, help="stage-1 epochs (default %(default)s, the demo's)")
    p.add_argument("--samples", type=int, default=4, help="responses per test image (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from emocaliber import synthemo
    from emocaliber.demo import MAX_NEW_TOKENS, REPO, run_script
    from emocaliber.modeling import build_tiny_model
    from emocaliber.parsing import parse_response

    out, seed = Path(args.out), str(args.seed)
    data, cot = out / "data", out / "cot"
    run_script("data_prep/make_synthemo.py", ["--out", data, "--n-train", args.n_train, "--n-test", args.n_test,
                                              "--n-ood", 0, "--seed", seed, "--no-progress"])
    run_script("data_prep/build_cot.py", ["--records", data / "train.jsonl", "--image-root", data, "--out", cot,
                                          "--teacher", "synthemo", "--seed", seed, "--overwrite"])
    build_tiny_model(out / "base", seed=args.seed)
    run_script("recipes/stage1_sft.py", [
        "--config", REPO / "recipes/tiny/stage1.yaml", "--model_name_or_path", out / "base",
        "--train_file", cot / "stage1.jsonl", "--image_root", data, "--output_dir", out / "stage1",
        "--num_train_epochs", args.epochs, "--seed", seed, "--resume_from_checkpoint", "none",
        "--save_strategy", "no"])
    run_script("eval/run_vecbench.py", [
        "--model", out / "stage1", "--data", data / "test.jsonl", "--image-root", data, "--tasks", "SynthEmo-8",
        "--out", out / "eval", "--backend", "transformers", "--temperature", 1.0, "--samples", args.samples,
        "--max-new-tokens", MAX_NEW_TOKENS, "--no-confidence", "--n-bootstrap", 10, "--no-progress",
        "--overwrite", "--seed", seed])

    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    with open(out / "eval" / "predictions.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            rec = row["record"]
            parsed = parse_response(row["response"] or "", rec["candidates"])
            stated = synthemo.analysis_degree((parsed.reasoning or {}).get("analysis", "")) or "unreadable"
            table[synthemo.mix_degree(rec["meta"]["mix"]["w"])][stated] += 1
    print(f"\nstage 1 after {args.epochs:g} epochs on {args.n_train} images; {args.samples} samples per test image")
    print("share of sampled analyses stating each degree, by the image's true degree:")
    cols = (*DEGREES, "unreadable")
    print(f"{'true degree':>12} {'n':>5} " + " ".join(f"{c:>10}" for c in cols))
    for degree in DEGREES:
        counts = table[degree]
        n = sum(counts.values()) or 1
        print(f"{degree:>12} {sum(counts.values()):5d} " + " ".join(f"{counts[c] / n:10.2f}" for c in cols))


if __name__ == "__main__":
    main()

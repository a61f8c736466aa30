#!/usr/bin/env python
"""Build VECBench (records + image root + summary) from the six raw datasets you downloaded.

Any subset of the datasets may be given. Output in --out: train.jsonl, test.jsonl, summary.md, summary.json,
image_roots.json and images/<dataset folder>/<original relative path> (see --link-mode). Bad items are counted
by reason in the summary and skipped; --strict turns any of them into exit status 1.

Example:
  python data_prep/build_vecbench.py --fi raw/FI --emoset raw/EmoSet-118K --webemo raw/WEBEmo \\
      --abstract raw/testImages_abstract --artphoto raw/testImages_artphoto --unbiasedemo raw/UnBiasedEmo \\
      --out data/vecbench
"""

from __future__ import annotations

import argparse
import logging
import sys

from emocaliber.sources import open_sources
from emocaliber.sources.unbiasedemo import ZipSafetyError
from emocaliber.vecbench import LINK_MODES, BuildConfig, build_vecbench


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())

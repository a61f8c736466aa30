#!/usr/bin/env python
"""Import the released VECBench test file and VEC-CoT stage files as records, or export records to other formats.

  import: test_8k.jsonl -> <out>/test.jsonl; each VEC-CoT file -> <out>/<same name> (split "train"), reasoning
          and confidence parsed from the assistant text. Bad lines are counted (file:line) in
          <out>/import_summary.json and skipped; --strict exits 1 if there were any.
  export: records -> released test format, verl parquet (stage 3), ms-swift messages+images, or
          Qwen-style conversations. (TRL rows hold PIL images and are built in memory by the recipes:
          emocaliber.formats.to_trl_prompt_completion / to_trl_messages.)

Released image paths look like images/<dataset folder>/<original path>; records keep the part after
--image-prefix, so the image root is <release>/images.

The released files: VECBench/ is the Hugging Face dataset wudq/VECBench (images/ and VEC-CoT/), EmoCaliber/ the
GitHub repository wdqqdw/EmoCaliber (input_data/test_8k.jsonl). An imported record keeps the file's question and
assistant text, and training uses them verbatim (docs/training.md, "The released VEC-CoT files").

Examples:
  python data_prep/import_released.py import --test EmoCaliber/input_data/test_8k.jsonl \\
      --cot VECBench/VEC-CoT/stage1_86k.jsonl --cot VECBench/VEC-CoT/stage2_43k_w_conf.jsonl \\
      --cot VECBench/VEC-CoT/stage3_14k.jsonl --out data/released
  python data_prep/import_released.py export --records data/released/stage3_14k.jsonl --to verl \\
      --image-root VECBench/images --out data/verl/train.parquet
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from emocaliber.formats import (
    DATA_SOURCE,
    EXPORT_FORMATS,
    IMAGE_PREFIX,
    export_records,
    import_released_files,
    iter_record_file,
)
from emocaliber.records import RecordError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="released files -> records")
    imp.add_argument("--test", help="released test file (input_data/test_8k.jsonl)")
    imp.add_argument("--cot", action="append", default=[], help="a VEC-CoT stage file (repeatable)")
    imp.add_argument("--out", required=True, help="output folder for the records files")
    imp.add_argument("--image-prefix", default=IMAGE_PREFIX, help=f"prefix stripped from image paths "
                                                                   f"(default {IMAGE_PREFIX!r})")
    imp.add_argument("--strict", action="store_true", help="exit 1 if any line was skipped")
    exp = sub.add_parser("export", help="records -> another format")
    exp.add_argument("--records", required=True, help="records JSONL file")
    exp.add_argument("--to", required=True, choices=EXPORT_FORMATS, help="target format")
    exp.add_argument("--out", required=True, help="output file (.jsonl, or .parquet for verl)")
    exp.add_argument("--image-root", help="image root of the records (needed for verl: image bytes are embedded)")
    exp.add_argument("--no-confidence", action="store_true", help="stage-1 prompts/targets without <confidence>")
    exp.add_argument("--image-prefix", default=IMAGE_PREFIX, help="prefix put before image paths (released/CoT)")
    exp.add_argument("--data-source", default=DATA_SOURCE, help=f"verl data_source (default {DATA_SOURCE!r})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "export":
        # An export is a training or test file: a bad record stops it (naming file and line) rather than leaving
        # a file that silently lacks rows.
        try:
            n = export_records(iter_record_file(args.records), args.to, args.out, image_root=args.image_root,
                               with_confidence=not args.no_confidence, image_prefix=args.image_prefix,
                               data_source=args.data_source)
        except (RecordError, FileNotFoundError, ValueError) as e:  # FormatError is a ValueError
            print(f"import_released.py: error: {e}; nothing was written to {args.out}", file=sys.stderr)
            return 1
        print(f"wrote {n} rows to {args.out}")
        return 0
    if not args.test and not args.cot:
        print("error: give --test and/or --cot", file=sys.stderr)
        return 2
    written, skips = import_released_files(args.out, test=args.test, cot=args.cot, image_prefix=args.image_prefix)
    summary = {"written": written, "skipped": skips.to_dict()}
    Path(args.out, "import_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(", ".join(f"{name}: {n} records" for name, n in written.items()) + f"; {skips.total()} lines skipped")
    return 1 if args.strict and skips.total() else 0


if __name__ == "__main__":
    sys.exit(main())

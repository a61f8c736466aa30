#!/usr/bin/env python
"""Build the structured chain-of-thought corpus (VEC-CoT style) from training records.

A teacher writes the five-part reasoning (<element>, <human>, <context>, <interaction>, <analysis>) and an
answer for each record, shown the image and the candidates (and the gold label with --show-gold), with
--samples tries per record. A try is kept when it parses (strict rules) with all five parts and its answer is
the gold label. Kept records are split by image into three pools (default 60/30/10 of each task, seeded; an
image shared by two tasks goes to one pool), written to --out:

  stage1.jsonl       records with reasoning: the stage-1 SFT corpus
  stage2_pool.jsonl  records with reasoning: input of build_confidence_targets.py (stage 2)
  stage3.jsonl       records without reasoning: the stage-3 GRPO prompts
  summary.json/.md   kept and dropped counts by reason and per task
  teacher_samples.jsonl  every raw teacher response; a killed run resumes from it (same command again)

--teacher is a local checkpoint directory or hub id (generated through emocaliber.generation: vLLM on a GPU,
transformers elsewhere), or 'synthemo' for SynthEmo's rule-based teacher (no model needed).

Example: python data_prep/build_cot.py --records data/synthemo/train.jsonl --image-root data/synthemo \\
             --out data/synthemo/cot --teacher synthemo --samples 4
"""

from __future__ import annotations

import argparse
import sys

from emocaliber.corpora import (
    BackendResponder,
    CorpusError,
    SynthEmoTeacher,
    build_cot,
    read_input_records,
    sampling_from_args,
)
from emocaliber.generation import add_backend_arguments, backend_from_args
from emocaliber.modeling import ModelNotFoundError
from emocaliber.records import RecordError


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three fractions like 0.6,0.3,0.1, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", required=True, help="training records (JSONL)")
    p.add_argument("--image-root", required=True, help="directory the records' image paths are relative to")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--teacher", default="synthemo", help="checkpoint path, hub id, or 'synthemo' (default)")
    p.add_argument("--show-gold", action="store_true", help="tell the teacher the gold label")
    p.add_argument("--constrained", action="store_true",
                   help="model teacher: force the output format with a regex (needs xgrammar without vLLM)")
    p.add_argument("--samples", type=int, default=1, help="tries per record (default 1)")
    p.add_argument("--pools", type=_fractions, default=(0.6, 0.3, 0.1),
                   help="stage-1,stage-2,stage-3 fractions of each task's kept records (default 0.6,0.3,0.1)")
    p.add_argument("--seed", type=int, default=0, help="seeds sampling and the pool split (default 0)")
    p.add_argument("--temperature", type=float, default=0.7,
                   help="model teacher: sampling temperature (0 = greedy; default 0.7)")
    p.add_argument("--top-p", type=float, default=1.0, help="model teacher: nucleus sampling (default 1.0)")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="model teacher: response length (default 1024)")
    p.add_argument("--chunk-size", type=int, default=64, help="records per resumable chunk (default 64)")
    p.add_argument("--overwrite", action="store_true", help="discard teacher_samples.jsonl and start again")
    p.add_argument("--strict", action="store_true", help="stop at the first bad input line, do not skip it")
    add_backend_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.teacher == "synthemo":  # it draws each answer from the image's label distribution, and samples nothing
        ignored = [f"--{name.replace('_', '-')}" for name in ("temperature", "top_p", "max_new_tokens", "constrained")
                   if getattr(args, name) != parser.get_default(name)]
        if ignored:
            parser.error(f"{', '.join(ignored)} set the sampling of a model teacher; the synthemo teacher draws "
                         "each answer from the image's label distribution, so leave them out")
    try:
        records, n_skipped = read_input_records(args.records, strict=args.strict)
        settings = sampling_from_args(args)
        if args.teacher == "synthemo":
            responder = SynthEmoTeacher(samples=args.samples, show_gold=args.show_gold)
        else:
            backend = backend_from_args(args.teacher, args, progress=False)
            responder = BackendResponder(backend, args.image_root, settings, teacher=True,
                                         show_gold=args.show_gold, constrained=args.constrained)
        config = {"teacher": args.teacher, "show_gold": args.show_gold, "samples": args.samples,
                  "constrained": args.constrained,
                  "temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens}
        summary = build_cot(records, responder, args.out, pools=args.pools, seed=args.seed,
                            chunk_size=args.chunk_size, config=config, overwrite=args.overwrite,
                            skipped_lines=n_skipped)
    except (CorpusError, RecordError, ModelNotFoundError, FileNotFoundError, ValueError) as e:
        print(f"build_cot: error: {e}", file=sys.stderr)
        return 1
    total = summary["total"]
    print(f"kept {total['kept']} of {total['records']} records; stage1 {total['stage1']}, "
          f"stage2_pool {total['stage2_pool']}, stage3 {total['stage3']}; dropped {summary['dropped']}; "
          f"see {args.out}/summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

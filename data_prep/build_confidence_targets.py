#!/usr/bin/env python
"""Give each stage-2 record a confidence target by sampling the stage-1 (scaffold) model K times per image.

Definitions (--target):
  agreement  (default) fraction of the answered samples that give the model's majority answer: how often the
             model says the answer it will state, an estimate of that answer's chance of being right. Samples
             without an answer (out of format) say nothing about that answer and are left out.
  accuracy   fraction of the K samples whose answer is the gold label. For an ambiguous image this sits below
             the chance that the model's own (greedy) answer is right, so targets come out low.
  local_accuracy
             fraction of right answers (the greedy answer with --responses own, else the samples' majority
             answer) among the --neighbours records of the same task whose
             samples' reasoning reads most alike (TF-IDF, cosine), the record included. The gold labels
             calibrate it, so it sees ambiguity that the model answers consistently and agreement misses
             (emocaliber/local_accuracy.py).
Agreement and accuracy are (k + a) / (n + a + b), n the answered samples (K under accuracy), with the Beta
prior --prior a,b (default 0,0: none; 1,1 is Laplace). Every target is clipped into --clip (default
0.05,0.95) and rounded half-up to two decimals. The records' answers and reasoning stay as they are (gold
label, teacher reasoning) unless --responses own: then they are the stage-1 model's greedy response (its own
answer in the record's `answer` field; the gold label stays), so stage 2 learns a confidence for what the model
writes rather than the teacher's text (the demo; docs/demo.md). --mismatch drop leaves out records whose
majority answer is not the gold label (under agreement). Records whose image fails, (except under accuracy)
whose K samples name no candidate, or (with --responses own) whose greedy response is out of format are dropped
and counted.

Raw samples go to --samples-file (default <out stem>.samples.jsonl) as they are produced; run the same command
again after an interruption to continue; the targets file is derived from it and ends byte-identical.
<out stem>.summary.json holds counts, the target histogram and, for SynthEmo records, how close each
definition comes to meta.oracle_confidence.

Example: python data_prep/build_confidence_targets.py --model runs/stage1 --data data/cot/stage2_pool.jsonl \\
             --image-root data/synthemo --samples 8 --out data/cot/stage2.jsonl
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from emocaliber.argtypes import float_pair, whole_number
from emocaliber.corpora import (
    DEFINITIONS,
    MISMATCH_POLICIES,
    BackendResponder,
    CorpusError,
    build_confidence_targets,
    read_input_records,
    sampling_from_args,
)
from emocaliber.generation import add_backend_arguments, backend_from_args
from emocaliber.modeling import ModelNotFoundError
from emocaliber.records import RecordError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="stage-1 checkpoint (path or hub id)")
    p.add_argument("--data", required=True, help="stage-2 pool records, e.g. build_cot's stage2_pool.jsonl")
    p.add_argument("--image-root", required=True, help="directory the records' image paths are relative to")
    p.add_argument("--out", required=True, help="output records file (JSONL) with confidence targets")
    p.add_argument("--samples", type=int, default=8, help="K, samples per image (default 8)")
    p.add_argument("--target", choices=DEFINITIONS, default="agreement", help="target definition (see above)")
    p.add_argument("--mismatch", choices=MISMATCH_POLICIES, default="keep",
                   help="agreement: keep or drop records whose majority answer is not the gold label")
    p.add_argument("--responses", choices=("teacher", "own"), default="teacher",
                   help="answer and reasoning of the written records: the input's (teacher) or the model's greedy "
                        "response (own; written to <out stem>.own.jsonl first)")
    p.add_argument("--prior", "--smoothing", type=float_pair("1,1"), default=(0.0, 0.0), metavar="A,B",
                   help="Beta prior pseudo-counts (default 0,0 = none)")
    p.add_argument("--clip", type=float_pair("0.05,0.95"), default=(0.05, 0.95), metavar="LO,HI", help="default 0.05,0.95")
    p.add_argument("--neighbours", type=whole_number(1), default=25, metavar="N",
                   help="local_accuracy: records per neighbourhood (default 25)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-size", type=int, default=64, help="records per resumable chunk (default 64)")
    p.add_argument("--samples-file", default=None, help="raw samples (default <out stem>.samples.jsonl)")
    p.add_argument("--overwrite", action="store_true", help="discard existing samples and start again")
    p.add_argument("--strict", action="store_true", help="stop at the first bad input line, do not skip it")
    add_backend_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        records, n_skipped = read_input_records(args.data, strict=args.strict)
        settings = sampling_from_args(args)
        backend = backend_from_args(args.model, args, progress=False)
        responder = BackendResponder(backend, args.image_root, settings)
        own = (BackendResponder(backend, args.image_root, replace(settings, n=1, temperature=0.0))
               if args.responses == "own" else None)
        config = {"model": args.model, "samples": args.samples, "temperature": args.temperature,
                  "top_p": args.top_p, "max_new_tokens": args.max_new_tokens, "backend": args.backend,
                  "batch_size": args.batch_size}
        summary = build_confidence_targets(
            records, responder, args.out, definition=args.target, mismatch=args.mismatch, prior=args.prior,
            clip=args.clip, neighbours=args.neighbours, seed=args.seed, chunk_size=args.chunk_size,
            samples_path=args.samples_file, config=config, overwrite=args.overwrite, skipped_lines=n_skipped,
            own_responder=own)
    except (CorpusError, RecordError, ModelNotFoundError, FileNotFoundError, ValueError) as e:
        print(f"build_confidence_targets: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {summary['written']} of {summary['records']} records to {args.out} "
          f"(mean target {summary['mean_target']}); dropped {summary['dropped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

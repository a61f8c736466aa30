"""EmoNet-Face Binary -> yes/no verification training records ("Does the face in this image show X?").

Labels from the votes of one (image, emotion) pair (``binary.csv``; the release's own rule is that a positive
label needs three positive votes, and single-rater False judgements come from contrastive batches):

* **hard yes**: three or more votes, all True. Target: ``yes`` with confidence ``hard_confidence`` (0.95).
* **hard no**: every vote False (mostly the single-rater contrastive negatives). Target: ``no``, 0.95.
* **soft**: everything else (split votes such as 2 of 3 or 1 of 2, and one or two unconfirmed True votes).
  P(yes) is the rule-of-succession estimate (k + 1) / (n + 2), which never turns one vote into certainty:
  1/1 -> 0.67, 1 of 2 -> 0.5, 2 of 3 -> 0.6. The target answer is the likelier side (``yes`` on a tie) and
  its confidence that side's probability, clipped to [0.05, 0.95].

Records use the project's one record shape with task ``EmoNet-Verify`` (candidates ``yes``/``no``, the
emotion and its descriptors in ``meta``), so build_cot, build_confidence_targets, the SFT and GRPO recipes and
the evaluation read them unchanged. Stage 1 and stage 3 use the hard items (``--soft none``); stage 2 uses the
soft targets as its confidence targets. Images are ``<image-dir>/<id><ext>`` relative to the image root.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from emocaliber.emonet.data import BadRows, BinaryItem, EmoNetDataError, load_binary
from emocaliber.emonet.taxonomy import BY_NAME
from emocaliber.records import Record, write_records
from emocaliber.tasks import YES_NO

VERIFY_TASK = "EmoNet-Verify"

HARD_CONFIDENCE = 0.95
CLIP = (0.05, 0.95)


def label_item(item: BinaryItem, min_hard_votes: int = 3) -> tuple[str, float]:
    """``(kind, p_yes)`` with kind ``hard_yes``, ``hard_no`` or ``soft`` (see the module docstring)."""
    n, k = item.n_votes, item.n_true
    if k == 0:
        return "hard_no", 0.0
    if k == n and n >= min_hard_votes:
        return "hard_yes", 1.0
    return "soft", (k + 1) / (n + 2)


def _split(image: str, seed: int, test_fraction: float) -> str:
    h = int.from_bytes(hashlib.blake2b(f"{seed}\0{image}".encode(), digest_size=8).digest(), "big")
    return "test" if h / 2**64 < test_fraction else "train"


def item_record(item: BinaryItem, *, image_dir: str = "images", ext: str = ".jpg", seed: int = 0,
                test_fraction: float = 0.0, hard_confidence: float = HARD_CONFIDENCE) -> Record:
    """The verification record of one (image, emotion) pair. The split is drawn per image (both emotions of
    an image land on the same side)."""
    kind, p_yes = label_item(item)
    answer = "yes" if p_yes >= 0.5 else "no"
    if kind == "soft":
        confidence = min(max(p_yes if answer == "yes" else 1 - p_yes, CLIP[0]), CLIP[1])
    else:
        confidence = hard_confidence
    emotion = BY_NAME[item.emotion]
    return Record(
        id=f"emonet-binary-{item.image}-{emotion.snake}", task=VERIFY_TASK,
        image=f"{image_dir}/{item.image}{ext}" if image_dir else f"{item.image}{ext}",
        candidates=list(YES_NO), ground_truth=answer, split=_split(item.image, seed, test_fraction),
        source="EmoNet-Face Binary", confidence=round(confidence, 4),
        meta={"emotion": emotion.name, "descriptors": list(emotion.descriptors), "label_kind": kind,
              "p_yes": round(p_yes, 4), "votes": item.n_votes, "true_votes": item.n_true,
              "annotators": list(item.annotators)})


def build_verification_records(items: Sequence[BinaryItem], *, soft: str = "keep", **kwargs) -> list[Record]:
    """Records for ``items``; ``soft="none"`` keeps only the hard labels (stages 1 and 3)."""
    if soft not in ("keep", "none"):
        raise ValueError(f"soft must be 'keep' or 'none', got {soft!r}")
    out = []
    for item in items:
        if soft == "none" and label_item(item)[0] == "soft":
            continue
        out.append(item_record(item, **kwargs))
    return out


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", required=True, help="the release's data/binary.csv")
    p.add_argument("--out", required=True, help="records file to write (JSON Lines)")
    p.add_argument("--soft", choices=("keep", "none"), default="keep",
                   help="keep split-vote items with soft confidence targets, or write hard labels only")
    p.add_argument("--image-dir", default="images", help="folder of the images under the image root")
    p.add_argument("--ext", default=".jpg", help="image file extension appended to the 5-digit id")
    p.add_argument("--test-fraction", type=float, default=0.0, help="images held out as split 'test'")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    bad = BadRows()
    try:
        items = load_binary(args.binary, bad)
    except (OSError, EmoNetDataError) as e:
        print(f"{prog or 'emonet-corpus'}: error: {e}", file=sys.stderr)
        return 1
    records = build_verification_records(items, soft=args.soft, image_dir=args.image_dir, ext=args.ext,
                                         seed=args.seed, test_fraction=args.test_fraction)
    write_records(args.out, records)
    kinds = Counter(r.meta["label_kind"] for r in records)
    summary = {"items": len(items), "records": len(records), "by_kind": dict(sorted(kinds.items())),
               "bad_rows": bad.to_dict()}
    Path(args.out).with_suffix(".summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary))
    return 0

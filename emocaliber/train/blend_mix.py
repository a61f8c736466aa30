"""Stage 3 with blended images: mix blend prompts into the clean ones and add Rank-O-ToM's ranking reward.

Blends come from ``emocaliber prepare blends`` (records whose images sit next to their file). The clean training
set keeps every record; blends are added so that they make up ``blend_share`` of the prompts (fewer if the file
has fewer, with a warning). Every row gets a ``blend`` column (the record's ``meta["blend"]``, None on clean
rows), which TRL hands to the reward functions: the project's rewards then treat naming either source as
correct with the named source's share as the calibration target, and :class:`~emocaliber.rewards.BlendRankReward`
compares a blend's stated confidence with its sources'.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from emocaliber.blends import blend_info
from emocaliber.rewards import BlendRankReward, load_confidence_table

logger = logging.getLogger(__name__)

BLEND_COLUMN = "blend"


def blend_count(n_clean: int, share: float, available: int) -> int:
    """How many blends make ``share`` of the prompts next to ``n_clean`` clean ones (at most ``available``)."""
    wanted = round(share * n_clean / (1.0 - share)) if share > 0 else 0
    if wanted > available:
        logger.warning("blend_share %.2f asks for %d blends next to %d clean prompts; the blend file has %d",
                       share, wanted, n_clean, available)
    return min(wanted, available)


def mix_blends(train_ds: Any, blend_file: str, share: float, *, seed: int, with_confidence: bool,
               system_prompt: str | None, skip_bad: bool = False) -> Any:
    """``train_ds`` plus blend prompts from ``blend_file`` (images resolved next to it), with the blend column."""
    from datasets import concatenate_datasets

    from emocaliber.train.data import DataError, LoadedSplit, load_split, records_to_dataset

    split = load_split(blend_file, image_root=Path(blend_file).parent, field_name="blend_file", skip_bad=skip_bad)
    pairs = [(r, p) for r, p in zip(split.records, split.image_paths, strict=True) if blend_info(r)]
    if not pairs:
        raise DataError(f"blend_file {blend_file}: no record carries meta.blend (make them with "
                        "`emocaliber prepare blends`)")
    chosen = random.Random(seed).sample(pairs, blend_count(len(train_ds), share, len(pairs)))
    if not chosen:
        return train_ds
    picked = LoadedSplit(split.path, split.image_root, [r for r, _ in chosen], [p for _, p in chosen])
    blend_ds = records_to_dataset(picked, with_confidence=with_confidence, system_prompt=system_prompt,
                                  completion=False)
    blend_ds = blend_ds.add_column(BLEND_COLUMN, [blend_info(r) for r, _ in chosen])
    clean = train_ds.add_column(BLEND_COLUMN, [None] * len(train_ds), feature=blend_ds.features[BLEND_COLUMN])
    logger.info("stage 3 mixes %d blend prompts into %d clean ones (%.0f%%)", len(chosen), len(train_ds),
                100 * len(chosen) / (len(chosen) + len(train_ds)))
    return concatenate_datasets([clean, blend_ds])


def rank_reward(weight: float, delta: float, table_file: str | None) -> BlendRankReward:
    """The ranking reward, its table started from the starting checkpoint's predictions when given."""
    table = load_confidence_table(table_file) if table_file else {}
    if not table:
        logger.warning("blend_rank_table is empty: a blend's sources are compared only once they have been "
                       "rolled out (until then it scores 0 and counts as missing)")
    return BlendRankReward(weight=weight, delta=delta, table=table)

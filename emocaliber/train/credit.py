"""Confidence credit: the tokens of the stated confidence learn from the terms that score it alone.

Why: GRPO gives every token of a completion one advantage, its reward minus its group's mean. The confidence is
written after the answer and cannot change whether the answer is right, so for its tokens the correctness part of
that advantage is noise: zero on average given the text before them, with variance p(1 - p), several times the
calibration signal under the default weights. On SynthEmo that noise made the confidence of ambiguous images drift
upward and the ranking degrade (docs/demo.md). With ``confidence_credit: calibration`` the tokens of the confidence
value get the advantage of the terms that score the confidence (the calibration term, and the ranking reward when
stage 3 trains on blends), each centred over the completions it scored (a broken format gets the rule's worst
score; centring over it would reward whatever confidence the well-formed completions state, which sharpens the
confidence toward its mode); every other token keeps the full one, or none under ``confidence_only`` (emocaliber.train.grpo.CREDITS). TRL's loss accepts per-token advantages of shape (B, T).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

OPEN, CLOSE = "<confidence>", "</confidence>"
#: Reward terms (by name prefix) that score the stated confidence alone: the calibration rule and Rank-O-ToM's
#: ranking reward. The confidence tokens learn from these.
CONFIDENCE_TERMS = ("calibration_reward", "blend_rank_reward")


def value_span_mask(pieces: Sequence[str]) -> list[bool]:
    """Which tokens (given as their decoded text) overlap the value inside the last ``<confidence>...</confidence>``
    (up to the end if the tag is not closed). No opening tag: no token."""
    text = "".join(pieces)
    start = text.rfind(OPEN)
    if start < 0:
        return [False] * len(pieces)
    start += len(OPEN)
    end = text.find(CLOSE, start)
    end = len(text) if end < 0 else end
    mask, pos = [], 0
    for piece in pieces:
        lo, hi = pos, pos + len(piece)
        mask.append(hi > start and lo < end and hi > lo)
        pos = hi
    return mask


def group_centred(values: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each value minus the mean of its group (``group_size`` consecutive values, as TRL lays out completions);
    NaN counts as missing in the mean and becomes 0 in the output."""
    grouped = values.view(-1, group_size)
    centred = grouped - torch.nanmean(grouped, dim=1, keepdim=True)
    return torch.nan_to_num(centred, nan=0.0).view(-1)


def token_advantages(full: torch.Tensor, calibration: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token advantages (B, T): ``calibration`` on masked tokens, ``full`` elsewhere."""
    return torch.where(mask.bool(), calibration.unsqueeze(1), full.unsqueeze(1))

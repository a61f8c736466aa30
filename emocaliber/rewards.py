"""Stage-3 rewards: plain functions with TRL ``GRPOTrainer``'s reward signature, plus their incentive analysis.

Every reward is called as ``f(prompts=..., completions=..., completion_ids=..., **dataset_columns)`` and returns
one finite float per completion; it never raises on model output. ``completions`` are strings or chat messages
(``[{"role": "assistant", "content": str | [{"type": "text", "text": ...}, ...]}]``); the dataset columns
``ground_truth`` and ``candidates`` arrive as per-completion lists.

* :func:`release_reward` is the release's ``cus_reward.py`` reproduced exactly (its own format gate and
  single-word correctness rule), kept for comparison with the paper.
* The project's rewards judge a completion with :func:`emocaliber.parsing.parse_response` in strict mode and
  the ``candidates`` column, so training optimises what evaluation measures. They are
  ``format_weight * F + accuracy_weight * A + calibration_weight * S(c, i)`` with F = 1 for a valid format,
  A = 1 for a valid and correct answer, S a bounded proper scoring rule; a broken format scores the rule's worst
  value, so it is always ``format_weight`` below the worst valid answer. Each term is also a function of its own
  (``format_reward``, ``accuracy_reward``, ``calibration_reward_<rule>``) so that TRL, which logs rewards by
  ``__name__``, shows them separately when they are passed with ``GRPOConfig.reward_weights``.

The default is the bounded log rule (``calibrated_log``). The static analysis in ``docs/rewards.md``
(``bench/reward_analysis.py``) favours ``spherical``, but GRPO on SynthEmo (``bench/grpo_reward_curve.py``)
shows its weak point: at weight 1 a spherical (or Brier) score makes an answer stated at c = 0 earn exactly 1
whether right or wrong, so correctness stops paying and the policy collapsed to "0.00" for every image. The
log rule at weight 0.25 keeps correctness worth at least 0.75 at every confidence.
"""

from __future__ import annotations

import math
import string
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from emocaliber.blends import blend_target
from emocaliber.parsing import normalize_answer, parse_response, release_format

RewardFunc = Callable[..., list[float]]

EMOCALIBER_FORMAT_FAILURE = -5.0
#: The log rule is the log score on [LOG_EPS, 1 - LOG_EPS], continued quadratically outside (see ``rule_score``).
LOG_EPS = 0.05
RULES = ("log", "brier", "spherical")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_LOW_CONFIDENCE = 0.1


# --- inputs ---------------------------------------------------------------------------------------------------


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        texts = [p if isinstance(p, str) else p.get("text") for p in content if isinstance(p, (str, dict))]
        return "".join(t for t in texts if isinstance(t, str))
    return None


def completion_text(completion: Any) -> str | None:
    """The text of one completion: a string, one message, or a list of messages (assistant turns joined)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (bytes, bytearray)):
        return bytes(completion).decode("utf-8", errors="replace")
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, dict)]
        own = [m for m in messages if m.get("role") in ("assistant", None)] or messages
        texts = [_content_text(m.get("content")) for m in own]
        return "".join(t for t in texts if t is not None) if any(t is not None for t in texts) else None
    return None


def _as_list(completions: Any) -> list[Any]:
    if completions is None:
        return []
    if isinstance(completions, (str, bytes, dict)):
        return [completions]
    try:
        return list(completions)
    except TypeError:
        return [completions]


def _rows(values: Any, n: int, column: str, *, shared_list: bool = False) -> list[Any]:
    """One value per completion. A flat list of strings is one candidate list shared by all completions."""
    if values is None:
        return [None] * n
    if isinstance(values, str):
        return [values] * n
    try:
        values = list(values)
    except TypeError:
        return [None] * n
    if shared_list and values and all(isinstance(v, str) for v in values):
        return [values] * n
    if len(values) != n:
        warnings.warn(f"reward column {column!r} has {len(values)} rows for {n} completions; missing rows "
                      "score as wrong answers", RuntimeWarning, stacklevel=3)
        values = (values + [None] * n)[:n]
    return values


def _warn_missing(column: str, rows: list[Any]) -> None:
    if any(not isinstance(v, str) for v in rows):
        warnings.warn(f"reward column {column!r} is missing or not text for some completions; they score as "
                      "wrong answers (pass the dataset's ground_truth column)", RuntimeWarning, stacklevel=3)


def _finite(values: np.ndarray, fallback: float) -> list[float]:
    return np.nan_to_num(np.asarray(values, dtype=float), nan=fallback, posinf=fallback, neginf=fallback).tolist()


def _monitor(log_metric: Any, valid: np.ndarray, correct: np.ndarray, conf: np.ndarray) -> None:
    """Scalars to watch during RL (format rate, sandbag rate, confidence spread): the escape routes of
    docs/rewards.md, "Incentive analysis"."""
    if not callable(log_metric) or valid.size == 0:
        return
    metrics = {"calibration/format_rate": float(valid.mean())}
    if valid.any():
        c, i = conf[valid], correct[valid]
        low = c < _LOW_CONFIDENCE
        metrics |= {"calibration/confidence_mean": float(c.mean()), "calibration/confidence_std": float(c.std()),
                    "calibration/accuracy_valid": float(i.mean()), "calibration/low_confidence_rate": float(low.mean())}
    try:
        for name, value in metrics.items():
            log_metric(name, value)
    except Exception as exc:  # noqa: BLE001 -- logging must never cost a training step
        warnings.warn(f"log_metric failed: {exc!r}", RuntimeWarning, stacklevel=2)


# --- the released reward ---------------------------------------------------------------------------------------


def _release_score(text: str | None, ground_truth: Any) -> tuple[float, bool, int, float]:
    """``(score, valid, correct, c)`` exactly as ``compute_score`` in the release's ``cus_reward.py``."""
    if text is None:
        return EMOCALIBER_FORMAT_FAILURE, False, 0, math.nan
    valid, answer, c, _ = release_format(text)
    if not valid or answer is None or c is None:
        return EMOCALIBER_FORMAT_FAILURE, False, 0, math.nan
    words = answer.strip().translate(_PUNCTUATION).lower().split()
    i = int(isinstance(ground_truth, str) and len(words) == 1 and words[0] == ground_truth.lower())
    return 1.0 + 2.0 * (i * math.log(c) + (1 - i) * math.log(1.0 - c)) + i, True, i, c


def release_reward(completions: Any = None, ground_truth: Any = None, **kwargs: Any) -> list[float]:
    """The release's stage-3 reward: ``1 + i + 2 (i ln c + (1 - i) ln(1 - c))``, or -5 if the format is broken.

    Format gate: :func:`emocaliber.parsing.release_format` (0 < c < 1 strictly). Correctness: the first
    ``<answer>`` content, stripped, ASCII punctuation removed, lower-cased, must be exactly one word equal to
    ``ground_truth.lower()``. Candidates are not used.
    """
    items = _as_list(completions)
    truths = _rows(ground_truth, len(items), "ground_truth")
    _warn_missing("ground_truth", truths)
    scored = [_release_score(completion_text(x), gt) for x, gt in zip(items, truths)]
    if scored:
        _, valid, correct, conf = (np.array(col) for col in zip(*scored))
        _monitor(kwargs.get("log_metric"), valid.astype(bool), correct.astype(float), conf.astype(float))
    return _finite(np.array([s[0] for s in scored]), EMOCALIBER_FORMAT_FAILURE)


# --- the project's rewards -------------------------------------------------------------------------------------


def rule_score(rule: str, c: Any, i: Any, eps: float = LOG_EPS) -> np.ndarray:
    """A bounded, strictly proper binary scoring rule (reward form, maximum 0 at best) for confidence c in [0, 1].

    * ``"brier"``: ``-(c - i)^2``, in [-1, 0].
    * ``"spherical"``: ``q / sqrt(c^2 + (1 - c)^2) - 1`` with q = c if right else 1 - c, in [-1, 0].
    * ``"log"``: ``ln q`` for q in [eps, 1 - eps]; outside, the quadratic continuation that keeps the rule
      strictly proper, differentiable and bounded (its generating entropy has constant curvature there), so
      c = 0.99 is still better than 0.97 when p = 0.99 and a confident miss costs ``ln eps - (2 - eps) / (2 - 2 eps)``
      at most (-4.0 for eps = 0.05) instead of minus infinity.
    """
    c, i = np.asarray(c, dtype=float), np.asarray(i, dtype=float)
    if rule == "brier":
        return -((c - i) ** 2)
    q = np.where(i > 0.5, c, 1.0 - c)
    if rule == "spherical":
        return q / np.sqrt(c**2 + (1.0 - c) ** 2) - 1.0
    if rule == "log":
        b, kappa = 1.0 - eps, 1.0 / (eps * (1.0 - eps))
        middle = np.log(np.clip(q, eps, b))
        high = math.log(b) + kappa * (q - b) * (1.0 - (b + q) / 2.0)
        low = math.log(eps) - kappa * ((1.0 - q) ** 2 - b**2) / 2.0
        return np.where(q > b, high, np.where(q < eps, low, middle))
    raise KeyError(f"unknown scoring rule {rule!r}; use one of {RULES}")


def rule_worst(rule: str, eps: float = LOG_EPS) -> float:
    """The rule's minimum (a confident miss), which a broken format scores."""
    return float(rule_score(rule, 1.0, 0.0, eps))


def _candidate_row(candidates: Any) -> list[Any] | None:
    """A completion's candidate list, or None when there is none to use (missing, text, empty)."""
    if candidates is None or isinstance(candidates, (str, bytes)):
        return None
    try:
        return list(candidates) or None
    except TypeError:
        return None


def _judge(completions: Any, ground_truth: Any, candidates: Any, *, blend: Any = None,
           need_truth: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per completion: valid format, correct (and valid), confidence (NaN if invalid) and the calibration target,
    via the strict parser.

    With a ``candidates`` row the answer must name exactly the ground truth among them; without one, the
    normalized answer must equal the ground truth. On a blended image (a ``blend`` row, the record's
    ``meta["blend"]``) naming either source is correct and the target is that source's share
    (:func:`emocaliber.blends.blend_target`); elsewhere the target is the correctness itself.
    """
    items = _as_list(completions)
    n = len(items)
    truths = _rows(ground_truth, n, "ground_truth")
    if need_truth:
        _warn_missing("ground_truth", truths)
    cand_rows = _rows(candidates, n, "candidates", shared_list=True)
    blends = _rows(blend, n, "blend")
    valid, correct, conf = np.zeros(n, bool), np.zeros(n), np.full(n, np.nan)
    target = np.zeros(n)
    for k, (item, gt, cands, info) in enumerate(zip(items, truths, cand_rows, blends)):
        row = _candidate_row(cands)
        parsed = parse_response(completion_text(item), row or (), "strict")
        if not parsed.valid_format or parsed.confidence is None:
            continue
        valid[k], conf[k] = True, parsed.confidence
        if isinstance(info, dict) and info.get("labels"):
            correct[k], target[k] = blend_target(parsed.label or normalize_answer(parsed.answer_text or ""), info)
            continue
        if isinstance(gt, str):
            if row:
                correct[k] = parsed.label is not None and parsed.label.lower() == gt.strip().lower()
            else:
                correct[k] = normalize_answer(parsed.answer_text or "") == gt.strip().lower()
        target[k] = correct[k]
    return valid, correct, conf, target


def soft_rule_score(rule: str, c: Any, target: Any, eps: float = LOG_EPS) -> np.ndarray:
    """The rule's expected score when the outcome is 1 with probability ``target``: ``t S(c, 1) + (1 - t) S(c, 0)``.

    Strictly proper for a soft target too (best at c = t), and equal to :func:`rule_score` for t in {0, 1}.
    """
    t = np.asarray(target, dtype=float)
    return t * rule_score(rule, c, 1.0, eps) + (1.0 - t) * rule_score(rule, c, 0.0, eps)


def _gated_rule(rule: str, valid: np.ndarray, target: np.ndarray, conf: np.ndarray,
                eps: float = LOG_EPS) -> np.ndarray:
    return np.where(valid, soft_rule_score(rule, np.where(valid, conf, 0.5), target, eps), rule_worst(rule, eps))


class WeightedReward:
    """``format_weight * F + accuracy_weight * A + calibration_weight * S_rule(c, i)`` as one reward function.

    A picklable callable with a ``__name__`` (TRL names reward columns by it). With ``format_weight > 0`` a
    broken format is always worse than any valid answer; sandbagging is not rewarded when
    ``calibration_weight * max|S(c,0) - S(c,1)|`` at c = 0 does not exceed ``accuracy_weight``
    (see :func:`sandbag_region`).
    """

    def __init__(self, rule: str, format_weight: float = 1.0, accuracy_weight: float = 1.0,
                 calibration_weight: float = 1.0, name: str | None = None, eps: float = LOG_EPS) -> None:
        if rule not in RULES:
            raise KeyError(f"unknown scoring rule {rule!r}; use one of {RULES}")
        weights = (format_weight, accuracy_weight, calibration_weight)
        if not all(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in weights):
            raise ValueError(f"reward weights must be finite and >= 0, got {weights}")
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {eps}")
        self.rule, self.weights, self.eps = rule, tuple(float(w) for w in weights), float(eps)
        self.__name__ = name or f"weighted_{rule}_reward"

    def __repr__(self) -> str:
        return f"WeightedReward({self.rule!r}, weights={self.weights}, eps={self.eps}, name={self.__name__!r})"

    def __call__(self, completions: Any = None, ground_truth: Any = None, candidates: Any = None,
                 **kwargs: Any) -> list[float]:
        valid, correct, conf, target = _judge(completions, ground_truth, candidates, blend=kwargs.get("blend"))
        _monitor(kwargs.get("log_metric"), valid, correct, conf)
        wf, wa, wc = self.weights
        total = wf * valid + wa * correct + wc * _gated_rule(self.rule, valid, target, conf, self.eps)
        return _finite(total, self.failure_score)

    def valid_score(self, i: Any, c: Any) -> np.ndarray:
        """Reward of a valid response with correctness ``i`` and confidence ``c``."""
        wf, wa, wc = self.weights
        return wf + wa * np.asarray(i, dtype=float) + wc * rule_score(self.rule, c, i, self.eps)

    @property
    def failure_score(self) -> float:
        return self.weights[2] * rule_worst(self.rule, self.eps)

    def components(self) -> tuple[list[RewardFunc], list[float]]:
        """``(reward_funcs, reward_weights)`` for GRPOConfig that sum to this reward and log each term."""
        if self.rule == "log" and self.eps != LOG_EPS:
            raise ValueError(f"calibration_reward_log uses eps={LOG_EPS}; this reward uses eps={self.eps}")
        return [format_reward, accuracy_reward, CALIBRATION_REWARDS[self.rule]], list(self.weights)


def format_reward(completions: Any = None, **kwargs: Any) -> list[float]:
    """1 if the strict parser finds the full format (five parts, answer, valid confidence), else 0."""
    valid, _, _, _ = _judge(completions, None, kwargs.get("candidates"), need_truth=False)
    return _finite(valid.astype(float), 0.0)


def accuracy_reward(completions: Any = None, ground_truth: Any = None, candidates: Any = None,
                    **kwargs: Any) -> list[float]:
    """1 if the format is valid and the answer names the ground truth, else 0."""
    _, correct, _, _ = _judge(completions, ground_truth, candidates, blend=kwargs.get("blend"))
    return _finite(correct, 0.0)


def _calibration(rule: str, completions: Any, ground_truth: Any, candidates: Any, blend: Any) -> list[float]:
    valid, _, conf, target = _judge(completions, ground_truth, candidates, blend=blend)
    return _finite(_gated_rule(rule, valid, target, conf), rule_worst(rule))


def calibration_reward_log(completions: Any = None, ground_truth: Any = None, candidates: Any = None,
                           **kwargs: Any) -> list[float]:
    """Bounded log score of the stated confidence (``rule_score("log")``); its minimum if the format is broken."""
    return _calibration("log", completions, ground_truth, candidates, kwargs.get("blend"))


def calibration_reward_brier(completions: Any = None, ground_truth: Any = None, candidates: Any = None,
                             **kwargs: Any) -> list[float]:
    """``-(c - i)^2``; -1 if the format is broken."""
    return _calibration("brier", completions, ground_truth, candidates, kwargs.get("blend"))


def calibration_reward_spherical(completions: Any = None, ground_truth: Any = None, candidates: Any = None,
                                 **kwargs: Any) -> list[float]:
    """Spherical score minus 1 (in [-1, 0]); -1 if the format is broken."""
    return _calibration("spherical", completions, ground_truth, candidates, kwargs.get("blend"))


CALIBRATION_REWARDS: dict[str, RewardFunc] = {
    "log": calibration_reward_log, "brier": calibration_reward_brier, "spherical": calibration_reward_spherical,
}

class BlendRankReward:
    """Rank-O-ToM's ranking term: a blend must state less confidence than each of its two sources.

    For a rollout on a blend stating c, with its sources' confidences c_a and c_b (no gradient flows through
    them: they are numbers read from other rollouts), the reward is
    ``-weight * [max(0, c - c_a + delta) + max(0, c - c_b + delta)]``; clean prompts score 0. ``delta`` is in
    probability units (the authors' 0.3 was a margin on logits).

    Where the sources' confidences come from: the mean confidence of their own rollouts in the same generation
    batch when they are there; otherwise ``table``, which maps a clean record id to a confidence. The table
    starts from the starting checkpoint's predictions on the clean images (``load_confidence_table``) and every
    batch refreshes it with the current policy's mean confidence on each clean image it rolled out, so it is
    never older than the last time an image was seen. A blend whose source is in neither place scores 0 and is
    counted in ``missing_sources``. A blend rollout without a valid confidence scores the term's worst value,
    ``-weight * 2 * (1 + delta)``, as a broken format does in the other rewards, so silence never pays.
    """

    def __init__(self, weight: float = 0.5, delta: float = 0.1, table: dict[str, float] | None = None,
                 name: str = "blend_rank_reward") -> None:
        if not (math.isfinite(weight) and weight >= 0 and math.isfinite(delta) and 0 <= delta < 1):
            raise ValueError(f"need weight >= 0 and 0 <= delta < 1, got weight={weight}, delta={delta}")
        self.weight, self.delta, self.__name__ = float(weight), float(delta), name
        self.table: dict[str, float] = dict(table or {})
        self.missing_sources = 0

    def __repr__(self) -> str:
        return f"BlendRankReward(weight={self.weight}, delta={self.delta}, table={len(self.table)} ids)"

    @property
    def failure_score(self) -> float:
        return -self.weight * 2.0 * (1.0 + self.delta)

    def __call__(self, completions: Any = None, candidates: Any = None, **kwargs: Any) -> list[float]:
        items = _as_list(completions)
        n = len(items)
        ids, blends = _rows(kwargs.get("id"), n, "id"), _rows(kwargs.get("blend"), n, "blend")
        cand_rows = _rows(candidates, n, "candidates", shared_list=True)
        conf = np.full(n, np.nan)
        for k, (item, cands) in enumerate(zip(items, cand_rows)):
            parsed = parse_response(completion_text(item), _candidate_row(cands) or (), "strict")
            if parsed.valid_format and parsed.confidence is not None:
                conf[k] = parsed.confidence
        clean: dict[str, list[float]] = {}
        for k in range(n):
            if not isinstance(blends[k], dict) and isinstance(ids[k], str) and not math.isnan(conf[k]):
                clean.setdefault(ids[k], []).append(float(conf[k]))
        batch = {i: float(np.mean(v)) for i, v in clean.items()}
        self.table.update(batch)
        out = np.zeros(n)
        for k, info in enumerate(blends):
            if not isinstance(info, dict) or not info.get("sources"):
                continue
            if math.isnan(conf[k]):
                out[k] = self.failure_score
                continue
            sources = [self.table.get(s) for s in info["sources"]]
            if any(c is None for c in sources):
                self.missing_sources += 1
                continue
            out[k] = -self.weight * sum(max(0.0, conf[k] - c + self.delta) for c in sources)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric("blend_rank/missing_sources", float(self.missing_sources))
            log_metric("blend_rank/table_size", float(len(self.table)))
        return _finite(out, self.failure_score)


def load_confidence_table(path: str) -> dict[str, float]:
    """Record id -> stated confidence, read with the strict parser from an evaluation's ``predictions.jsonl``
    (``emocaliber eval`` of the starting checkpoint on the clean images). Responses without a valid confidence
    are left out; several samples of one id are averaged."""
    from emocaliber.records import iter_jsonl

    values: dict[str, list[float]] = {}
    for _, row in iter_jsonl(path, errors=[]):
        record = row.get("record") if isinstance(row.get("record"), dict) else {}
        parsed = parse_response(row.get("response"), record.get("candidates") or (), "strict")
        if isinstance(record.get("id"), str) and parsed.valid_format and parsed.confidence is not None:
            values.setdefault(record["id"], []).append(float(parsed.confidence))
    return {i: float(np.mean(v)) for i, v in values.items()}


#: RLCR-style: correctness + (1 - (c - i)^2) for a valid answer, -1 for a broken format.
brier_reward = WeightedReward("brier", 1.0, 1.0, 1.0, name="brier_reward")
#: Correctness + spherical score, -1 for a broken format; valid answers score in [0, 2]. Most calibration
#: pressure at mid-range confidences, but indifferent to correctness at c = 0 (see the module docstring).
spherical_reward = WeightedReward("spherical", 1.0, 1.0, 1.0, name="spherical_reward")
#: The project's default. The bounded log rule at the largest weight that still does not reward sandbagging (0.25 * 3.997 < 1):
#: steeper than the others above c = 0.85, flatter in the middle. Valid answers score in [-0.006, 1.994].
calibrated_log_reward = WeightedReward("log", 1.0, 1.0, 0.25, name="calibrated_log_reward")

REWARDS: dict[str, RewardFunc] = {
    "release": release_reward,
    "calibrated_log": calibrated_log_reward,
    "brier": brier_reward,
    "spherical": spherical_reward,
    "format": format_reward,
    "accuracy": accuracy_reward,
    **{f"calibration_{rule}": func for rule, func in CALIBRATION_REWARDS.items()},
}
DEFAULT_REWARD = "calibrated_log"


def get_reward_funcs(names: Sequence[str] | str) -> list[RewardFunc]:
    """Reward functions by registry name (a list, or one comma-separated string as a config may give)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise KeyError(f"unknown reward(s) {unknown}; registered rewards: {', '.join(REWARDS)}")
    return [REWARDS[n] for n in names]


# --- incentive analysis ----------------------------------------------------------------------------------------


def _combined(reward: str | WeightedReward) -> str | WeightedReward:
    if isinstance(reward, WeightedReward) or reward == "release":
        return reward
    func = REWARDS.get(reward) if isinstance(reward, str) else None
    if not isinstance(func, WeightedReward):
        raise KeyError(f"{reward!r} is not a complete reward; use 'release' or a WeightedReward name "
                       f"({', '.join(k for k, v in REWARDS.items() if isinstance(v, WeightedReward))})")
    return func


def outcome_reward(reward: str | WeightedReward, i: Any, c: Any) -> np.ndarray:
    """Reward of a response with correctness ``i`` stating confidence ``c`` (the failure value where the reward's
    gate rejects ``c``: the release accepts only 0 < c < 1)."""
    reward = _combined(reward)
    i, c = np.asarray(i, dtype=float), np.asarray(c, dtype=float)
    if isinstance(reward, WeightedReward):
        ok = (c >= 0) & (c <= 1)
        return np.where(ok, reward.valid_score(i, np.clip(c, 0, 1)), reward.failure_score)
    ok = (c > 0) & (c < 1)
    safe = np.where(ok, c, 0.5)
    score = 1 + i + 2 * (i * np.log(safe) + (1 - i) * np.log(1 - safe))
    return np.where(ok, score, EMOCALIBER_FORMAT_FAILURE)


def failure_score(reward: str | WeightedReward) -> float:
    """What a broken format scores."""
    reward = _combined(reward)
    return reward.failure_score if isinstance(reward, WeightedReward) else EMOCALIBER_FORMAT_FAILURE


def expected_reward(reward: str | WeightedReward, p: Any, c: Any) -> np.ndarray:
    """Expected reward of stating ``c`` for an answer that is right with probability ``p`` (broadcasts)."""
    p = np.asarray(p, dtype=float)
    return p * outcome_reward(reward, 1.0, c) + (1 - p) * outcome_reward(reward, 0.0, c)


_C_GRID = np.linspace(0.0, 1.0, 2001)


def best_response(reward: str | WeightedReward, p: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(best confidence, its expected reward)`` for each ``p``, over a 5e-4 grid of confidences."""
    p = np.atleast_1d(np.asarray(p, dtype=float))
    table = expected_reward(reward, p[:, None], _C_GRID[None, :])
    k = table.argmax(axis=1)
    return _C_GRID[k], table[np.arange(p.size), k]


def sandbag_region(reward: str | WeightedReward, p: Any = None) -> float:
    """Largest p at which answering a label known to be wrong (p = 0, best confidence) beats an honest answer
    that is right with probability p (best confidence); 0 if sandbagging never pays."""
    p = np.linspace(0.0, 1.0, 1001) if p is None else np.asarray(p, dtype=float)
    _, honest = best_response(reward, p)
    _, (sandbag,) = best_response(reward, 0.0)
    worse = p[honest < sandbag - 1e-12]
    return float(worse.max()) if worse.size else 0.0


def format_break_threshold(reward: str | WeightedReward) -> float | None:
    """Smallest confidence at which a valid wrong answer scores below a broken format; ``None`` if none does."""
    c = np.linspace(0.0, 1.0, 100001)
    worse = c[outcome_reward(reward, 0.0, c) < failure_score(reward)]
    return float(worse.min()) if worse.size else None

"""Incentives of the stage-3 rewards: propriety, sandbagging, format-breaking and calibration pressure.

Prints Markdown tables (the numbers in docs/rewards.md) and draws docs/reward_incentives.png.
Every figure is an expected reward for a single answer that is right with probability p and states confidence
c, computed by emocaliber.rewards; nothing is simulated, so the output is deterministic.

    python bench/reward_analysis.py [--out docs/reward_incentives.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from emocaliber import rewards as R

MAIN = ["emocaliber", "brier", "spherical", "calibrated_log"]


def log_variant(eps: float, weight: float | None = None) -> R.WeightedReward:
    """The bounded log rule at ``weight``, by default the largest two-decimal weight that does not reward
    sandbagging: ``weight * (S(0, wrong) - S(0, right)) < accuracy weight``."""
    gap = float(R.rule_score("log", 0.0, 0.0, eps) - R.rule_score("log", 0.0, 1.0, eps))
    if weight is None:
        weight = np.floor(100 / gap) / 100
    return R.WeightedReward("log", 1.0, 1.0, weight, name=f"log eps={eps} w={weight:g}", eps=eps)


def variants() -> dict[str, str | R.WeightedReward]:
    out: dict[str, str | R.WeightedReward] = {name: name for name in MAIN}
    for eps in (0.01, 0.02, 0.1):
        v = log_variant(eps)
        out[v.__name__] = v
    for v in (log_variant(0.05, 1.0), R.WeightedReward("brier", 1.0, 1.0, 2.0, name="brier w=2")):
        out[v.__name__] = v
    return out


def regret(reward, p: float, c: float) -> float:
    """Expected reward lost by stating c instead of the best confidence when the answer is right w.p. p."""
    _, best = R.best_response(reward, p)
    return float(best[0] - R.expected_reward(reward, p, c))


def resolution_gain(reward, ps: np.ndarray) -> float:
    """Mean expected gain of stating each item's own p over one constant (the best constant for the mix)."""
    _, best = R.best_response(reward, ps)
    constant = max(float(R.expected_reward(reward, ps, c).mean()) for c in np.linspace(0, 1, 2001))
    return float(best.mean() - constant)


def incentive_table(rewards: dict) -> list[str]:
    rows = [("| reward | max \\|c*-p\\| | valid range | broken format | sandbagging pays for | "
             "format-breaking pays above c |"), "|---|---|---|---|---|---|"]
    p = np.linspace(0.01, 0.99, 99)
    for name, reward in rewards.items():
        c_best, _ = R.best_response(reward, p)
        grid = np.linspace(0, 1, 10001)
        values = np.concatenate([R.outcome_reward(reward, 0.0, grid), R.outcome_reward(reward, 1.0, grid)])
        values = values[values != R.failure_score(reward)] if name == "emocaliber" else values
        sandbag = R.sandbag_region(reward)
        brk = R.format_break_threshold(reward)
        rows.append(f"| {name} | {np.abs(c_best - p).max():.4f} | [{values.min():.3f}, {values.max():.3f}] | "
                    f"{R.failure_score(reward):.3f} | {f'p < {sandbag:.3f}' if sandbag else 'never'} | "
                    f"{f'{brk:.4f}' if brk is not None else 'never'} |")
    return rows


def pressure_table(rewards: dict) -> list[str]:
    cases = [(.5, .6), (.75, .65), (.75, .85), (.75, .95), (.9, .99), (.9, .75)]
    rows = ["| reward | " + " | ".join(f"p={p:g} say {c:g}" for p, c in cases) + " |", "|---|" + "---|" * len(cases)]
    for name, reward in rewards.items():
        rows.append(f"| {name} | " + " | ".join(f"{regret(reward, p, c):.4f}" for p, c in cases) + " |")
    return rows


#: Per-image accuracy mixes. "two types": half clean images (p ~ 0.99), half mixtures
#: (p ~ 0.58), mean 0.785. The uniform ranges stand for VECBench-like spreads (accuracies 0.5-0.8).
WORLDS = {
    "two types": np.array([0.58, 0.99]),
    "p in [.3,.9]": np.linspace(0.3, 0.9, 61),
    "p in [.2,.8]": np.linspace(0.2, 0.8, 61),
    "p in [.4,.95]": np.linspace(0.4, 0.95, 56),
    "p in [.5,1]": np.linspace(0.5, 1.0, 51),
    "p in [.1,1]": np.linspace(0.1, 1.0, 91),
}


def resolution_table(rewards: dict) -> list[str]:
    rows = ["| reward | " + " | ".join(WORLDS) + " |", "|---|" + "---|" * len(WORLDS)]
    for name, reward in rewards.items():
        rows.append(f"| {name} | " + " | ".join(f"{resolution_gain(reward, ps):.4f}" for ps in WORLDS.values())
                    + " |")
    return rows


def plot(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = np.linspace(0.0, 1.0, 501)
    c = np.linspace(0.0, 1.0, 2001)
    inner = c[1:-1]  # the release's gate rejects c = 0 and c = 1
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    ax = axes[0, 0]
    for name in MAIN:
        _, honest = R.best_response(name, p)
        _, (sandbag,) = R.best_response(name, 0.0)
        ax.plot(p, honest - sandbag, label=name)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(title="(a) honest answer minus deliberate miss (best c each)", xlabel="p = P(answer right)",
           ylabel="expected reward difference", ylim=(-1.5, 1.2))
    ax = axes[0, 1]
    for name in MAIN:
        ax.plot(inner, R.outcome_reward(name, 0.0, inner) - R.failure_score(name), label=name)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(title="(b) valid wrong answer minus broken format", xlabel="stated confidence c", ylabel="difference",
           ylim=(-4, 7))
    ax = axes[1, 0]
    for name in MAIN:
        _, (best,) = R.best_response(name, 0.75)
        ax.plot(c, best - R.expected_reward(name, 0.75, c), label=name)
    ax.set(title="(c) regret of stating c when p = 0.75", xlabel="stated confidence c", ylabel="expected loss",
           ylim=(0, 0.4))
    ax = axes[1, 1]
    for pv in (0.2, 0.5, 0.75, 0.9):
        e = R.expected_reward(R.DEFAULT_REWARD, pv, c)
        ax.plot(c, e, label=f"p = {pv}")
        ax.plot(c[e.argmax()], e.max(), "ko", ms=4)
    ax.set(title=f"(d) default ({R.DEFAULT_REWARD}): expected reward, maximum at c = p",
           xlabel="stated confidence c", ylabel="expected reward")
    for a in axes.flat:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/reward_incentives.png"), help="plot path")
    args = parser.parse_args()
    rewards = variants()
    print("## Incentives (accuracy weight 1 throughout)\n")
    print("\n".join(incentive_table(rewards)))
    print("\n## Expected reward lost by stating c when the answer is right with probability p\n")
    print("\n".join(pressure_table(rewards)))
    print("\n## Resolution: expected gain of per-image confidences over the best single constant\n")
    print("\n".join(resolution_table(rewards)))
    plot(args.out)
    print(f"\nplot: {args.out}")


if __name__ == "__main__":
    main()

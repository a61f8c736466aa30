"""Training stages on TRL, accelerate and DeepSpeed.

- :mod:`emocaliber.train.configs`: ``ModelArgs`` / ``DataArgs`` shared by every stage (parsed with ``TrlParser``).
- :mod:`emocaliber.train.data`: records -> checked TRL datasets (prompt-completion for SFT, prompt-only for GRPO).
- :mod:`emocaliber.train.checkpoint`: self-contained checkpoints, model cards, resume fix, LoRA merging.
- :mod:`emocaliber.train.sft`: stages 1 and 2 (``run_sft``); :mod:`emocaliber.train.grpo`: stage 3.

Submodules import TRL and transformers, so nothing is imported here.
"""

"""Shared fixtures: everything offline, one tiny Qwen2.5-VL per test session."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
# The tiny model's matrices are too small for intra-op threads to pay; with two cores shared by two-process
# distributed tests, extra threads only oversubscribe. Subprocesses inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module's tests: tiny models on a shared CPU run many times faster on one thread
    than on one per core."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2.5-VL saved like any checkpoint (seed 0). Tests must not modify it."""
    from emocaliber.modeling import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2.5-vl"), seed=0)

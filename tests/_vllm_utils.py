"""The real vLLM on a CPU: everything up to the model itself.

vLLM's engine arguments, sampling parameters, tokenizer and Qwen2.5-VL multimodal processor all run without a GPU;
only the engine (model execution inside ``LLM.generate``) needs one. :class:`CPULLM` stands in for ``vllm.LLM``:
its constructor validates the arguments with vLLM's own ``EngineArgs`` and ``ModelConfig`` and builds vLLM's own
renderer (tokenizer plus multimodal processor) from them, and its ``generate`` turns every prompt into engine
inputs with ``LLM``'s own preprocessing, checks that each sampling parameter is a real ``SamplingParams``, and
records the result. Only the model's answer is made up (:attr:`CPULLM.answer`), because computing it is the
one part that needs a GPU.

``make test`` installs vLLM; a missing vLLM skips these tests only outside CI (``CI`` or
``EMOCALIBER_REQUIRE_VLLM`` set makes it a failure).
"""

from __future__ import annotations

import importlib
import os
import types
from collections.abc import Callable
from typing import Any, ClassVar

import pytest


def require_vllm():
    """The vllm module; skips the calling test when it is missing, unless CI requires it (then ImportError)."""
    if os.environ.get("CI") or os.environ.get("EMOCALIBER_REQUIRE_VLLM"):
        return importlib.import_module("vllm")
    return pytest.importorskip("vllm", reason="make test installs vLLM (pip install -e '.[vllm]' torch==2.14.0)")


class CPULLM:
    """``vllm.LLM`` with the real argument checks and prompt processing, and a made-up model answer."""

    instances: ClassVar[list[CPULLM]] = []
    #: (engine input, sample index) -> response text. vLLM's engine input holds ``prompt_token_ids`` and, for an
    #: image prompt, ``mm_kwargs`` and ``mm_placeholders``; the prompt dict as given is in ``calls``.
    answer: ClassVar[Callable[[dict[str, Any], dict[str, Any], int], str]] = staticmethod(
        lambda prompt, engine_input, k: "")

    def __init__(self, model: str, **kwargs: Any) -> None:
        from vllm.config import DeviceConfig, VllmConfig
        from vllm.engine.arg_utils import EngineArgs
        from vllm.renderers.registry import renderer_from_config

        self.kwargs = {"model": model, **kwargs}
        # vllm.LLM passes every argument on to EngineArgs; an unknown keyword is a TypeError here as there.
        self.engine_args = EngineArgs(model=model, **kwargs)
        self.model_config = self.engine_args.create_model_config()  # vLLM's checks of model and mm limits
        # The device is the one thing a CPU cannot infer; the renderer does not use it.
        config = VllmConfig(model_config=self.model_config, device_config=DeviceConfig(device="cpu"))
        self.renderer = renderer_from_config(config)
        self.llm_engine = types.SimpleNamespace(model_config=self.model_config)
        self.calls: list[tuple[list[Any], list[Any], list[dict[str, Any]]]] = []
        CPULLM.instances.append(self)

    def get_tokenizer(self):
        return self.renderer.get_tokenizer()

    def generate(self, prompts, sampling_params=None, use_tqdm=True, **kwargs: Any):
        from vllm import SamplingParams
        from vllm.entrypoints.llm import LLM  # the real class (vllm.LLM is this stand-in during a test)
        from vllm.logprobs import Logprob

        assert not kwargs, f"LLM.generate keywords this stand-in does not model: {sorted(kwargs)}"
        prompts = list(prompts) if isinstance(prompts, (list, tuple)) else [prompts]
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(params) == len(prompts)
        assert all(isinstance(p, SamplingParams) for p in params), [type(p) for p in params]
        engine_inputs = LLM._preprocess_cmpl(self, prompts)  # exactly what LLM.generate hands the engine
        self.calls.append((prompts, params, engine_inputs))
        tokenizer = self.get_tokenizer()
        outputs = []
        for prompt, param, engine_input in zip(prompts, params, engine_inputs, strict=True):
            samples = []
            for k in range(param.n):
                text = CPULLM.answer(prompt, engine_input, k)
                ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
                logprobs = [{t: Logprob(logprob=-1.0, rank=1)} for t in ids] if param.logprobs is not None else None
                samples.append(types.SimpleNamespace(text=text, token_ids=ids, logprobs=logprobs))
            outputs.append(types.SimpleNamespace(prompt_token_ids=engine_input["prompt_token_ids"], outputs=samples))
        return outputs


def use_cpu_llm(monkeypatch) -> list[CPULLM]:
    """Real vLLM with :class:`CPULLM` as ``vllm.LLM`` (and in TRL's vLLM generation module) for one test; returns
    the list the engines built are appended to. Call it from a fixture that takes ``monkeypatch``."""
    vllm = require_vllm()
    monkeypatch.setattr(vllm, "LLM", CPULLM)
    trl_generation = importlib.import_module("trl.generation.vllm_generation")
    monkeypatch.setattr(trl_generation, "LLM", CPULLM, raising=False)
    monkeypatch.setattr(CPULLM, "instances", [])
    monkeypatch.setattr(CPULLM, "answer", staticmethod(lambda prompt, engine_input, k: ""))
    return CPULLM.instances


def image_token_count(ids, image_token_id: int) -> int:
    return sum(1 for t in ids if int(t) == image_token_id)

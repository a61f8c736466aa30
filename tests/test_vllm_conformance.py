"""What the project hands vLLM, checked by vLLM 0.33 itself on a CPU (tests/_vllm_utils.py).

Every engine-argument dict goes through vLLM's ``EngineArgs`` and ``ModelConfig``, every sampling dict becomes a
real ``SamplingParams``, and every prompt goes through vLLM's own Qwen2.5-VL multimodal processor, whose image
tokens must equal what the transformers processor makes of the same image under the same bounds. Only the model's
answer inside ``LLM.generate`` is made up: computing it needs a GPU. The evaluation runner's vLLM path is tested
the same way in tests/test_evaluation.py, the GRPO trainer's in tests/test_grpo_vllm.py.
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import pytest
from _vllm_utils import CPULLM, image_token_count, require_vllm, use_cpu_llm
from PIL import Image

from emocaliber import generation
from emocaliber.corpora import BackendResponder
from emocaliber.generation import (
    SamplingSettings,
    add_backend_arguments,
    backend_from_args,
    get_backend,
    record_request,
    vllm_engine_kwargs,
    vllm_inputs,
)
from emocaliber.modeling import load_processor
from emocaliber.records import Record
from emocaliber.tasks import MIKELS_8

require_vllm()  # every test here is about vLLM itself: skipped without it outside CI, an error in CI

#: Bounds unlike the tiny checkpoint's saved ones (3136-12544): an engine that ignored them would give each test
#: image another number of tokens than transformers does.
BOUNDS = {"min_pixels": 28 * 28 * 2, "max_pixels": 28 * 28 * 6}
#: Sizes on both sides of the bounds, in both orientations.
SIZES = [(150, 100), (40, 30), (56, 84), (300, 60)]


@pytest.fixture
def cpu_llm(monkeypatch):
    return use_cpu_llm(monkeypatch)


def _records(root, n=4) -> list[Record]:
    (root / "img").mkdir(exist_ok=True)
    records = []
    for i in range(n):
        rel = f"img/{i}.png"
        Image.new("RGB", SIZES[i % len(SIZES)], (40 * i, 200 - 30 * i, 90)).save(root / rel)
        records.append(Record(id=f"r{i}", task="EmoSet-8", image=rel, candidates=list(MIKELS_8),
                              ground_truth="awe", split="train", source="t"))
    return records


def _check_image_tokens(engine: CPULLM, model_dir, bounds: dict) -> int:
    """Every image prompt the engine received expands, in vLLM's processor, to the transformers processor's count
    for the same text, image and bounds; returns how many prompts were checked."""
    hf = load_processor(model_dir, **bounds)
    checked = 0
    for prompts, _, engine_inputs in engine.calls:
        for prompt, engine_input in zip(prompts, engine_inputs, strict=True):
            image = prompt["multi_modal_data"]["image"]
            encoded = hf(text=[prompt["prompt"]], images=[image])
            expected = image_token_count(encoded["input_ids"][0], hf.image_token_id)
            assert expected == int(encoded["image_grid_thw"].prod()) // hf.image_processor.merge_size ** 2
            assert image_token_count(engine_input["prompt_token_ids"], hf.image_token_id) == expected, image.size
            (placeholder,) = engine_input["mm_placeholders"]["image"]
            assert placeholder.length == expected
            checked += 1
    return checked


# --------------------------------------------------------------------------------------- engine arguments

def test_the_stand_in_rejects_what_vllm_rejects(cpu_llm, tiny_model_dir):
    """The checks are vLLM's: a misspelt argument, a bad limit or a missing model fail here as in ``vllm.LLM``."""
    with pytest.raises(TypeError, match="tensor_paralel_size"):
        CPULLM(str(tiny_model_dir), tensor_paralel_size=1)
    with pytest.raises(ValueError, match="limit_per_prompt"):  # pydantic's ValidationError
        CPULLM(str(tiny_model_dir), limit_mm_per_prompt={"image": -1})
    with pytest.raises(ValueError, match="dtype"):
        CPULLM(str(tiny_model_dir), dtype="int3")
    with pytest.raises(ValueError, match="max_model_len"):
        CPULLM(str(tiny_model_dir), max_model_len=10**9)


def test_default_engine_arguments_leave_out_videos(cpu_llm, tiny_model_dir):
    engine = CPULLM(**vllm_engine_kwargs(tiny_model_dir))
    limits = engine.model_config.multimodal_config.limit_per_prompt
    assert (limits["image"].count, limits["video"].count) == (1, 0)  # no dummy videos in memory profiling
    assert engine.model_config.seed == 0 and engine.engine_args.load_format == "safetensors"


@pytest.mark.parametrize("builder", ["evaluation", "inference", "corpus"])
def test_every_entry_point_builds_engine_arguments_vllm_accepts(builder, cpu_llm, tiny_model_dir, tmp_path):
    """The three places that build a vLLM engine, each with its pixel bounds, dtype and seed options set."""
    if builder == "evaluation":
        from emocaliber.evaluation import EvalConfig, _build_backend

        config = EvalConfig(model=str(tiny_model_dir), data="unused.jsonl", out=str(tmp_path), backend="vllm",
                            dtype="float32", seed=3, **BOUNDS)
        _build_backend(config, "vllm")
    elif builder == "inference":
        from emocaliber.inference import EmoCaliber

        EmoCaliber.from_pretrained(tiny_model_dir, backend="vllm", dtype="float32", **BOUNDS)
    else:
        parser = argparse.ArgumentParser()
        add_backend_arguments(parser)
        parser.add_argument("--seed", type=int, default=0)
        args = parser.parse_args(["--backend", "vllm", "--dtype", "float32", "--seed", "3", "--tensor-parallel-size",
                                  "1", "--gpu-memory-utilization", "0.8", "--batch-size", "4", "--device", "cuda:0",
                                  "--min-pixels", str(BOUNDS["min_pixels"]), "--max-pixels", str(BOUNDS["max_pixels"])])
        backend_from_args(str(tiny_model_dir), args, progress=False)
    (engine,) = cpu_llm
    assert engine.model_config.dtype == np.float32 or str(engine.model_config.dtype) == "torch.float32"
    assert engine.model_config.multimodal_config.mm_processor_kwargs == BOUNDS
    assert engine.model_config.multimodal_config.limit_per_prompt["video"].count == 0


# --------------------------------------------------------------------------------------- sampling parameters

SETTINGS = [SamplingSettings(), SamplingSettings(n=4), SamplingSettings(n=4, temperature=0.7, top_p=0.9, seed=2),
            SamplingSettings(n=1, temperature=1.0, max_new_tokens=7)]


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"n{s.n}-t{s.temperature}")
def test_every_sampling_dict_is_a_valid_sampling_params(settings, constrained, cpu_llm, tiny_model_dir, tmp_path):
    from vllm import SamplingParams

    backend = get_backend(str(tiny_model_dir), "vllm", progress=False)
    requests = [record_request(r, image_root=tmp_path, constrained=constrained) for r in _records(tmp_path, 2)]
    out = backend.generate(requests, settings)
    assert [len(texts) for texts in out] == [settings.n] * 2
    (engine,) = cpu_llm
    ((_, params, _),) = engine.calls
    for p, request in zip(params, requests, strict=True):
        assert isinstance(p, SamplingParams)
        assert p.n == (1 if settings.greedy else settings.n) and p.max_tokens == settings.max_new_tokens
        assert (p.structured_outputs.regex if p.structured_outputs else None) == request.regex


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return None, load_processor(tiny_model_dir)


def test_vllm_refuses_greedy_with_several_samples_so_it_is_never_asked(tiny, tmp_path):
    from vllm import SamplingParams

    with pytest.raises(Exception, match="n must be 1 when using greedy sampling"):
        SamplingParams(n=3, temperature=0.0)
    requests = [record_request(r, image_root=tmp_path) for r in _records(tmp_path, 1)]
    _, params = vllm_inputs(requests, tiny[1], SamplingSettings(n=3))
    assert SamplingParams(**params).n == 1


# --------------------------------------------------------------------------------------- image tokens

@pytest.mark.parametrize("bounds", [BOUNDS, {}], ids=["configured", "saved"])
def test_inference_prompts_get_the_transformers_image_tokens(bounds, cpu_llm, tiny_model_dir, tmp_path):
    from emocaliber.inference import EmoCaliber

    model = EmoCaliber.from_pretrained(tiny_model_dir, backend="vllm", **bounds)
    images = [Image.new("RGB", size, (10, 120, 200)) for size in SIZES]
    model.predict_batch(images, task="EmoSet-8")
    (engine,) = cpu_llm
    assert _check_image_tokens(engine, tiny_model_dir, bounds) == len(SIZES)


@pytest.mark.parametrize("kind", ["cot", "confidence_targets"])
def test_corpus_builder_prompts_get_the_transformers_image_tokens(kind, cpu_llm, tiny_model_dir, tmp_path):
    """build_cot asks a teacher with the structure instruction, the gold hint and the output contract;
    build_confidence_targets samples the stage-1 model and asks it once more greedily."""
    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    args = parser.parse_args(["--backend", "vllm", "--min-pixels", str(BOUNDS["min_pixels"]),
                              "--max-pixels", str(BOUNDS["max_pixels"])])
    backend = backend_from_args(str(tiny_model_dir), args, progress=False)
    records = _records(tmp_path)
    settings = SamplingSettings(n=3, temperature=0.7, max_new_tokens=32)
    if kind == "cot":
        BackendResponder(backend, tmp_path, settings, teacher=True, show_gold=True, constrained=True)(records, 5)
    else:
        BackendResponder(backend, tmp_path, settings)(records, 5)
        BackendResponder(backend, tmp_path, SamplingSettings(n=1))(records, 6)
    (engine,) = cpu_llm
    assert _check_image_tokens(engine, tiny_model_dir, BOUNDS) == len(records) * len(engine.calls)


# --------------------------------------------------------------------------------------- LoRA adapters

@pytest.fixture
def adapter_dir(tiny_model_dir, tmp_path):
    """A saved LoRA adapter: adapter_config.json (and weights), no config.json of a full model."""
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4,
                                                         "base_model_name_or_path": str(tiny_model_dir)}))
    (out / "adapter_model.safetensors").write_bytes(b"")
    return out


def test_a_lora_adapter_never_reaches_vllm(cpu_llm, adapter_dir, tmp_path, monkeypatch, caplog):
    """Asked for, the vLLM backend refuses it in one line naming the merge recipe; ``auto`` picks transformers."""
    import torch

    from emocaliber.evaluation import EvalConfig, EvalError, _build_backend
    from emocaliber.inference import EmoCaliber, InputError

    with pytest.raises(ValueError, match=r"LoRA adapter.*recipes/merge_lora\.py") as e:
        get_backend(str(adapter_dir), "vllm", progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(EvalError, match=r"recipes/merge_lora\.py"):
        _build_backend(EvalConfig(model=str(adapter_dir), data="x.jsonl", out=str(tmp_path), backend="vllm"), "vllm")
    with pytest.raises(InputError, match=r"recipes/merge_lora\.py"):
        EmoCaliber.from_pretrained(adapter_dir, backend="vllm")
    assert cpu_llm == []

    caplog.set_level(logging.INFO, logger="emocaliber.generation")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert generation.resolve_backend(str(adapter_dir), "auto") == "transformers"
    assert "a LoRA adapter, which vLLM does not load" in caplog.text
    assert generation.resolve_backend(str(adapter_dir.parent), "auto") == "vllm"

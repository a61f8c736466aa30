"""The tiny Qwen2.5-VL and the one loader: offline save/reload, generation from an image, seeds, 4-bit, LoRA."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from emocaliber.modeling import ModelNotFoundError, build_tiny_model, load_model_and_processor
from emocaliber.prompts import build_messages
from emocaliber.records import Record

RECORD = Record(id="t/1", task="FI-8", image="a.png", candidates=["awe", "amusement", "anger"],
                ground_truth="awe", split="test", source="FI")


def _inputs(processor, n=2):
    images = [Image.new("RGB", (56, 56), (200, 30 * i, 10)) for i in range(n)]
    conv = [build_messages(RECORD, with_confidence=True, image=im) for im in images]
    return processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt", processor_kwargs={"padding": True})


def _backward(model, processor):
    inputs = _inputs(processor)
    model.train()
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert torch.isfinite(out.loss)
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_tiny_model_reloads_offline_and_generates_from_an_image(tiny_model_dir):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja",
                 "generation_config.json"):
        assert (tiny_model_dir / name).is_file(), name
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir, padding_side="left")
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    inputs = _inputs(processor)
    n_image_tokens = (inputs["input_ids"] == model.config.image_token_id).sum(dim=1)
    assert n_image_tokens.tolist() == [4, 4]  # 56x56 -> 2x2 merged patches
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    # Default system prompt and image placeholders, as Qwen2.5-VL's template writes them.
    text = processor.apply_chat_template([[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]],
                                         add_generation_prompt=True, tokenize=False)[0]
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    assert "<|vision_start|><|image_pad|><|vision_end|>hi" in text


def test_output_tags_are_ordinary_text(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = ("<think><element>a</element><human>b</human><context>c</context><interaction>d</interaction>"
            "<analysis>e</analysis></think><answer>awe</answer><confidence>0.85</confidence>")
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    assert "<|image_pad|>" in tok.all_special_tokens


def test_same_seed_same_weights_other_seed_differs(tmp_path, tiny_model_dir):
    again = build_tiny_model(tmp_path / "again", seed=0)
    other = build_tiny_model(tmp_path / "other", seed=1)
    ref = load_file(tiny_model_dir / "model.safetensors")
    same = load_file(again / "model.safetensors")
    diff = load_file(other / "model.safetensors")
    assert ref.keys() == same.keys()
    assert all(torch.equal(ref[k], same[k]) for k in ref)
    assert any(not torch.equal(ref[k], diff[k]) for k in ref)
    assert (again / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()


def test_loader_plain_backward(tiny_model_dir):
    model, processor = load_model_and_processor(tiny_model_dir, dtype="float32")
    _backward(model, processor)


def test_loader_lora_on_language_model_only(tiny_model_dir):
    model, processor = load_model_and_processor(tiny_model_dir, dtype="float32", lora={"r": 4})
    lora_names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert lora_names and all("lora_" in n for n in lora_names)
    assert not any("visual" in n for n in lora_names)
    assert any("language_model" in n for n in lora_names)
    _backward(model, processor)


def test_lora_vision_adapts_every_linear_layer_of_the_vision_tower_and_merger(tiny_model_dir):
    import torch

    model, _ = load_model_and_processor(tiny_model_dir, dtype="float32", lora={"r": 4}, lora_vision=True)
    vision = [n for n, m in model.named_modules() if ".visual." in f".{n}" and isinstance(m, torch.nn.Linear)
              and ".lora_" not in n]
    adapted = {n.removesuffix(".base_layer") for n in vision if n.endswith(".base_layer")}
    assert adapted and set(vision) == {f"{n}.base_layer" for n in adapted}  # no plain Linear left in the tower
    assert any(n.endswith("attn.qkv") for n in adapted) and any(n.endswith("merger.mlp.2") for n in adapted)


def test_loader_4bit_with_lora(tiny_model_dir):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    model, processor = load_model_and_processor(tiny_model_dir, quantization="4bit", lora={"r": 4})
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    _backward(model, processor)


def test_lora_adapter_loads_from_safetensors_only(tiny_model_dir, tmp_path):
    """adapter_model.bin is a pickle, which can run code when loaded: refused, with what to do instead."""
    model, processor = load_model_and_processor(tiny_model_dir, dtype="float32", lora={"r": 2})
    for name, safe in (("safe", True), ("pickle", False)):
        model.save_pretrained(tmp_path / name, safe_serialization=safe)
        processor.save_pretrained(tmp_path / name)
    assert not (tmp_path / "pickle" / "adapter_model.safetensors").exists()
    loaded, _ = load_model_and_processor(tmp_path / "safe")
    assert type(loaded).__name__.startswith("PeftModel")
    with pytest.raises(ModelNotFoundError, match=r"no adapter_model\.safetensors \(it holds adapter_model\.bin.*"
                                                 r"convert it to safetensors"):
        load_model_and_processor(tmp_path / "pickle")


def test_missing_path_is_one_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model directory at"):
        load_model_and_processor(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="holds no config.json"):
        load_model_and_processor(tmp_path / "empty")


def test_hub_id_while_offline_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE=1") as err:
        load_model_and_processor("wudq/EmoCaliber")
    assert "wudq/EmoCaliber" in str(err.value)


def test_an_unreachable_hub_fails_in_one_sentence_within_seconds(tmp_path):
    """Without HF_HUB_OFFLINE, a hub id that is not cached is checked with one quick request: an unreachable hub
    (here a closed loopback port) is a one-line error in seconds, not minutes of retries in from_pretrained."""
    import os
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env |= {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    code = ("from emocaliber.modeling import check_model_source, ModelNotFoundError\n"
            "try:\n    check_model_source('someone/not-cached')\nexcept ModelNotFoundError as e:\n    print(e)")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=True)
    assert time.monotonic() - start < 60
    assert "'someone/not-cached' is not a local directory, not in the Hugging Face cache" in done.stdout, done.stderr
    assert done.stdout.count("\n") == 1

"""The generation layer: real batched generation with the tiny Qwen2.5-VL, and the vLLM request boundary."""

from __future__ import annotations

import logging
import sys
import types

import pytest
from _vllm_utils import CPULLM, use_cpu_llm
from PIL import Image

from emocaliber import generation
from emocaliber.generation import (
    GenerationRequest,
    ImageLoadError,
    SamplingSettings,
    TransformersBackend,
    VLLMBackend,
    get_backend,
    parse_shard,
    record_request,
    render_prompt,
    shard,
    unshard,
    vllm_engine_kwargs,
    vllm_inputs,
)
from emocaliber.prompts import TEACHER_STRUCTURE
from emocaliber.records import Record
from emocaliber.tasks import MIKELS_8

COLOURS = [(250, 20, 20), (20, 250, 20), (20, 20, 250), (240, 240, 30), (30, 30, 30), (200, 100, 220)]


def _records(root, n=6):
    """Mixed prompt lengths: sentiment (2 candidates) and emotion (8) tasks, and images of different sizes."""
    records = []
    for i in range(n):
        rel = f"img/{i}.png"
        (root / "img").mkdir(exist_ok=True)
        Image.new("RGB", (56 + 28 * (i % 3), 56 + 56 * (i % 2)), COLOURS[i % len(COLOURS)]).save(root / rel)
        emotion = i % 2 == 1
        records.append(Record(id=f"r{i}", task="EmoSet-8" if emotion else "FI-2", image=rel,
                              candidates=list(MIKELS_8) if emotion else ["positive", "negative"],
                              ground_truth="awe" if emotion else "negative", split="test", source="t"))
    return records


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from emocaliber.modeling import load_model_and_processor

    return load_model_and_processor(tiny_model_dir, padding_side="left")


def test_generates_k_texts_per_item_and_reads_the_image(tiny, tmp_path):
    records = _records(tmp_path, 4)
    backend = TransformersBackend(tiny, batch_size=4, progress=False)
    out = generation.generate(records, backend=backend, image_root=tmp_path, n=3, temperature=1.0,
                              max_new_tokens=6, seed=1)
    assert [len(texts) for texts in out] == [3, 3, 3, 3]
    assert all(isinstance(t, str) for texts in out for t in texts)
    # Same prompt, different image -> different greedy continuation: the pixels reach the model.
    same_task = [records[1], records[3]]
    greedy = generation.generate(same_task, backend=backend, image_root=tmp_path, n=2, max_new_tokens=8)
    assert greedy[0][0] != greedy[1][0]
    assert greedy[0][0] == greedy[0][1]  # greedy: the n texts of an item are the same text


def test_batched_left_padded_greedy_equals_one_at_a_time(tiny, tmp_path):
    records = _records(tmp_path, 6)
    requests = [record_request(r, image_root=tmp_path) for r in records]
    processor = tiny[1]
    lengths = {len(processor(text=[render_prompt(processor, q)], images=q.images)["input_ids"][0])
               for q in requests}
    assert len(lengths) >= 3, "the batch must mix prompt lengths for this test to mean anything"
    settings = SamplingSettings(max_new_tokens=10)
    batched = TransformersBackend(tiny, batch_size=6, progress=False).generate(requests, settings)
    single = TransformersBackend(tiny, batch_size=1, progress=False).generate(requests, settings)
    assert batched == single
    assert processor.tokenizer.padding_side == "left"


def test_seeded_sampling_is_reproducible(tiny, tmp_path):
    requests = [record_request(r, image_root=tmp_path) for r in _records(tmp_path, 3)]
    backend = TransformersBackend(tiny, batch_size=2, progress=False)
    run = lambda seed: backend.generate(requests, SamplingSettings(n=2, temperature=1.0, max_new_tokens=8,
                                                                   seed=seed))
    first = run(7)
    assert run(7) == first
    assert run(8) != first


def test_record_request_teacher_and_image_errors(tmp_path):
    (record,) = _records(tmp_path, 1)
    req = record_request(record, image_root=tmp_path, teacher=True, hint="The correct answer is 'negative'.")
    text = req.messages[-1]["content"][1]["text"]
    assert text.endswith(TEACHER_STRUCTURE + " The correct answer is 'negative'.")
    assert req.messages[-1]["content"][0] == {"type": "image"} and req.images[0].mode == "RGB"

    missing = Record.from_dict({**record.to_dict(), "id": "gone", "image": "img/none.png"})
    with pytest.raises(ImageLoadError, match=r"'gone'.*none\.png"):
        record_request(missing, image_root=tmp_path)
    (tmp_path / "img" / "bad.png").write_bytes(b"not a png")
    broken = Record.from_dict({**record.to_dict(), "id": "bad", "image": "img/bad.png"})
    with pytest.raises(ImageLoadError, match=r"'bad'.*bad\.png"):
        record_request(broken, image_root=tmp_path)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    Image.new("RGB", (8, 8)).save(outside)
    (tmp_path / "img" / "link.png").symlink_to(outside)
    escaping = Record.from_dict({**record.to_dict(), "id": "link", "image": "img/link.png"})
    with pytest.raises(ImageLoadError, match="outside the dataset root"):
        record_request(escaping, image_root=tmp_path)


def test_images_the_processor_would_refuse_fail_at_load_time(tiny, tmp_path):
    """Qwen2.5-VL's processor refuses an aspect ratio of 200:1 or more from inside a batch; loading refuses it
    first, as an ImageLoadError that costs only its own item."""
    (record,) = _records(tmp_path, 1)
    for size in [(600, 2), (2, 600), (200, 1)]:
        Image.new("RGB", size).save(tmp_path / "img" / "thin.png")
        thin = Record.from_dict({**record.to_dict(), "id": "thin", "image": "img/thin.png"})
        with pytest.raises(ImageLoadError, match=r"'thin': image size not accepted: .*thin\.png is \d+x\d+ "
                                                 r"pixels, aspect ratio \d+:1"):
            record_request(thin, image_root=tmp_path)
    Image.new("RGB", (199, 1)).save(tmp_path / "img" / "thin.png")
    accepted = record_request(thin, image_root=tmp_path)
    tiny[1].image_processor(images=accepted.images)  # what loading lets through, the processor takes
    with pytest.raises(ValueError, match="aspect ratio"):
        tiny[1].image_processor(images=[Image.new("RGB", (600, 2))])  # the bound is the processor's own


def test_docstring_recipes_use_only_options_the_eval_tool_has():
    import re

    from emocaliber.evaluation import build_eval_parser

    options = {s for a in build_eval_parser()._actions for s in a.option_strings}
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", generation.__doc__))
    assert named <= options, f"options the evaluation tool does not have: {sorted(named - options)}"


def test_vllm_requests_match_the_transformers_prompt(tiny, tmp_path):
    """What :class:`VLLMBackend` submits, as data; tests/test_vllm_conformance.py runs it through vLLM itself."""
    processor = tiny[1]
    requests = [record_request(r, image_root=tmp_path) for r in _records(tmp_path, 2)]
    prompts, params = vllm_inputs(requests, processor, SamplingSettings(n=4, temperature=0.7, top_p=0.9,
                                                                        max_new_tokens=99, seed=3))
    assert params == {"n": 4, "temperature": 0.7, "top_p": 0.9, "max_tokens": 99, "seed": 3}
    for prompt, request in zip(prompts, requests):
        assert prompt["prompt"] == processor.apply_chat_template(request.messages, tokenize=False,
                                                                 add_generation_prompt=True)
        assert prompt["prompt"].count("<|vision_start|><|image_pad|><|vision_end|>") == 1
        assert prompt["multi_modal_data"] == {"image": request.images[0]}
    _, greedy = vllm_inputs(requests, processor, SamplingSettings(n=3, top_p=0.5))
    assert greedy["n"] == 1 and greedy["temperature"] == 0 and greedy["top_p"] == 1.0
    engine = vllm_engine_kwargs("ckpt", min_pixels=3136, max_pixels=12544, seed=5)
    assert engine == {"model": "ckpt", "tensor_parallel_size": 1, "gpu_memory_utilization": 0.9,
                      "limit_mm_per_prompt": {"image": 1, "video": 0}, "seed": 5, "load_format": "safetensors",
                      "mm_processor_kwargs": {"min_pixels": 3136, "max_pixels": 12544}}
    assert vllm_engine_kwargs("ckpt", limit_mm_per_prompt={"image": 2})["limit_mm_per_prompt"] == {
        "image": 2, "video": 0}
    # vLLM's default "auto" would fall back to pickled .bin weights; a caller cannot ask for it either.
    with pytest.raises(ValueError, match="load_format must be 'safetensors'"):
        vllm_engine_kwargs("ckpt", load_format="auto")


@pytest.fixture
def cpu_llm(monkeypatch):
    return use_cpu_llm(monkeypatch)


def test_vllm_backend_sends_every_prompt_in_one_call(cpu_llm, tiny_model_dir, tiny, tmp_path):
    """On the real vLLM up to the model (tests/_vllm_utils.py): one ``LLM.generate`` call carries all prompts, as
    real ``SamplingParams``, and outputs come back per request in order; greedy asks vLLM for one sample."""
    from vllm import SamplingParams

    CPULLM.answer = staticmethod(lambda prompt, engine_input, k: f"{prompt['multi_modal_data']['image'].getpixel((0, 0))}:{k}")
    backend = VLLMBackend(tiny_model_dir, max_pixels=12544, progress=False)
    requests = [record_request(r, image_root=tmp_path) for r in _records(tmp_path, 3)]
    assert backend.generate(requests, SamplingSettings(n=2, temperature=1.0)) == [
        [f"{COLOURS[i]}:0", f"{COLOURS[i]}:1"] for i in range(3)]
    greedy = backend.generate(requests, SamplingSettings(n=2))
    assert greedy == [[f"{COLOURS[i]}:0", f"{COLOURS[i]}:0"] for i in range(3)]
    (engine,) = cpu_llm
    assert len(engine.calls) == 2 and all(len(prompts) == 3 for prompts, _, _ in engine.calls)
    assert engine.kwargs["mm_processor_kwargs"] == {"max_pixels": 12544}
    assert engine.calls[0][0] == vllm_inputs(requests, tiny[1], SamplingSettings(n=2, temperature=1.0))[0]
    assert [p.n for p in engine.calls[1][1]] == [1, 1, 1] and all(
        isinstance(p, SamplingParams) and p.temperature == 0 for p in engine.calls[1][1])


def test_auto_backend_choice_is_logged(tiny, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="emocaliber.generation")
    backend = get_backend(tiny, "auto", batch_size=3, tensor_parallel_size=2, progress=False)
    assert isinstance(backend, TransformersBackend) and backend.batch_size == 3
    import torch

    expected = "vLLM is not installed" if not generation.vllm_available() else (
        "no GPU is visible" if not torch.cuda.is_available() else "an in-memory model was given")
    assert f"generation backend: transformers ({expected})" in caplog.text
    monkeypatch.setattr(generation, "vllm_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert generation.resolve_backend("some/model", "auto") == "vllm"
    assert "generation backend: vllm (vLLM and a GPU are available)" in caplog.text
    with pytest.raises(ValueError, match="backend must be one of"):
        get_backend(tiny, "tgi")


def test_shards_cover_items_once_and_unshard_restores_order():
    items = list(range(11))
    shards = [shard(items, i, 4) for i in range(4)]
    assert sorted(x for s in shards for x in s) == items
    assert unshard(shards) == items
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_sampling_settings_reject_bad_values():
    for kwargs in ({"n": 0}, {"temperature": -1}, {"top_p": 0}, {"max_new_tokens": 0}):
        with pytest.raises(ValueError):
            SamplingSettings(**kwargs)
    with pytest.raises(ValueError, match="image_root"):
        generation.generate([Record(id="a", task="FI-2", image="a.png", candidates=["positive", "negative"],
                                    ground_truth="positive", split="test", source="t")], backend=object())
    assert generation.generate([], backend=types.SimpleNamespace(generate=lambda r, s: [])) == []
    assert GenerationRequest(messages=[]).images == []


def test_contract_regex_accepts_the_target_format_only():
    import re

    from emocaliber.prompts import format_target

    parts = {p: f"{p} words" for p in ("element", "human", "context", "interaction", "analysis")}
    pattern = generation.contract_regex(["awe", "fear"])
    assert re.fullmatch(pattern, format_target(parts, "fear", 0.35))
    assert not re.fullmatch(pattern, format_target(parts, "joy", 0.35))       # not a candidate
    for outside in ("1.00", "0.00", "0.5", ".85"):
        text = format_target(parts, "fear", 0.35).replace("0.35", outside)
        assert not re.fullmatch(pattern, text), outside
    assert not re.fullmatch(pattern, format_target({**parts, "human": ""}, "fear", 0.35))
    stage1 = generation.contract_regex(["awe"], with_confidence=False)
    assert re.fullmatch(stage1, format_target(parts, "awe"))


def test_regex_constrained_generation_always_parses(tiny, tmp_path):
    pytest.importorskip("xgrammar", reason="constrained decoding under transformers needs xgrammar==0.2.8")
    from emocaliber.parsing import parse_response

    records = _records(tmp_path, 2)
    requests = [record_request(r, image_root=tmp_path) for r in records]
    for request, record in zip(requests, records):  # short parts keep the random model's answers short
        request.regex = generation.contract_regex(record.candidates, max_part_chars=3)
    out = TransformersBackend(tiny, batch_size=2, progress=False).generate(
        requests, SamplingSettings(n=1, temperature=1.0, max_new_tokens=120, seed=2))
    for texts, record in zip(out, records):
        for text in texts:
            parsed = parse_response(text, record.candidates, mode="strict")
            assert parsed.valid_format and parsed.label in record.candidates, (text, parsed.problems)
            assert 0 < parsed.confidence < 1


def test_constraints_reach_vllm_and_need_xgrammar_under_transformers(tiny, tmp_path, monkeypatch):
    """vLLM part as data; tests/test_vllm_conformance.py hands it to vLLM's own StructuredOutputsParams."""
    (record,) = _records(tmp_path, 1)
    constrained = record_request(record, image_root=tmp_path, constrained=True)
    plain = record_request(record, image_root=tmp_path)
    _, params = vllm_inputs([constrained, plain], tiny[1], SamplingSettings())
    assert params[0]["structured_outputs"] == {"regex": generation.contract_regex(record.candidates)}
    assert "structured_outputs" not in params[1] and params[1]["max_tokens"] == 512
    monkeypatch.setitem(sys.modules, "xgrammar", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install xgrammar==0.2.8"):
        TransformersBackend(tiny, progress=False).generate([constrained], SamplingSettings(max_new_tokens=2))

"""Stage-1/2 SFT on the tiny Qwen2.5-VL with real TRL: loss masking, data checks, config errors, checkpoints,
freezing, length grouping, resume, LoRA/QLoRA and merging. Distributed runs are in test_sft_distributed.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _sft_utils import (
    RECIPES,
    ROOT,
    build_sft_world,
    generate_from_image,
    run_recipe_main,
    run_script,
    sft_config,
    tiny_recipe_config,
    trainer_losses,
    write_yaml,
)
from safetensors.torch import load_file

from emocaliber.formats import to_trl_prompt_completion
from emocaliber.prompts import SYSTEM_PROMPT, record_target
from emocaliber.records import read_records
from emocaliber.train.checkpoint import INFO_FILE, mark_complete, merge_lora, missing_parts
from emocaliber.train.configs import ConfigError, DataArgs, ModelArgs, parse_args_and_config
from emocaliber.train.data import DataError, load_split, records_to_dataset
from emocaliber.train.sft import build_trainer, check_args, confidence_token_weights, resolve_resume, run_sft


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_sft_world(tmp_path_factory.mktemp("sft-world"))


def _model_args(model_dir, **kw) -> ModelArgs:
    return ModelArgs(model_name_or_path=str(model_dir), dtype="float32", **kw)


def _data_args(world, stage="stage1", **kw) -> DataArgs:
    return DataArgs(train_file=str(world[stage]), with_confidence=stage == "stage2", **kw)


# ------------------------------------------------------------------------------------------ loss masking


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_loss_covers_exactly_the_completion_and_its_end_token(tiny_model_dir, world, tmp_path, stage):
    with_conf = stage == "stage2"
    trainer = build_trainer(_model_args(tiny_model_dir), _data_args(world, stage), sft_config(tmp_path), stage=stage)
    records = read_records(world[stage])[:3]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    tok = trainer.processing_class.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
    for i, record in enumerate(records):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i].bool()
        supervised = labels != -100
        target = record_target(record, with_confidence=with_conf)
        assert ("<confidence>" in target) == with_conf
        expected = tok(target + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
        assert labels[supervised].tolist() == expected
        assert ids[supervised].tolist() == expected
        assert im_end in labels[supervised].tolist()
        positions = supervised.nonzero().flatten()
        assert bool((positions.diff() == 1).all()), "the supervised tokens must be one contiguous span"
        prompt_ids = ids[mask & ~supervised]
        assert tok.decode(prompt_ids).endswith("<|im_start|>assistant\n")
        assert int((prompt_ids == image_pad).sum()) > 0  # the image tokens are in the (unsupervised) prompt
        assert not bool((supervised & ~mask).any()), "padding is never supervised"


def test_confidence_loss_weight_scales_only_what_follows_the_answer(tiny_model_dir, world, tmp_path):
    trainer = build_trainer(_model_args(tiny_model_dir), _data_args(world, "stage2", confidence_loss_weight=10.0),
                            sft_config(tmp_path), stage="stage2")
    assert trainer.confidence_loss_weight == 10.0
    records = read_records(world["stage2"])[:3]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    tok = trainer.processing_class.tokenizer
    weights = confidence_token_weights(batch["labels"], tok, 10.0)
    for i, record in enumerate(records):
        labels = batch["labels"][i]
        heavy = tok.decode(labels[weights[i] == 10.0].tolist())
        tail = f"<confidence>{record.confidence:.2f}</confidence><|im_end|>\n"
        # The first weighted token may carry the end of "</answer>" with it (the tokenizer decides), but it must
        # reach past it: no token wholly inside the marker is weighted.
        inside = heavy[: -len(tail)]
        first = tok.decode(labels[weights[i] == 10.0][:1].tolist())
        assert heavy.endswith(tail) and "</answer>".endswith(inside) and len(inside) < len(first), heavy
        assert bool((labels[weights[i] == 10.0] != -100).all()), "only supervised tokens are weighted"
    # Weight 1 through the weighted path is TRL's own loss; weight 10 adds 9 x the confidence tokens' share.
    trainer.model.eval()
    trainer.confidence_loss_weight = 1.0  # compute_loss is then TRL's
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, dict(batch))
        same, _ = trainer.weighted_loss(trainer.model, dict(batch), 1.0)
        heavier, _ = trainer.weighted_loss(trainer.model, dict(batch), 10.0)
    assert abs(float(same) - float(trl_loss)) < 1e-4 * float(trl_loss)
    assert float(heavier) > float(same)
    trainer.confidence_loss_weight = 10.0  # and the trainer's own loss is then the weighted one
    with torch.no_grad():
        assert float(trainer.compute_loss(trainer.model, dict(batch))) == pytest.approx(float(heavier), rel=1e-5)
    with pytest.raises(ConfigError, match="confidence_loss_weight must be > 0"):
        DataArgs(train_file="t.jsonl", with_confidence=True, confidence_loss_weight=0.0)
    with pytest.raises(ConfigError, match="needs with_confidence"):
        DataArgs(train_file="t.jsonl", confidence_loss_weight=10.0)


# ---------------------------------------------------------------------------------------------- data


def _strip_none(obj):
    if isinstance(obj, dict):
        return {k: _strip_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_strip_none(v) for v in obj]
    return obj


def test_rows_are_formats_rows_with_lazily_decoded_images(world):
    split = load_split(world["stage2"], image_root=world["root"], need_confidence=True)
    ds = records_to_dataset(split, with_confidence=True, system_prompt=SYSTEM_PROMPT)
    assert len(ds) == len(read_records(world["stage2"]))
    assert ds.features["images"].feature.decode  # stored as paths, decoded on access
    for record, row in zip(split.records[:4], ds):
        ref = to_trl_prompt_completion(record, with_confidence=True, image_root=world["root"])
        (image,), (ref_image,) = row.pop("images"), ref.pop("images")
        assert _strip_none(row) == ref
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(ref_image))


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_bad_data_is_reported_with_file_line_and_record(world, tmp_path):
    with pytest.raises(DataError, match=r"train_file: data file not found: .*nope\.jsonl"):
        load_split(tmp_path / "nope.jsonl", image_root=world["root"])
    lines = world["stage1"].read_text().splitlines()[:4]
    broken = json.loads(lines[1])
    broken["image"] = "images/train/SynthEmo/missing.png"
    bad_label = json.loads(lines[2])
    bad_label["ground_truth"] = "bliss"
    path = _write_lines(tmp_path / "bad.jsonl", [lines[0], json.dumps(broken), json.dumps(bad_label), "{oops",
                                                 lines[3]])
    with pytest.raises(DataError) as err:
        load_split(path, image_root=world["root"])
    msg = str(err.value)
    assert "3 bad record(s)" in msg
    assert f"bad.jsonl:2: record {broken['id']!r}: image 'images/train/SynthEmo/missing.png' not found" in msg
    assert "bad.jsonl:3:" in msg and "'bliss' is not one of the candidates" in msg
    assert "bad.jsonl:4: not valid JSON" in msg
    kept = load_split(path, image_root=world["root"], skip_bad=True)
    assert [r.id for r in kept.records] == [json.loads(lines[0])["id"], json.loads(lines[3])["id"]]
    assert len(kept.skipped) == 3
    with pytest.raises(DataError, match=r"stage1\.jsonl:1: record .* no 'confidence' target"):
        load_split(world["stage1"], image_root=world["root"], need_confidence=True)
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    corrupt = dict(json.loads(lines[0]), image="corrupt.png")
    shutil.copy(world["stage1"], tmp_path / "ok.jsonl")
    path = _write_lines(tmp_path / "corrupt.jsonl", [json.dumps(corrupt)])
    assert load_split(path, image_root=tmp_path).records  # exists: fine without verify_images
    with pytest.raises(DataError, match=r"corrupt\.jsonl:1: .* does not open"):
        load_split(path, image_root=tmp_path, verify_images=True)


def test_prompt_longer_than_max_length_fails_naming_the_record(tiny_model_dir, world, tmp_path):
    with pytest.raises(DataError, match=r"train_file: 16 prompt\(s\) reach max_length=40 .* 'SynthEmo-8/train/000000'"):
        build_trainer(_model_args(tiny_model_dir), _data_args(world), sft_config(tmp_path, max_length=40),
                      stage="stage1")


def test_length_grouping_uses_exact_token_lengths(tiny_model_dir, world, tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    args = sft_config(tmp_path, train_sampling_strategy="group_by_length", per_device_train_batch_size=4)
    trainer = build_trainer(_model_args(tiny_model_dir), _data_args(world), args, stage="stage1")
    ds = trainer.train_dataset
    for i in range(len(ds)):
        batch = trainer.data_collator([ds[i]])
        assert ds[i]["length"] == int(batch["attention_mask"].sum())
    sampler = trainer._get_train_sampler(trainer._remove_unused_columns(ds))
    assert isinstance(sampler, LengthGroupedSampler)
    assert list(sampler.lengths) == ds["length"]
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["labels"].shape[0] == 4


# --------------------------------------------------------------------------------------------- config


def test_config_mistakes_name_the_field(tmp_path):
    from trl import SFTConfig, TrlParser

    parser = TrlParser((ModelArgs, DataArgs, SFTConfig))
    cfg = write_yaml(tmp_path / "c.yaml", {"model_name_or_path": "m", "train_file": "t.jsonl", "output_dir": "o",
                                           "learning_rat": 1.0e-4})
    with pytest.raises(ConfigError, match=r"unknown field\(s\) 'learning_rat' \(did you mean 'learning_rate'\?\)"):
        parse_args_and_config(parser, ["--config", str(cfg)])
    cfg = write_yaml(tmp_path / "d.yaml", {"model_name_or_path": "m", "train_file": "t.jsonl", "output_dir": "o",
                                           "use_cpu": True, "bf16": False, "dtype": "float64"})
    with pytest.raises(ConfigError, match="dtype must be one of"):
        parse_args_and_config(parser, ["--config", str(cfg)])
    model_args, data_args, _ = parse_args_and_config(parser, ["--config", str(cfg), "--dtype", "bfloat16",
                                                              "--use_lora", "true", "--lora_r", "4"])
    assert (model_args.dtype, model_args.lora_r, data_args.train_file) == ("bfloat16", 4, "t.jsonl")
    with pytest.raises(ConfigError, match="quantization must be null, '4bit' or '8bit', got '3bit'"):
        ModelArgs(model_name_or_path="m", quantization="3bit", use_lora=True)
    with pytest.raises(ConfigError, match="quantization='4bit' needs use_lora"):
        ModelArgs(model_name_or_path="m", quantization="4bit")
    with pytest.raises(ConfigError, match="lora_r, lora_vision set but use_lora is false"):
        ModelArgs(model_name_or_path="m", lora_r=64, lora_vision=True)
    with pytest.raises(ConfigError, match="max_train_samples"):
        DataArgs(train_file="t.jsonl", max_train_samples=0)
    # The weighted stage-2 loss is plain cross-entropy: settings it would drop are refused, not ignored.
    weighted = DataArgs(train_file="t.jsonl", with_confidence=True, confidence_loss_weight=2.0)
    for change, name in (({"loss_type": "dft"}, "loss_type='dft'"), ({"label_smoothing_factor": 0.1}, "smoothing")):
        with pytest.raises(ConfigError, match=name):
            check_args(ModelArgs("m"), weighted, SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False,
                                                           **change))
        check_args(ModelArgs("m"), DataArgs(train_file="t.jsonl"),
                   SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, **change))  # weight 1: TRL's loss


@pytest.mark.slow  # three fresh interpreters importing torch/transformers/TRL: 20-40 s on two cores
def test_recipe_fails_before_training_naming_field_file_or_record(tiny_model_dir, world, tmp_path):
    """The recipe script, as users run it: exit code 2, one error line naming the culprit, no training step."""
    lines = world["stage1"].read_text().splitlines()
    missing_image = dict(json.loads(lines[5]), image="images/gone.png")
    bad_records = _write_lines(tmp_path / "bad.jsonl", lines[:5] + [json.dumps(missing_image)])
    cases = {
        "unknown key": ({"lora_rnk": 8}, "lora_rnk"),
        "missing file": ({"train_file": str(tmp_path / "absent.jsonl")},
                         f"train_file: data file not found: {tmp_path / 'absent.jsonl'}"),
        "missing image": ({"train_file": str(bad_records), "image_root": str(world["root"])},
                          f"bad.jsonl:6: record {missing_image['id']!r}: image 'images/gone.png' not found"),
    }
    procs = {}
    for name, (overrides, _) in cases.items():
        out = tmp_path / name.replace(" ", "_")
        cfg = write_yaml(tmp_path / f"{out.name}.yaml",
                         {**tiny_recipe_config(tiny_model_dir, world["stage1"], out), **overrides})
        env_args = [sys.executable, str(RECIPES / "stage1_sft.py"), "--config", str(cfg)]
        procs[name] = (out, subprocess.Popen(env_args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             text=True, env=_env()))
    for name, (out, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 2, (name, stderr[-2000:])
        assert "stage1_sft.py: error:" in stderr and cases[name][1] in stderr, (name, stderr[-2000:])
        assert "'loss'" not in stdout and not list(out.glob("checkpoint-*")) and not (out / "train_results.json").exists()


def _env():
    import os

    return dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT))


def test_resolve_resume(tmp_path):
    assert resolve_resume("auto", tmp_path / "fresh") is None
    for step in (2, 10, 4, 12):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
        if step != 12:  # checkpoint-12 was cut short by a kill: never marked complete
            mark_complete(tmp_path / f"checkpoint-{step}", step=step)
    assert resolve_resume("auto", tmp_path) == str(tmp_path / "checkpoint-10")
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume(str(tmp_path / "checkpoint-2"), tmp_path) == str(tmp_path / "checkpoint-2")
    with pytest.raises(ConfigError, match="no checkpoint directory at .*checkpoint-99"):
        resolve_resume(str(tmp_path / "checkpoint-99"), tmp_path)


# ---------------------------------------------------------------------------------- training and saving


def test_full_finetune_freezes_vision_and_saves_self_contained_checkpoints(tiny_model_dir, world, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path / "stage1"
    args = sft_config(out, save_strategy="steps", save_steps=1, report_to="tensorboard", gradient_checkpointing=True,
                      gradient_checkpointing_kwargs={"use_reentrant": False})
    run_sft(_model_args(tiny_model_dir, freeze_vision_tower=True), _data_args(world), args, stage="stage1")

    base = load_file(tiny_model_dir / "model.safetensors")
    trained = load_file(out / "model.safetensors")
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    vision = {k for k in base if ".visual." in f".{k}" and ".merger." not in k}
    assert vision and not (changed & vision), "the frozen vision tower must not move"
    language = {k for k in base if ".visual." not in f".{k}"}  # saved in Qwen's own key layout (model.layers...)
    assert any(".merger." in k for k in changed) and language and language <= changed

    record = read_records(world["stage1"])[0]
    for ckpt in (out / "checkpoint-1", out):
        assert missing_parts(ckpt) == [], ckpt
        card = (ckpt / "README.md").read_text()
        assert "stage1" in card and str(tiny_model_dir) in card and str(world["stage1"]) in card
        info = json.loads((ckpt / INFO_FILE).read_text())
        assert info["stage"] == "stage1" and info["data"]["n_train"] == 16
        assert info["model"]["freeze_vision_tower"] is True and info["training"]["learning_rate"] == 1e-3
        processor = AutoProcessor.from_pretrained(ckpt)
        model = AutoModelForImageTextToText.from_pretrained(ckpt)
        generate_from_image(model, processor, record, world["root"] / record.image)
    assert list(out.glob("runs/**/events.out.tfevents.*")), "report_to tensorboard writes event files"


def test_killed_run_resumes_to_the_same_final_loss(tiny_model_dir, world, tmp_path):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt("simulated kill right after checkpoint-3")

    def cfg(out, **kw):
        return sft_config(out, max_steps=6, save_strategy="steps", save_steps=3, learning_rate=5e-4, **kw)

    full = tmp_path / "uninterrupted"
    run_sft(_model_args(tiny_model_dir), _data_args(world), cfg(full), stage="stage1")
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run_sft(_model_args(tiny_model_dir), _data_args(world), cfg(killed), stage="stage1", callbacks=[Crash()])
    assert (killed / "checkpoint-3").is_dir() and not (killed / "checkpoint-6").exists()

    steps = []

    class Count(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps.append(state.global_step)

    run_sft(_model_args(tiny_model_dir), _data_args(world), cfg(killed, resume_from_checkpoint="auto"),
            stage="stage1", callbacks=[Count()])
    assert steps == [4, 5, 6], "the second run must continue from checkpoint-3, not restart"
    ref, resumed = trainer_losses(full), trainer_losses(killed)
    assert sorted(resumed) == sorted(ref) == [1, 2, 3, 4, 5, 6]
    assert len(set(ref.values())) > 1
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-6), step
    a, b = load_file(full / "model.safetensors"), load_file(killed / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("quantization", [None, "4bit"])
def test_lora_and_qlora_adapters_load_back_and_merge(tiny_model_dir, world, tmp_path, quantization):
    from peft import PeftModel
    from transformers import TrainerCallback

    from emocaliber.modeling import load_model_and_processor

    seen: dict[str, int] = {}

    class Inspect(TrainerCallback):  # what was actually trained: 4-bit base layers, trainable LoRA only
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["linear4bit"] = sum(type(m).__name__ == "Linear4bit" for m in model.modules())
            seen["trainable_non_lora"] = sum(p.requires_grad and "lora_" not in n for n, p in model.named_parameters())

    out = tmp_path / "adapter"
    run_sft(_model_args(tiny_model_dir, use_lora=True, lora_r=8, lora_alpha=16, quantization=quantization),
            _data_args(world), sft_config(out, save_strategy="steps", save_steps=2), stage="stage1",
            callbacks=[Inspect()])
    assert (seen["linear4bit"] > 0) == (quantization == "4bit") and seen["trainable_non_lora"] == 0
    for ckpt in (out, out / "checkpoint-2"):
        assert (ckpt / "adapter_model.safetensors").is_file() and missing_parts(ckpt) == [], ckpt
    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter) and not any("visual" in k for k in adapter)
    assert any(not torch.all(v == 0) for k, v in adapter.items() if "lora_B" in k), "LoRA B must have trained"

    model, processor = load_model_and_processor(out, dtype="float32")
    assert isinstance(model, PeftModel)
    record = read_records(world["stage1"])[0]
    image = world["root"] / record.image
    generate_from_image(model, processor, record, image)
    adapted_logits = _logits(model, processor, record, image)

    merged_dir = tmp_path / "merged"
    run_recipe_main("merge_lora", ["--adapter", str(out), "--out", str(merged_dir), "--dtype", "float32"])
    assert missing_parts(merged_dir) == [] and not (merged_dir / "adapter_config.json").exists()
    assert "stage1" in (merged_dir / "README.md").read_text()  # the adapter's card carries over
    with pytest.raises(FileNotFoundError, match="not a LoRA adapter"):
        merge_lora(merged_dir, tmp_path / "again")
    merged, merged_processor = load_model_and_processor(merged_dir, dtype="float32")
    assert type(merged).__name__ == "Qwen2_5_VLForConditionalGeneration"
    base = load_file(tiny_model_dir / "model.safetensors")
    weights = load_file(merged_dir / "model.safetensors")
    assert any(not torch.equal(base[k], weights[k]) for k in base if "layers" in k and "visual" not in k)
    assert all(torch.equal(base[k], weights[k]) for k in base if ".visual." in f".{k}")
    generate_from_image(merged, merged_processor, record, image)
    if quantization is None:  # merging must not change the function the adapter computes
        torch.testing.assert_close(_logits(merged, merged_processor, record, image), adapted_logits,
                                   rtol=1e-4, atol=1e-4)


def _logits(model, processor, record, image_path):
    from PIL import Image

    from emocaliber.prompts import build_messages

    with Image.open(image_path) as im:
        messages = build_messages(record, with_confidence=False, image=im.convert("RGB"), target=True)
    inputs = processor.apply_chat_template([messages], tokenize=True, return_dict=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.slow
def test_bench_prints_throughput_and_padding_for_both_collations(tiny_model_dir):
    # 64 images -> 128 rows: enough for the length-grouped sampler's megabatches (8 batches of 4) to sort.
    res = run_script([sys.executable, "bench/sft_bench.py", "--model", str(tiny_model_dir), "--n-train", "64",
                      "--steps", "3", "--batch-size", "4"])
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line for line in res.stdout.splitlines() if line.startswith(("random", "group_by_length"))]
    assert [r.split()[0] for r in rows] == ["random", "group_by_length"], res.stdout
    for row in rows:
        values = [float(v) for v in row.split()[1:]]
        assert values[0] > 0 and all(0 <= v < 1 for v in values[1:]), row
    random_pad, grouped_pad = (float(r.split()[2]) for r in rows)
    assert grouped_pad <= random_pad


@pytest.mark.parametrize("model", ["qwen2.5-vl-7b", "tiny"])
def test_shipped_recipe_configs_parse(model):
    """Every key of the shipped YAMLs is a real field; the 7B values are the release's
    (train/step1_example.sh and train/step2_example.sh in github.com/wdqqdw/EmoCaliber)."""
    from trl import SFTConfig, TrlParser

    for stage, lr in (("stage1", 1e-5), ("stage2", 4e-6)):
        parser = TrlParser((ModelArgs, DataArgs, SFTConfig))
        model_args, data_args, args = parse_args_and_config(
            parser, ["--config", str(RECIPES / model / f"{stage}.yaml"), "--use_cpu", "true", "--bf16", "false"])
        assert data_args.with_confidence == (stage == "stage2")  # the stages differ by config, not by script
        assert args.resume_from_checkpoint == "auto" and args.warmup_steps == 0.05
        if model == "tiny":
            assert args.max_length is None and model_args.dtype == "float32"
            continue
        assert args.learning_rate == lr and args.num_train_epochs == 1 and args.max_length == 2048
        assert args.per_device_train_batch_size * 8 * args.gradient_accumulation_steps == 128
        assert (model_args.min_pixels, model_args.max_pixels) == (256 * 28 * 28, 576 * 28 * 28)
        assert args.gradient_checkpointing and args.gradient_checkpointing_kwargs == {"use_reentrant": False}
        assert data_args.system_prompt == SYSTEM_PROMPT and model_args.dtype == "bfloat16"

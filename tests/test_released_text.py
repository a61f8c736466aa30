"""Training on the released VEC-CoT files uses their question and assistant text verbatim, and
``--print_examples`` shows what a recipe trains on.

The miniature VEC-CoT file below has the release's layout as far as it is public: ms-swift's ``messages`` +
``images`` rows (``--dataset`` in the release's ``train/step2_example.sh``), image paths
``images/<dataset folder>/<original path>``, and an assistant text the project would not write itself (a
capitalised label, a three-digit confidence, a newline between the parts). The released files themselves were
never available here, so the other shapes ms-swift reads are covered too.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from _sft_utils import build_sft_world, run_recipe_main, run_script, tiny_recipe_config, write_yaml
from fixtures_raw import write_image

from emocaliber.formats import from_vec_cot, to_vec_cot
from emocaliber.prompts import record_target
from emocaliber.records import read_records, write_jsonl
from emocaliber.train.configs import ConfigError, DataArgs
from emocaliber.train.data import load_split, records_to_dataset

CANDIDATES = ["amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness"]
IMAGE = "images/EmoSet-118K/image/contentment/contentment_00012.jpg"
QUESTION = ("Which emotion might this image evoke? Choose the most likely one from ['amusement', 'anger', 'awe', "
            "'contentment', 'disgust', 'excitement', 'fear', 'sadness']. Think step by step.\nRespond in the "
            "format: <think>{your reasoning}</think><answer>{your final answer}</answer>"
            "<confidence>{your confidence}</confidence>")
ANSWER = ("<think>\n<element>A woman reads on a sunlit porch, a cup of tea beside her.</element>\n"
          "<human>She smiles softly; her shoulders are relaxed.</human>\n"
          "<context>A quiet garden in the late afternoon.</context>\n"
          "<interaction>The warm light and her calm posture reinforce each other.</interaction>\n"
          "<analysis>The scene conveys peaceful satisfaction.</analysis>\n</think>\n"
          "<answer>Contentment</answer>\n<confidence>0.875</confidence>")


def _row(shape: str) -> dict:
    if shape == "messages":  # ms-swift's standard shape
        return {"messages": [{"role": "user", "content": "<image>" + QUESTION},
                             {"role": "assistant", "content": ANSWER}], "images": [IMAGE]}
    if shape == "conversations":  # the model card's Qwen content lists
        return {"conversations": [{"role": "user", "content": [{"type": "image", "image": IMAGE},
                                                              {"type": "text", "text": QUESTION}]},
                                  {"role": "assistant", "content": [{"type": "text", "text": ANSWER}]}]}
    return {"conversations": [{"from": "human", "value": "<image>" + QUESTION}, {"from": "gpt", "value": ANSWER}],
            "images": [IMAGE]}  # ShareGPT


def _release(tmp_path: Path, shape: str = "messages") -> tuple[Path, Path]:
    """(the VEC-CoT file, the image root) of a miniature release."""
    release = tmp_path / "VECBench"
    write_image(release / IMAGE, "contentment")
    cot = release / "VEC-CoT" / "stage2_43k_w_conf.jsonl"
    cot.parent.mkdir(parents=True)
    cot.write_text(json.dumps(_row(shape), ensure_ascii=False) + "\n", encoding="utf-8")
    return cot, release / "images"


@pytest.mark.parametrize("shape", ["messages", "conversations", "sharegpt"])
def test_imported_vec_cot_trains_on_the_released_question_and_answer_verbatim(tmp_path, shape):
    cot, images = _release(tmp_path, shape)
    from emocaliber.formats import import_released_files

    import_released_files(tmp_path / "records", cot=[cot])
    (record,) = read_records(tmp_path / "records" / cot.name)
    assert (record.task, record.ground_truth, record.confidence) == ("EmoSet-8", "contentment", 0.875)
    split = load_split(tmp_path / "records" / cot.name, image_root=images, need_confidence=True)
    (row,) = records_to_dataset(split, with_confidence=True, system_prompt="You are a helpful assistant.")
    assert row["prompt"][-1]["content"][1]["text"] == QUESTION
    assert row["completion"][0]["content"][0]["text"] == ANSWER
    # The project's rendering differs from the release's text: that is what must not be trained on.
    assert record_target(record, with_confidence=True) != ANSWER
    assert record.meta["prompt"] == QUESTION and record.meta["target"] == ANSWER
    # An export writes the release's text back: the round trip is exact.
    exported = to_vec_cot(record, style="messages", with_confidence=True, image_prefix="images/")
    assert exported["messages"][0]["content"] == "<image>" + QUESTION and exported["messages"][1]["content"] == ANSWER


def test_released_text_is_used_only_while_it_describes_the_record(tmp_path):
    from emocaliber.formats import released_target, training_messages

    record = from_vec_cot(_row("messages"))
    assert released_target(record, with_confidence=True) == ANSWER
    # A new confidence target (build_confidence_targets keeps meta) makes the released answer stale.
    changed = replace(record, confidence=0.4)
    messages = training_messages(changed, with_confidence=True)
    assert messages[-1]["content"][0]["text"] == record_target(changed, with_confidence=True)
    assert "<confidence>0.40</confidence>" in messages[-1]["content"][0]["text"]
    # Stage 1 on this record: neither the confidence question nor the confidence answer fits.
    stage1 = training_messages(record, with_confidence=False)
    assert "<confidence>" not in stage1[1]["content"][1]["text"] + stage1[-1]["content"][0]["text"]
    # Records the project wrote itself carry no released text and are rendered from their fields.
    ours = replace(record, meta={})
    assert training_messages(ours, with_confidence=True)[-1]["content"][0]["text"] == \
        record_target(ours, with_confidence=True)
    # A file whose assistant text is exactly the rendering keeps no copy of it.
    rendered = from_vec_cot(to_vec_cot(ours, style="messages", with_confidence=True))
    assert "target" not in rendered.meta


def test_stale_released_text_is_reported(tmp_path, caplog):
    cot, images = _release(tmp_path)
    from emocaliber.formats import import_released_files

    import_released_files(tmp_path / "records", cot=[cot])
    path = tmp_path / "records" / cot.name
    write_jsonl(path, [replace(r, confidence=0.4) for r in read_records(path)])
    split = load_split(path, image_root=images, need_confidence=True)
    with caplog.at_level("WARNING", logger="emocaliber"):
        records_to_dataset(split, with_confidence=True, system_prompt=None)
    assert "0 record(s) carry a released question and 1 a released answer text" in caplog.text


def test_print_examples_shows_the_imported_vec_cot_text_byte_for_byte(tiny_model_dir, tmp_path):
    """The acceptance run: import a VEC-CoT file with the script, then ask the stage-2 recipe what it trains on."""
    cot, images = _release(tmp_path)
    out = tmp_path / "records"
    done = run_script([sys.executable, "data_prep/import_released.py", "import", "--cot", str(cot), "--out", str(out)])
    assert done.returncode == 0, done.stderr
    never = tmp_path / "never-created"
    done = run_script([sys.executable, "recipes/stage2_sft.py", "--config", "recipes/tiny/stage2.yaml",
                       "--train_file", str(out / cot.name), "--image_root", str(images),
                       "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(never),
                       "--print_examples", "1"])
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert QUESTION in text and ANSWER + "<|im_end|>" in text, text
    prompt, completion = text.split("---- completion", 1)
    assert QUESTION in prompt and ANSWER not in prompt and ANSWER in completion
    assert "<|vision_start|><|image_pad|>×" in prompt and "<|im_start|>assistant\n" in prompt
    assert "shown 1 of 1 training examples" in text
    assert not never.exists()


def test_print_examples_for_grpo_shows_the_prompt_and_creates_nothing(tiny_model_dir, tmp_path, capsys):
    from trl import GRPOConfig

    from emocaliber.train.configs import ModelArgs
    from emocaliber.train.grpo import GRPOScriptArgs, run_grpo

    cot, images = _release(tmp_path)
    from emocaliber.formats import import_released_files

    import_released_files(tmp_path / "records", cot=[cot])
    out = tmp_path / "grpo-out"
    config = GRPOConfig(output_dir=str(out), use_cpu=True, bf16=False, report_to="none", num_generations=2,
                        per_device_train_batch_size=2, max_completion_length=32)
    data_args = DataArgs(train_file=str(tmp_path / "records" / cot.name), image_root=str(images),
                         with_confidence=True, print_examples=3)
    assert run_grpo(ModelArgs(model_name_or_path=str(tiny_model_dir)), data_args, GRPOScriptArgs(), config) is None
    text = capsys.readouterr().out
    assert QUESTION + "<|im_end|>\n<|im_start|>assistant\n" in text and ANSWER not in text
    assert "2 sampled by the model" in text and "ground truth 'contentment'" in text
    assert "shown 1 of 1 training examples" in text
    assert not out.exists()


def test_print_examples_is_validated():
    with pytest.raises(ConfigError, match="print_examples must be a whole number >= 0"):
        DataArgs(train_file="t.jsonl", print_examples=-1)


def test_stage1_recipe_prints_the_rendered_targets_of_project_records(tiny_model_dir, tmp_path, capsys):
    world = build_sft_world(tmp_path / "world", n_train=2)
    out = tmp_path / "stage1-out"
    cfg = write_yaml(tmp_path / "stage1.yaml", tiny_recipe_config(tiny_model_dir, world["stage1"], out))
    run_recipe_main("stage1_sft", ["--config", str(cfg), "--print_examples", "2", "--max_length", "4096"])
    text = capsys.readouterr().out
    records = read_records(world["stage1"])
    for record in records[:2]:
        assert record_target(record, with_confidence=False) + "<|im_end|>" in text
    assert record_target(records[2], with_confidence=False) not in text
    assert "example 2 of 2" in text and f"shown 2 of {len(records)} training examples" in text
    assert not out.exists()

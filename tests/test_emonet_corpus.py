"""EmoNet-Face Binary -> verification records, and that the existing training code reads them."""

import json

import pytest
from emonet_fixtures import write_binary
from PIL import Image

from emocaliber.emonet.corpus import VERIFY_TASK, build_verification_records, label_item, main
from emocaliber.emonet.data import BinaryItem, load_binary
from emocaliber.prompts import build_messages
from emocaliber.records import read_records
from emocaliber.rewards import get_reward_funcs


def _item(n, k):
    return BinaryItem("00001", "Anger", tuple(f"human-{i}" for i in range(n)), (True,) * k + (False,) * (n - k))


@pytest.mark.parametrize(("n", "k", "kind", "p_yes"), [
    (1, 0, "hard_no", 0.0), (3, 3, "hard_yes", 1.0), (1, 1, "soft", 2 / 3), (2, 1, "soft", 0.5),
    (3, 2, "soft", 0.6), (2, 2, "soft", 0.75),
])
def test_hard_labels_need_three_agreeing_votes_or_no_true_vote(n, k, kind, p_yes):
    assert label_item(_item(n, k)) == (kind, pytest.approx(p_yes))


def test_records_state_the_likelier_answer_with_its_probability():
    hard_yes, hard_no, tie, split = build_verification_records([_item(3, 3), _item(1, 0), _item(2, 1), _item(3, 2)])
    assert (hard_yes.ground_truth, hard_yes.confidence) == ("yes", 0.95)
    assert (hard_no.ground_truth, hard_no.confidence) == ("no", 0.95)
    assert (tie.ground_truth, tie.confidence) == ("yes", 0.5)
    assert (split.ground_truth, split.confidence) == ("yes", 0.6)
    assert build_verification_records([_item(3, 2), _item(3, 3)], soft="none") == [hard_yes]


def test_binary_file_to_records_file_and_the_training_prompt(tmp_path):
    path, truth = write_binary(tmp_path / "binary.csv")
    out = tmp_path / "verify.jsonl"
    assert main(["--binary", str(path), "--out", str(out), "--test-fraction", "0.3"]) == 0
    records = read_records(out)
    assert len(records) == len(truth)
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["by_kind"] == {"hard_no": 6, "hard_yes": 6, "soft": 8}
    by_image = {}
    for r in records:
        by_image.setdefault(r.image, set()).add(r.split)
        assert r.task == VERIFY_TASK and r.candidates == ["yes", "no"]
    assert all(len(s) == 1 for s in by_image.values())  # an image's pairs share a split
    user, assistant = build_messages(records[0], with_confidence=True, target=True)[1:]
    assert records[0].meta["emotion"] in user["content"][1]["text"]
    assert assistant["content"][0]["text"].startswith("<answer>")


def test_existing_sft_data_and_grpo_rewards_take_verification_records(tmp_path):
    from emocaliber.train.data import load_split, records_to_dataset

    path, _ = write_binary(tmp_path / "binary.csv")
    records = build_verification_records(load_binary(path))
    images = tmp_path / "root" / "images"
    images.mkdir(parents=True)
    for r in records:
        Image.new("RGB", (32, 32)).save(tmp_path / "root" / r.image)
    out = tmp_path / "verify.jsonl"
    from emocaliber.records import write_records

    write_records(out, records)
    split = load_split(out, image_root=tmp_path / "root", need_confidence=True)
    dataset = records_to_dataset(split, with_confidence=True, system_prompt="You are a helpful assistant.")
    assert len(dataset) == len(records) and "Does the face" in dataset[0]["prompt"][-1]["content"][1]["text"]
    parts = "".join(f"<{p}>x</{p}>" for p in ("element", "human", "context", "interaction", "analysis"))
    good = f"<think>{parts}</think><answer>yes</answer><confidence>0.8</confidence>"
    reward = get_reward_funcs("calibrated_log")[0]
    right, wrong = reward(completions=[good, good], ground_truth=["yes", "no"], candidates=[["yes", "no"]] * 2)
    assert right > wrong


@pytest.mark.parametrize("path", ["tiny/emonet_stage2.yaml", "qwen2.5-vl-7b/emonet_stage2.yaml"])
def test_emonet_sft_recipes_parse(path):
    from pathlib import Path

    from trl import SFTConfig, TrlParser

    from emocaliber.train.configs import DataArgs, ModelArgs, parse_args_and_config

    parser = TrlParser((ModelArgs, DataArgs, SFTConfig))
    config = Path(__file__).parent.parent / "recipes" / path
    _, data_args, args = parse_args_and_config(parser, ["--config", str(config), "--use_cpu", "true",
                                                        "--bf16", "false"])
    assert data_args.with_confidence and data_args.train_file.startswith("data/emonet/")
    assert "emonet" in args.output_dir

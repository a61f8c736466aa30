"""Conversions between records and TRL rows, verl parquet, the released test file and VEC-CoT files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import Dataset
from fixtures_raw import image_bytes, write_image
from PIL import Image

from emocaliber.formats import (
    FormatError,
    export_records,
    from_released_test,
    from_vec_cot,
    import_released_files,
    read_verl_parquet,
    record_from_trl,
    record_from_verl,
    to_released_test,
    to_trl_messages,
    to_trl_prompt_completion,
    to_vec_cot,
    write_verl_parquet,
)
from emocaliber.prompts import SYSTEM_PROMPT, record_prompt, record_target
from emocaliber.records import Record, RecordError, read_records, write_jsonl
from emocaliber.sources import SkipLog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "data_prep"))
import import_released as cli

REASONING = {"element": "a sunlit meadow", "human": "no people present", "context": "spring",
             "interaction": "flowers sway", "analysis": "calm and pleasant"}
EMOSET = "EmoSet-118K/image/contentment/contentment_00012.jpg"
FI = "FI/fear/fear_3.jpg"


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "images"
    write_image(root / EMOSET, "emoset")
    write_image(root / FI, "fi")
    return root


def records() -> list[Record]:
    return [
        Record(id="EmoSet-8/image/contentment/contentment_00012.jpg", task="EmoSet-8", image=EMOSET,
               candidates=["awe", "amusement", "contentment", "excitement", "anger", "sadness", "fear", "disgust"],
               ground_truth="contentment", split="train", source="EmoSet", reasoning=dict(REASONING),
               confidence=0.85),
        Record(id="FI-2/fear/fear_3.jpg", task="FI-2", image=FI, candidates=["positive", "negative"],
               ground_truth="negative", split="test", source="FI"),
    ]


def pixels(im: Image.Image) -> bytes:
    return im.convert("RGB").tobytes()


# --- TRL -----------------------------------------------------------------------------------------------------


def test_trl_prompt_completion_round_trip_and_trl_accepts_it(image_root):
    from trl.data_utils import is_conversational, prepare_multimodal_messages  # heavy import, only here

    rec = records()[0]
    row = to_trl_prompt_completion(rec, with_confidence=True, image_root=image_root)
    assert row["prompt"] == [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": record_prompt(rec,
                                                                                          with_confidence=True)}]},
    ]
    assert row["completion"] == [{"role": "assistant", "content": [
        {"type": "text", "text": record_target(rec, with_confidence=True)}]}]
    assert "<confidence>0.85</confidence>" in row["completion"][0]["content"][0]["text"]
    with Image.open(image_root / EMOSET) as original:
        assert pixels(row["images"][0]) == pixels(original)
    assert row["ground_truth"] == "contentment" and row["image_path"] == EMOSET and "image" not in row
    assert is_conversational(row)
    filled = prepare_multimodal_messages(row["prompt"], images=row["images"])
    assert filled[1]["content"][0]["image"] is row["images"][0]
    assert record_from_trl(row) == rec

    ds = Dataset.from_list([row, to_trl_prompt_completion(records()[1], with_confidence=False,
                                                          image_root=image_root)])
    back = [record_from_trl(r) for r in ds]
    assert back[0] == rec and back[1] == records()[1]


def test_a_model_answer_other_than_the_ground_truth_survives_the_trl_round_trip(image_root):
    """A stage-2 record built from the model's own response states its answer and keeps the gold label."""
    rec = Record.from_dict({**records()[0].to_dict(), "answer": "awe"})
    assert rec.to_dict()["answer"] == "awe" and "answer" not in records()[0].to_dict()
    row = to_trl_prompt_completion(rec, with_confidence=True, image_root=image_root)
    assert "<answer>awe</answer>" in row["completion"][0]["content"][0]["text"]
    assert row["ground_truth"] == "contentment"
    assert record_from_trl(row) == rec
    with pytest.raises(RecordError, match="answer 'calm' is not one of the candidates"):
        Record.from_dict({**records()[0].to_dict(), "answer": "calm"})


def test_trl_prompt_only_rows_for_grpo(image_root):
    rec = records()[1]
    row = to_trl_prompt_completion(rec, with_confidence=True, image_root=image_root, completion=False,
                                   system_prompt=None)
    assert "completion" not in row and [m["role"] for m in row["prompt"]] == ["user"]
    assert record_from_trl(row) == rec


def test_trl_messages_round_trip(image_root):
    rec = records()[0]
    row = to_trl_messages(rec, with_confidence=True, image_root=image_root)
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][2]["content"][0]["text"] == record_target(rec, with_confidence=True)
    assert record_from_trl(row) == rec
    row["messages"][1]["content"][1]["text"] = "Which colour is this?"
    with pytest.raises(FormatError, match="not the emocaliber prompt"):
        record_from_trl(row)


# --- verl ----------------------------------------------------------------------------------------------------


def test_verl_parquet_round_trip(tmp_path, image_root):
    path = tmp_path / "train.parquet"
    assert write_verl_parquet(records(), path, image_root=image_root, batch_size=1) == 2
    rows = list(read_verl_parquet(path))
    assert [record_from_verl(r) for r in rows] == [
        Record.from_dict({k: v for k, v in r.to_dict().items() if k not in ("reasoning", "confidence")})
        for r in records()]
    first = rows[0]
    assert first["data_source"] == "emocaliber" and first["ability"] == "emotion"
    assert first["reward_model"] == {"style": "rule", "ground_truth": "contentment"}
    assert first["extra_info"]["index"] == 0 and rows[1]["extra_info"]["index"] == 1
    assert first["prompt"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    user = first["prompt"][1]["content"]
    assert user == "<image>" + record_prompt(records()[0], with_confidence=True)
    assert user.count("<image>") == len(first["images"]) == 1
    assert first["images"][0]["bytes"] == image_bytes("emoset") and first["images"][0]["path"] == EMOSET
    table = pq.read_table(path)
    assert table.schema.field("images").type.value_type.names == ["bytes", "path"]


def test_verl_paths_instead_of_bytes(tmp_path, image_root):
    path = tmp_path / "val.parquet"
    write_verl_parquet(records()[1:], path, image_root=image_root, embed_images=False, data_source="vsa_conf")
    (row,) = read_verl_parquet(path)
    assert row["images"] == [{"image": str((image_root / FI).resolve())}]
    assert row["data_source"] == "vsa_conf"
    assert record_from_verl(row) == records()[1]
    row["images"] = []
    with pytest.raises(FormatError, match="1 <image> tokens for 0 images"):
        record_from_verl(row)


# --- released test file --------------------------------------------------------------------------------------

RELEASED_ROW = {
    "conversations": [{"role": "user", "content": [
        {"type": "image", "image": "images/EmoSet-118K/image/amusement/amusement_08258.jpg"},
        {"type": "text", "text": "Which emotion might this image evoke? Choose the most likely one from "
                                 "['awe', 'amusement']. Think step by step. Respond in the format: "
                                 "<think>{your reasoning}</think><answer>{your final answer}</answer>."}]}],
    "task": "EmoSet-8",
    "candidates": ["awe", "amusement", "contentment", "excitement", "anger", "sadness", "fear", "disgust"],
    "ground_truth": "Amusement",
}


def test_released_test_row_to_record_and_back_exactly():
    rec = from_released_test(RELEASED_ROW)
    assert rec.id == "EmoSet-8/image/amusement/amusement_08258.jpg"
    assert rec.image == "EmoSet-118K/image/amusement/amusement_08258.jpg"
    assert (rec.task, rec.ground_truth, rec.split, rec.source) == ("EmoSet-8", "amusement", "test", "EmoSet")
    assert rec.meta == {"prompt": RELEASED_ROW["conversations"][0]["content"][1]["text"]}
    back = to_released_test(rec)
    assert back == {**RELEASED_ROW, "ground_truth": "amusement"}
    assert from_released_test(back) == rec


def test_record_to_released_and_back(image_root):
    for rec in records():
        rec.reasoning = rec.confidence = None
        row = to_released_test(rec)
        assert row["conversations"][0]["content"][0] == {"type": "image", "image": "images/" + rec.image}
        assert row["conversations"][0]["content"][1]["text"] == record_prompt(rec, with_confidence=True)
        back = from_released_test(row)
        assert back.meta == {"prompt": record_prompt(rec, with_confidence=True)}
        back.meta = {}
        assert back.to_dict() == {**rec.to_dict(), "split": "test"}


def test_released_absolute_paths_and_extra_fields_survive():
    row = json.loads(json.dumps(RELEASED_ROW))
    row["conversations"][0]["content"][0]["image"] = "/data/VECBench/images/FI/fear/fear_3.jpg"
    row.update(task="UnbaisedEmo-6", candidates=["anger", "fear", "joy", "love", "sadness", "surprise"],
               ground_truth="fear", response="<answer>fear</answer>")
    rec = from_released_test(row)
    assert rec.task == "UnbiasedEmo-6" and rec.image == "FI/fear/fear_3.jpg"
    assert rec.meta["released_extra"] == {"response": "<answer>fear</answer>"}
    back = to_released_test(rec)
    assert back == {**row, "task": "UnbiasedEmo-6"}


@pytest.mark.parametrize("change, reason", [
    ({"task": "Emotion-99"}, "unknown_task"),
    ({"ground_truth": "joy"}, "unknown_label"),
    ({"conversations": [{"role": "user", "content": [{"type": "image", "image": "images/../../x.jpg"},
                                                     {"type": "text", "text": "q"}]}]}, "path_escapes_root"),
    ({"conversations": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]}, "missing_image"),
])
def test_released_bad_rows_name_their_reason(change, reason):
    with pytest.raises(FormatError) as err:
        from_released_test({**RELEASED_ROW, **change})
    assert err.value.reason == reason


# --- VEC-CoT -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["messages", "conversations"])
def test_vec_cot_round_trip(style):
    rec = records()[0]
    row = to_vec_cot(rec, style=style, with_confidence=True)
    back = from_vec_cot(row)
    assert back.meta == {"prompt": record_prompt(rec, with_confidence=True)}
    back.meta = {}
    assert back == rec
    assert to_vec_cot(from_vec_cot(row), style=style, with_confidence=True) == row


@pytest.mark.parametrize("style", ["messages", "conversations"])
def test_vec_cot_keeps_a_model_answer_other_than_the_ground_truth(style):
    rec = Record.from_dict({**records()[0].to_dict(), "answer": "awe"})
    row = to_vec_cot(rec, style=style, with_confidence=True)
    back = from_vec_cot(row)
    assert (back.answer, back.ground_truth) == ("awe", "contentment")
    back.meta = {}
    assert back == rec


def test_vec_cot_sharegpt_row_without_task_fields():
    target = ("<think><element>a dark alley</element><human>a man runs</human><context>night</context>"
              "<interaction>shadows follow him</interaction><analysis>threat</analysis></think>"
              "<answer>fear</answer><confidence>0.7</confidence>")
    prompt = ("Which emotion might this image evoke? Choose the most likely one from ['awe', 'amusement', "
              "'contentment', 'excitement', 'anger', 'sadness', 'fear', 'disgust']. Think step by step.")
    row = {"conversations": [{"from": "human", "value": "<image>" + prompt}, {"from": "gpt", "value": target}],
           "images": ["images/FI/fear/fear_3.jpg"]}
    rec = from_vec_cot(row)
    assert (rec.task, rec.ground_truth, rec.confidence, rec.split) == ("FI-8", "fear", 0.7, "train")
    assert rec.reasoning == {"element": "a dark alley", "human": "a man runs", "context": "night",
                             "interaction": "shadows follow him", "analysis": "threat"}
    # "0.7" is not the project's "0.70": the file's own answer text is kept for training and export.
    assert rec.id == "FI-8/fear/fear_3.jpg" and rec.meta == {"prompt": prompt, "target": target}
    broken = json.loads(json.dumps(row))
    broken["conversations"][1]["value"] = target.replace("<human>a man runs</human>", "")
    with pytest.raises(FormatError, match=r"lacks reasoning part\(s\) \['human'\]"):
        from_vec_cot(broken)
    broken["conversations"][1]["value"] = target.replace("0.7", "1.0")
    with pytest.raises(FormatError, match="strictly between 0 and 1"):
        from_vec_cot(broken)
    anonymous = json.loads(json.dumps(row))
    anonymous["images"] = ["images/somewhere/fear_3.jpg"]
    with pytest.raises(FormatError, match="cannot tell the task") as err:
        from_vec_cot(anonymous)
    assert err.value.reason == "unknown_task"


# --- whole files and the script ------------------------------------------------------------------------------


def test_import_counts_bad_lines_with_file_and_line(tmp_path):
    test_file = tmp_path / "test_8k.jsonl"
    good = json.dumps(RELEASED_ROW)
    other = json.loads(good.replace("amusement_08258", "awe_00001"))
    test_file.write_text("\n".join([good, "{not json", json.dumps({**RELEASED_ROW, "task": "Nope-3"}), "",
                                    json.dumps({**other, "ground_truth": "awe"}),
                                    json.dumps({**RELEASED_ROW, "ground_truth": "awe"})]) + "\n")  # same id as 1
    cot_file = tmp_path / "stage2_43k_w_conf.jsonl"
    write_jsonl(cot_file, [to_vec_cot(records()[0], style="messages", with_confidence=True)])
    written, skips = import_released_files(tmp_path / "out", test=test_file, cot=[cot_file])
    assert written == {"test.jsonl": 2, "stage2_43k_w_conf.jsonl": 1}
    assert {k: sum(v.values()) for k, v in skips.counts.items()} == {"malformed_line": 1, "unknown_task": 1,
                                                                       "duplicate": 1}
    assert skips.examples["duplicate"][0] == (f"{test_file}:6: id 'EmoSet-8/image/amusement/amusement_08258.jpg' "
                                              "was read at line 1; line skipped")
    assert skips.examples["malformed_line"][0].startswith(f"{test_file}:2: not valid JSON")
    assert skips.examples["unknown_task"][0].startswith(f"{test_file}:3: unknown task 'Nope-3'")
    assert [r.ground_truth for r in read_records(tmp_path / "out" / "test.jsonl")] == ["amusement", "awe"]
    (cot,) = read_records(tmp_path / "out" / "stage2_43k_w_conf.jsonl")
    assert cot.confidence == 0.85 and cot.reasoning == REASONING

    assert cli.main(["import", "--test", str(test_file), "--out", str(tmp_path / "cli")]) == 0
    assert cli.main(["import", "--test", str(test_file), "--out", str(tmp_path / "cli"), "--strict"]) == 1
    summary = json.loads((tmp_path / "cli" / "import_summary.json").read_text())
    assert summary["written"] == {"test.jsonl": 2} and summary["skipped"]["malformed_line"]["total"] == 1


def test_export_script_to_every_format(tmp_path, image_root):
    src = tmp_path / "records.jsonl"
    write_jsonl(src, records())
    out = tmp_path / "x"
    assert cli.main(["export", "--records", str(src), "--to", "verl", "--out", str(out / "t.parquet"),
                     "--image-root", str(image_root)]) == 0
    assert [r.id for r in map(record_from_verl, read_verl_parquet(out / "t.parquet"))] == [r.id for r in records()]
    assert cli.main(["export", "--records", str(src), "--to", "released", "--out", str(out / "t.jsonl")]) == 0
    assert [from_released_test(json.loads(line)).id for line in (out / "t.jsonl").read_text().splitlines()] == [r.id for r in records()]
    only_reasoned = tmp_path / "r.jsonl"
    write_jsonl(only_reasoned, records()[:1])
    assert cli.main(["export", "--records", str(only_reasoned), "--to", "swift-messages",
                     "--out", str(out / "s.jsonl")]) == 0
    (line,) = (out / "s.jsonl").read_text().splitlines()
    assert from_vec_cot(json.loads(line)).confidence == 0.85
    with pytest.raises(ValueError, match="give image_root"):
        export_records(records(), "verl", out / "y.parquet")


@pytest.mark.parametrize("fmt, name", [("released", "t.jsonl"), ("verl", "t.parquet")])
def test_export_stops_at_a_bad_record_naming_it_and_writes_nothing(tmp_path, image_root, capsys, fmt, name):
    src = tmp_path / "records.jsonl"
    rows = [r.to_dict() for r in records()]
    rows[1]["ground_truth"] = "calm"  # not a candidate
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "x" / name
    assert cli.main(["export", "--records", str(src), "--to", fmt, "--out", str(out),
                     "--image-root", str(image_root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"import_released.py: error: {src}:2: ")
    assert not out.parent.exists() or not any(out.parent.iterdir())  # neither the file nor its temp file


def test_skiplog_rejects_unknown_reasons():
    with pytest.raises(ValueError, match="unknown skip reason"):
        SkipLog().add("nope", "x", "y")

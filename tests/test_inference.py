"""The Python API (``emocaliber.EmoCaliber``) on the tiny Qwen2.5-VL saved like the released checkpoint."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from emocaliber.generation import SamplingSettings, record_request
from emocaliber.inference import (
    DEFAULT_TASK,
    EmoCaliber,
    InputError,
    Prediction,
    build_request,
    resolve_candidates,
)
from emocaliber.modeling import ModelNotFoundError
from emocaliber.parsing import parse_response
from emocaliber.prompts import build_prompt
from emocaliber.records import Record
from emocaliber.tasks import get_task

TOKENS = 12


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return EmoCaliber.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Two different 56x56 RGB images as arrays and as PNG files (same size: batches need no padding)."""
    root = tmp_path_factory.mktemp("pictures")
    # White and black: the random tiny model answers them differently (two noise images it answers alike).
    arrays = [np.full((56, 56, 3), 255, np.uint8), np.zeros((56, 56, 3), np.uint8)]
    paths = []
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(root / f"p{i}.png")
        paths.append(root / f"p{i}.png")
    return arrays, paths


def _user_text(request) -> str:
    return next(p["text"] for p in request.messages[-1]["content"] if p["type"] == "text")


def test_path_pil_and_array_give_the_same_greedy_prediction(model, pictures):
    arrays, paths = pictures
    by_path = model.predict(paths[0], max_new_tokens=TOKENS)
    by_str = model.predict(str(paths[0]), max_new_tokens=TOKENS)
    by_pil = model.predict(Image.open(paths[0]), max_new_tokens=TOKENS)
    by_array = model.predict(arrays[0], max_new_tokens=TOKENS)
    assert isinstance(by_path, Prediction) and by_path.raw
    assert by_path.raw == by_str.raw == by_pil.raw == by_array.raw


def test_prediction_fields_are_the_parsers_reading_of_the_raw_text(model, pictures):
    pred = model.predict(pictures[0][0], max_new_tokens=TOKENS)
    parsed = parse_response(pred.raw, pred.candidates, mode="strict")
    assert pred.candidates == list(get_task(DEFAULT_TASK).labels)
    assert (pred.label, pred.confidence, pred.valid) == (parsed.label, parsed.confidence, parsed.valid_format)
    assert pred.reasoning == parsed.reasoning and pred.problems == list(parsed.problems)
    assert pred.to_dict()["raw"] == pred.raw


def test_predict_sends_the_evaluation_runners_prompt(model, pictures, tmp_path):
    """The API and the runner must ask the same question, or API answers would not match reported numbers."""
    _, paths = pictures
    labels = list(get_task("WebEmo-7").labels)
    record = Record(id="x", task="WebEmo-7", image=paths[1].name, candidates=labels, ground_truth=labels[0],
                    split="test", source="WebEmo")
    expected = model.backend.generate([record_request(record, image_root=paths[1].parent)],
                                      SamplingSettings(max_new_tokens=TOKENS))[0][0]
    assert model.predict(paths[1], task="WebEmo-7", max_new_tokens=TOKENS).raw == expected


def test_predict_batch_matches_single_predictions_in_order(model, pictures):
    arrays, _ = pictures
    batch = model.predict_batch([arrays[1], arrays[0]], max_new_tokens=TOKENS)
    singles = [model.predict(a, max_new_tokens=TOKENS) for a in (arrays[1], arrays[0])]
    assert [p.raw for p in batch] == [p.raw for p in singles]
    assert batch[0].raw != batch[1].raw  # two images, two answers: order would show if it were lost


def test_sampling_is_reproducible_with_a_seed(model, pictures):
    a = model.predict(pictures[0][0], temperature=1.0, seed=3, max_new_tokens=TOKENS)
    b = model.predict(pictures[0][0], temperature=1.0, seed=3, max_new_tokens=TOKENS)
    assert a.raw == b.raw


def test_candidates_and_question_kind():
    assert resolve_candidates() == (list(get_task(DEFAULT_TASK).labels), False)
    assert resolve_candidates(task="FI-2") == (["positive", "negative"], True)
    assert resolve_candidates(task="webemo-25")[0] == list(get_task("WebEmo-25").labels)
    assert resolve_candidates(["negative", "Positive"]) == (["negative", "Positive"], True)
    assert resolve_candidates("joy, anger") == (["joy", "anger"], False)
    assert resolve_candidates(["positive", "negative", "neutral"])[1] is False
    image = np.zeros((56, 56, 3), np.uint8)
    request, labels = build_request(image, candidates=["positive", "negative"])
    assert _user_text(request) == build_prompt(labels, with_confidence=True, sentiment=True)
    assert "sentiment" in _user_text(request) and len(request.images) == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "NoSuchTask-3"}, "unknown task"),
    ({"candidates": ["joy", "joy"]}, "duplicates"),
    ({"candidates": ["joy", ""]}, "non-empty"),
    ({"candidates": ["joy"], "task": "FI-8"}, "not both"),
])
def test_bad_candidates_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        resolve_candidates(**kwargs)


@pytest.mark.parametrize("image, message", [
    ("https://example.com/cat.jpg", "URL"),
    ("data:image/png;base64,AAAA", "URL"),
    (np.zeros((56, 56), np.uint8), "H x W x 3 uint8"),
    (np.zeros((56, 56, 3), np.float32), "H x W x 3 uint8"),
    (b"\x89PNG", "file path, a PIL image"),
])
def test_unusable_images_are_refused_with_a_reason(model, image, message):
    with pytest.raises(InputError, match=message):
        model.predict(image, max_new_tokens=TOKENS)


def test_an_image_size_the_processor_refuses_is_an_input_error(model, tmp_path):
    """600 x 2 pixels opens fine, but Qwen2.5-VL's processor refuses the aspect ratio from inside generation."""
    Image.new("RGB", (600, 2)).save(tmp_path / "thin.png")
    for image in (tmp_path / "thin.png", Image.new("RGB", (2, 600)), np.zeros((2, 600, 3), np.uint8)):
        with pytest.raises(InputError, match=r"is \d+x\d+ pixels, aspect ratio 300:1"):
            model.predict(image, max_new_tokens=TOKENS)
    with pytest.raises(InputError, match=r"image .*thin\.png is 600x2"):
        model.predict(tmp_path / "thin.png", max_new_tokens=TOKENS)
    with pytest.raises(InputError, match="empty"):
        model.predict(np.zeros((0, 56, 3), np.uint8), max_new_tokens=TOKENS)


def test_missing_and_broken_image_files(model, tmp_path):
    with pytest.raises(InputError, match="image not found"):
        model.predict(tmp_path / "absent.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match="could not be decoded"):
        model.predict(tmp_path / "broken.jpg")


def test_missing_model_is_one_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model directory") as err:
        EmoCaliber.from_pretrained(tmp_path / "no-such-checkpoint")
    assert "\n" not in str(err.value)
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        EmoCaliber.from_pretrained("wudq/EmoCaliber")  # the release's hub id, not cached on this machine


def test_sharded_checkpoint_layout_loads(model, tiny_model_dir, tmp_path, pictures):
    """The 7B release is sharded (model-0000k-of-0000n.safetensors + index); the same weights saved that way
    must give the same answers."""
    from transformers import AutoProcessor

    model.backend.model.save_pretrained(tmp_path, max_shard_size="200KB")
    AutoProcessor.from_pretrained(tiny_model_dir).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors.index.json").is_file()
    sharded = EmoCaliber.from_pretrained(tmp_path)
    image = pictures[0][1]
    assert sharded.predict(image, max_new_tokens=TOKENS).raw == model.predict(image, max_new_tokens=TOKENS).raw


def test_import_stays_light():
    code = ("import sys, emocaliber; assert 'torch' not in sys.modules, 'import emocaliber pulled in torch'; "
            "from emocaliber import EmoCaliber, Prediction; assert EmoCaliber.__module__ == 'emocaliber.inference'")
    subprocess.run([sys.executable, "-c", code], check=True)

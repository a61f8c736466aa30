"""The demo page's parts without a browser: settings, per-bin accuracy, input refusals, the request handler."""

from __future__ import annotations

import html
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from emocaliber.inference import EmoCaliber, InputError, Prediction, load_image
from emocaliber.records import REASONING_PARTS, Record, dumps
from emocaliber.report import write_report
from emocaliber.serve import build_parser, main
from emocaliber.serve.app import Answerer, result_html
from emocaliber.serve.calibration import MetricsError, load_calibration
from emocaliber.serve.config import ConfigError, config_from_args
from emocaliber.serve.examples import write_examples
from emocaliber.tasks import MIKELS_8, POLARITY_2

TOKENS = 16


# ------------------------------------------------------------------------------------------------- settings
def test_the_bundled_settings_load_and_options_override_them():
    config = config_from_args(build_parser().parse_args(
        ["--model", "m", "--port", "8123", "--constrained", "--examples", "[{primary: fear, seed: 3}]"]))
    assert (config.model, config.port, config.constrained, config.host) == ("m", 8123, True, "127.0.0.1")
    assert config.examples == [{"primary": "fear", "seed": 3}]
    default = config_from_args(build_parser().parse_args(["--model", "m"]))
    assert default.constrained is False and len(default.examples) >= 3 and default.default_task == "EmoSet-8"


@pytest.mark.parametrize("yaml_text, message", [
    ("colour: red\n", "unknown setting(s) ['colour']"),
    ("port: seventy\n", "port must be a int, got 'seventy'"),
    ("examples: [{primary: joy}]\n", "examples[0].primary must be one of"),
    ("examples: [{primary: awe, secondary: fear, w: 0.2}]\n", "examples[0].w must be in [0.5, 1)"),
    ("default_task: EmoSet-9\n", "default_task: unknown task 'EmoSet-9'"),
    ("- a list\n", "expected a mapping of settings"),
])
def test_bad_settings_name_the_field(tmp_path, yaml_text, message):
    path = tmp_path / "serve.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        config_from_args(build_parser().parse_args(["--config", str(path), "--model", "m"]))
    assert message in str(e.value)


def test_main_refuses_a_missing_model_or_metrics_in_one_line(tmp_path, capsys):
    assert main([]) == 1
    assert "model is not set" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere" in err
    assert main(["--model", "m", "--metrics", str(tmp_path / "metrics.json")]) == 1
    assert "metrics file not found" in capsys.readouterr().err


def test_a_taken_port_is_one_line_and_exit_code_1(tiny_model_dir, capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--model", str(tiny_model_dir), "--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_the_upload_limit_reaches_the_server():
    from emocaliber.serve.app import launch_kwargs

    config = config_from_args(build_parser().parse_args(["--model", "m", "--max-upload-mb", "2.5"]))
    kwargs = launch_kwargs(config, [])
    assert kwargs["max_file_size"] == int(2.5 * 1024 * 1024)
    assert (kwargs["server_name"], kwargs["share"]) == ("127.0.0.1", False)


# ------------------------------------------------------------------------------------------------ examples
def test_examples_are_drawn_the_same_every_time(tmp_path):
    spec = [{"primary": "awe"}, {"primary": "anger", "secondary": "fear", "w": 0.6, "seed": 3},
            {"primary": "contentment", "style": "shifted"}]
    a, b = write_examples(spec, tmp_path / "a", 56), write_examples(spec, tmp_path / "b", 56)
    assert [p.read_bytes() for p, _ in a] == [p.read_bytes() for p, _ in b]
    assert [name for _, name in a] == ["awe", "anger 60% + fear", "contentment (shifted style)"]
    assert len({p.read_bytes() for p, _ in a}) == 3
    assert Image.open(a[0][0]).size == (56, 56)


# -------------------------------------------------------------------------------------------- calibration
def _evaluation(out: Path, per_bin: dict[int, tuple[int, int]], task: str = "SynthEmo-8") -> Path:
    """predictions.jsonl + metrics.json where bin k holds per_bin[k] = (n, right) answers at confidence k/10+0.05,
    plus two answers without a confidence."""
    rows = []
    reasoning = "<think>" + "".join(f"<{p}>x</{p}>" for p in REASONING_PARTS) + "</think>"
    for k, (n, right) in per_bin.items():
        for i in range(n):
            truth = MIKELS_8[i % 8]
            answer = truth if i < right else MIKELS_8[(i + 1) % 8]
            response = f"{reasoning}<answer>{answer}</answer><confidence>{k / 10 + 0.05:.2f}</confidence>"
            rows.append((f"{k}-{i}", truth, response))
    rows += [("none-0", "awe", f"{reasoning}<answer>awe</answer>"), ("none-1", "awe", "garbled")]
    lines = []
    for rid, truth, response in rows:
        record = Record(id=f"{task}/test/{rid}", task=task, image=f"i/{rid}.png", candidates=list(MIKELS_8),
                        ground_truth=truth, split="test", source="SynthEmo")
        lines.append(dumps({"record": record.to_dict(), "sample": 0, "response": response, "error": None}) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions.jsonl").write_text("".join(lines), encoding="utf-8")
    write_report(out / "predictions.jsonl", out, n_bootstrap=5)
    return out / "metrics.json"


def test_bins_count_what_the_predictions_say(tmp_path):
    metrics = _evaluation(tmp_path / "run", {2: (5, 1), 8: (20, 15), 9: (4, 4)})
    cal = load_calibration(metrics, 10)
    stat = cal.lookup("SynthEmo-8", 0.83)
    assert (stat.index, stat.n, stat.accuracy) == (8, 20, 0.75)
    assert stat.sentence(0.83) == ("When this model says 0.83 on SynthEmo-8, it was right 75% of the time, n=20 "
                                   "(answers with a confidence in [0.80, 0.90)).")
    top = cal.lookup("SynthEmo-8", 1.0)  # the last bin is closed
    assert (top.index, top.n, top.accuracy) == (9, 4, 1.0) and "[0.90, 1.00]" in top.sentence(1.0)
    empty = cal.lookup("SynthEmo-8", 0.5)
    assert empty.n == 0 and "nothing to compare 0.50 with" in empty.sentence(0.5)
    assert "2 of 31 answers stated no readable confidence" in cal.note


def test_a_task_outside_the_evaluation_uses_all_its_tasks_pooled(tmp_path):
    cal = load_calibration(_evaluation(tmp_path / "run", {3: (10, 3)}), 10)
    assert cal.scope_for("EmoSet-8") != "EmoSet-8" and cal.scope_for(None) == cal.scope_for("EmoSet-8")
    stat = cal.lookup("EmoSet-8", 0.31)
    assert (stat.n, stat.accuracy) == (10, 0.3) and "on all 1 tasks of this evaluation" in stat.sentence(0.31)


def test_predictions_are_found_beside_metrics_or_at_the_recorded_source(tmp_path):
    metrics = _evaluation(tmp_path / "run", {5: (4, 2)})
    moved = tmp_path / "elsewhere" / "metrics.json"
    moved.parent.mkdir()
    moved.write_text(metrics.read_text())
    assert load_calibration(moved).lookup("SynthEmo-8", 0.55).n == 4  # through metrics.json's "source"
    data = json.loads(metrics.read_text())
    data["source"] = str(tmp_path / "gone.jsonl")
    moved.write_text(json.dumps(data))
    with pytest.raises(MetricsError, match="keep predictions.jsonl beside metrics.json"):
        load_calibration(moved)
    moved.write_text("{not json")
    with pytest.raises(MetricsError, match="not a JSON file"):
        load_calibration(moved)


# ------------------------------------------------------------------------------------------------- images
def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` and whose pixel data is a few bytes: decoding it would
    fail (or, were the data there, allocate width * height * 3 bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


def test_the_pixel_limit_is_checked_from_the_header_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 6000, 5000)
    with pytest.raises(InputError, match=r"is 6000x5000 = 30,000,000 pixels, more than the limit of 1,000,000"):
        load_image(bomb, pixel_limit=1_000_000)
    big = tmp_path / "big.png"
    Image.new("RGB", (1001, 1000)).save(big)
    with pytest.raises(InputError, match="more than the limit"):
        load_image(big, pixel_limit=1_000_000)
    with pytest.raises(InputError, match="more than the limit"):
        load_image(Image.open(big), pixel_limit=1_000_000)
    assert load_image(big, pixel_limit=1_001_000).size == (1001, 1000)
    assert load_image(big).size == (1001, 1000)  # no limit unless asked


# ----------------------------------------------------------------------------------------------- handler
@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return EmoCaliber.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    return write_examples([{"primary": "sadness"}], tmp_path_factory.mktemp("pic"), 56)[0][0]


def _answerer(model, **overrides):
    args = ["--model", "m", "--max-new-tokens", str(TOKENS), *[x for k, v in overrides.items()
                                                               for x in (f"--{k.replace('_', '-')}", str(v))]]
    return Answerer(model, config_from_args(build_parser().parse_args(args)))


def _last(updates):
    *_, last = updates
    return last


def test_constrained_decoding_gives_the_untrained_model_a_complete_answer(model, picture):
    free = model.predict(picture, max_new_tokens=64)
    assert not free.valid  # random weights: no format of its own
    pred = model.predict(picture, task="SynthEmo-2", constrained=True, max_new_tokens=1024)
    assert pred.valid and pred.label in POLARITY_2 and 0 < pred.confidence < 1
    assert set(pred.reasoning) == set(REASONING_PARTS)


@pytest.mark.parametrize("task, custom, upload, message", [
    ("EmoSet-9", "", "picture", "unknown task 'EmoSet-9'"),
    ("EmoSet-8", "joy, joy", "picture", "candidates contain duplicates"),
    ("EmoSet-8", "", None, "no image: upload an image file"),
    ("EmoSet-8", "", "text", "could not be decoded: notes.txt"),
])
def test_bad_requests_are_one_message_in_the_page(model, picture, tmp_path, task, custom, upload, message):
    notes = tmp_path / "notes.txt"
    notes.write_text("words", encoding="utf-8")
    path = {"picture": str(picture), "text": str(notes), None: None}[upload]
    updates = list(_answerer(model).respond(path, task, custom))
    assert len(updates) == 1
    shown, result, *_ = updates[0]
    assert 'class="error"' in shown and message in html.unescape(shown) and result == ""
    assert str(tmp_path) not in shown  # the upload's name, not the server's path


def test_custom_candidates_replace_the_task(model, picture):
    updates = list(_answerer(model).respond(str(picture), "EmoSet-8", "calm, storm"))
    shown, result, *_ = updates[-1]
    assert "Answered in" in shown and "Candidates: calm, storm" in result
    assert "Generating" in updates[0][0]  # progress first, while the model runs


def test_a_failing_generation_is_a_message_and_the_next_request_is_served(model, picture, monkeypatch):
    answerer = _answerer(model)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "predict", broken)
    shown, result, *_ = _last(answerer.respond(str(picture), "EmoSet-8", ""))
    assert "generation failed (RuntimeError: out of memory)" in shown and result == ""
    monkeypatch.undo()
    shown, result, *_ = _last(answerer.respond(str(picture), "EmoSet-8", ""))
    assert "Answered in" in shown and 'id="answer-label"' in result


def test_model_text_is_shown_as_text_not_markup():
    pred = Prediction(label=None, confidence=0.4, reasoning={"element": "<script>alert(1)</script>"},
                      raw="<img src=x onerror=alert(1)>", valid=False, problems=["no <answer>"],
                      candidates=["a&b", "c"])
    page = result_html(pred)
    assert "<script>" not in page and "&lt;script&gt;" in page and "<img src=x" not in page
    assert "a&amp;b" in page and "(missing from the response)" in page
    assert 'style="width: 40.0%"' in page

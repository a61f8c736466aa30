"""The EmoNet-Face entry point end to end on the tiny Qwen2.5-VL and a generated hq.csv: every readout, the
report files, resuming (a finished run is reused, a killed run continues to the same bytes) and clear errors."""

import json

import pytest
from emonet_fixtures import human_ratings, latent, write_hq
from PIL import Image

from emocaliber.emonet.evaluate import EmoNetEvalConfig, EmoNetEvalError, main, run
from emocaliber.generation import get_backend

EMOTIONS = ("Elation", "Anger")
N_IMAGES = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("emonet")
    images = root / "images"
    images.mkdir()
    names = [f"{i:05d}" for i in range(N_IMAGES)]
    for i, name in enumerate(names[:-1]):  # the last image is missing: its items are error rows
        Image.new("RGB", (56, 56), (40 * i, 120, 200 - 30 * i)).save(images / f"{name}.jpg")
    write_hq(root / "hq.csv", human_ratings(latent(N_IMAGES, seed=2), seed=3), images=names)
    return root


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return get_backend(str(tiny_model_dir), "transformers", batch_size=4, progress=False)


def args(model, data, out, *extra):
    return ["--model", str(model), "--hq", str(data / "hq.csv"), "--image-root", str(data / "images"),
            "--image-ext", ".jpg", "--out", str(out), "--backend", "transformers", "--emotions", ",".join(EMOTIONS),
            "--max-new-tokens", "4", "--chunk-size", "3", "--batch-size", "4", "--n-bootstrap", "20",
            "--no-progress", *extra]


def config(model, data, out, **kw):
    return EmoNetEvalConfig(model=str(model), hq=str(data / "hq.csv"), image_root=str(data / "images"),
                            out=str(out), image_ext=".jpg", backend="transformers", emotions=EMOTIONS,
                            max_new_tokens=4, chunk_size=3, batch_size=4, n_bootstrap=20, progress=False, **kw)


@pytest.fixture(scope="module")
def full_run(tiny_model_dir, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    assert main(args(tiny_model_dir, data, out, "--readouts", "verbal,first_token,generative")) == 0
    return out


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_readout_writes_its_rows_and_the_report(full_run):
    for readout, n in (("verbal", N_IMAGES * 2), ("first_token", N_IMAGES * 2), ("generative", N_IMAGES)):
        rows = _rows(full_run / f"{readout}.jsonl")
        assert len(rows) == n
        errors = [r for r in rows if r["error"]]
        assert len(errors) == n // N_IMAGES and all("not found" in r["error"] for r in errors)
    p = [r["p_yes"] for r in _rows(full_run / "first_token.jsonl") if not r["error"]]
    assert all(0 < x < 1 for x in p)
    metrics = json.loads((full_run / "metrics.json").read_text())
    assert set(metrics["readouts"]) == {"verbal", "first_token", "generative"}
    first = metrics["readouts"]["first_token"]
    assert first["parse"]["parse_rate"] == pytest.approx(3 / 4)
    assert first["calibration"]["present_ge1/all"]["n_cells"] == 6
    assert metrics["n_images"] == N_IMAGES and metrics["emotions"] == list(EMOTIONS)
    for name in ("report.md", "per_emotion.csv", "per_emotion.png", "reliability.png", "run_config.json"):
        assert (full_run / name).is_file()
    assert "first_token" in (full_run / "report.md").read_text()


class Recording:
    """The real backend, counting generate calls and optionally dying on call ``die_at``."""

    def __init__(self, inner, die_at=None):
        self.inner, self.die_at, self.calls = inner, die_at, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _encode(self, texts, images):  # the first-token readout's forward passes
        self.calls += 1
        return self.inner._encode(texts, images)

    def generate(self, requests, settings):
        self.calls += 1
        if self.calls == self.die_at:
            raise KeyboardInterrupt
        return self.inner.generate(requests, settings)


def test_a_finished_run_is_reused(full_run, backend, tiny_model_dir, data, tmp_path):
    out = tmp_path / "again"
    out.mkdir()
    for name in ("verbal.jsonl", "run_config.json"):
        (out / name).write_bytes((full_run / name).read_bytes())
    counting = Recording(backend)
    run(config(tiny_model_dir, data, out, readouts=("verbal",)), backend=counting)
    assert counting.calls == 0
    assert (out / "verbal.jsonl").read_bytes() == (full_run / "verbal.jsonl").read_bytes()


def test_a_killed_run_continues_to_the_same_bytes(full_run, backend, tiny_model_dir, data, tmp_path):
    cfg = config(tiny_model_dir, data, tmp_path, readouts=("verbal",))
    with pytest.raises(KeyboardInterrupt):
        run(cfg, backend=Recording(backend, die_at=2))  # dies in the second chunk
    assert len(_rows(tmp_path / "verbal.jsonl")) == 3  # the first chunk is kept
    resumed = Recording(backend)
    run(cfg, backend=resumed)
    assert resumed.calls == 1  # the second chunk only: the third holds the missing image's error rows
    assert (tmp_path / "verbal.jsonl").read_bytes() == (full_run / "verbal.jsonl").read_bytes()


def test_a_cut_line_is_redone(full_run, backend, tiny_model_dir, data, tmp_path):
    text = (full_run / "first_token.jsonl").read_bytes()
    (tmp_path / "first_token.jsonl").write_bytes(text[: len(text) // 2])  # killed while writing
    (tmp_path / "run_config.json").write_bytes((full_run / "run_config.json").read_bytes())
    counting = Recording(backend)
    run(config(tiny_model_dir, data, tmp_path, readouts=("first_token",)), backend=counting)
    assert (tmp_path / "first_token.jsonl").read_bytes() == text
    assert counting.calls == 1  # the cut chunk only (the first is kept, the last has no loadable image)


def test_other_settings_are_refused_when_resuming(full_run, tiny_model_dir, data):
    changed = config(tiny_model_dir, data, full_run, readouts=("verbal",))
    changed.max_new_tokens = 5
    with pytest.raises(EmoNetEvalError, match="max_new_tokens"):
        run(changed)


def test_help_and_input_errors_are_one_line(tiny_model_dir, data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "hq.csv" in capsys.readouterr().out
    bad = args(tiny_model_dir, data, tmp_path)
    bad[bad.index("--hq") + 1] = str(tmp_path / "missing.csv")
    assert main(bad) == 1
    assert "LAION-AI/emonet-face" in capsys.readouterr().err
    assert main(args(tiny_model_dir, data, tmp_path, "--emotions", "Neutral")) == 1
    assert "none of the 40" in capsys.readouterr().err


def test_an_image_path_leaving_the_root_is_that_items_error(data):
    from emocaliber.emonet.evaluate import _Images

    images = _Images(data / "images", ".jpg")
    for bad in ("../hq", "/etc/passwd"):
        pil, error = images.get(bad)
        assert pil is None and bad in error
    assert images.get("00000")[0] is not None

"""SynthEmo: determinism, label statistics, oracle calibration, OOD style shift, teacher hygiene, the CLI."""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emocaliber import synthemo
from emocaliber.records import REASONING_PARTS, Record, read_records
from emocaliber.tasks import MIKELS_8, MIKELS_TO_POLARITY, POLARITY_2, get_task

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "data_prep" / "make_synthemo.py"
Z999 = 3.2905  # two-sided 99.9% normal quantile
SMALL = synthemo.WorldConfig(n_train=24, n_test=10, n_ood=8, seed=3)


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load_cli():
    spec = importlib.util.spec_from_file_location("make_synthemo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthemo")
    synthemo.build_world(root, SMALL)
    return root


def test_tasks_are_registered_with_their_groups():
    t8, t2, ood = get_task("SynthEmo-8"), get_task("synthemo-2"), get_task("SynthEmo-OOD-8")
    assert (t8.labels, t8.group, t8.is_sentiment) == (MIKELS_8, "Synth VER", False)
    assert (t2.labels, t2.group, t2.is_sentiment) == (POLARITY_2, "Synth VSA", True)
    assert (ood.labels, ood.group, ood.is_sentiment) == (MIKELS_8, "Synth OOD", False)


def test_same_seed_same_bytes_and_other_seed_differs(world, tmp_path):
    again = tmp_path / "again"
    synthemo.build_world(again, SMALL)
    first, second = _all_bytes(world), _all_bytes(again)
    assert first == second
    assert sum(k.endswith(".png") for k in first) == SMALL.n_train + SMALL.n_test + SMALL.n_ood
    other = tmp_path / "other"
    synthemo.build_world(other, synthemo.WorldConfig(**{**SMALL.__dict__, "seed": SMALL.seed + 1}))
    third = _all_bytes(other)
    assert third["train.jsonl"] != first["train.jsonl"]
    pngs = [k for k in first if k.endswith(".png")]
    assert sum(third[k] != first[k] for k in pngs) == len(pngs)


def test_every_record_validates_and_its_image_loads(world):
    train, test = read_records(world / "train.jsonl"), read_records(world / "test.jsonl")
    stage1, stage3 = read_records(world / "stage1.jsonl"), read_records(world / "stage3.jsonl")
    assert len(train) == 2 * SMALL.n_train and len(test) == 2 * SMALL.n_test + SMALL.n_ood
    assert [r.to_dict() for r in stage3] == [r.to_dict() for r in train]
    for r in train + test:
        assert Record.from_dict(r.to_dict()) == r
        assert r.reasoning is None and r.meta["oracle_label"] in r.candidates
        assert 0 < r.meta["oracle_confidence"] < 1
        with Image.open(world / r.image) as im:
            im.load()
            assert im.size == (SMALL.image_size, SMALL.image_size) and im.mode == "RGB"
    assert len({r.id for r in train + test}) == len(train) + len(test)
    by_task = {t: [r for r in train + test if r.task == t] for t in synthemo.TASKS}
    assert {r.split for r in by_task["SynthEmo-OOD-8"]} == {"test"}
    assert {r.meta["mix"]["style"] for r in by_task["SynthEmo-OOD-8"]} == {"shifted"}
    # SynthEmo-2 labels the very same images as SynthEmo-8, with the polarity of the same drawn emotion.
    eight = {r.image: r for r in by_task["SynthEmo-8"]}
    for r in by_task["SynthEmo-2"]:
        assert MIKELS_TO_POLARITY[eight[r.image].ground_truth] == r.ground_truth
        assert r.meta["mix"] == eight[r.image].meta["mix"]
    for r1, r in zip(stage1, train, strict=True):
        assert r1.reasoning is not None and set(r1.reasoning) == set(REASONING_PARTS)
        assert r1.ground_truth == r.ground_truth  # the drawn label by default (see the module docstring)


def test_stage1_oracle_labels_on_request(tmp_path):
    cfg = synthemo.WorldConfig(**{**SMALL.__dict__, "n_train": 60, "n_test": 0, "n_ood": 0,
                                  "stage1_label": "oracle", "label_noise": 0.5})
    synthemo.build_world(tmp_path, cfg)
    stage1, train = read_records(tmp_path / "stage1.jsonl"), read_records(tmp_path / "train.jsonl")
    assert all(s.ground_truth == s.meta["oracle_label"] for s in stage1)
    assert any(t.ground_truth != t.meta["oracle_label"] for t in train)  # noise 0.5: some drawn labels differ


@pytest.mark.parametrize("mix", [
    {"primary": "awe", "secondary": None, "w": 1.0, "style": "base"},
    {"primary": "fear", "secondary": "anger", "w": 0.6, "style": "base"},
    {"primary": "contentment", "secondary": "sadness", "w": 0.85, "style": "shifted"},
])
@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_label_frequencies_match_the_mixture(mix, noise):
    n = 20000
    rng = np.random.default_rng(11)
    counts = {e: 0 for e in MIKELS_8}
    for _ in range(n):
        counts[synthemo.draw_emotion(mix, noise, rng)] += 1
    w, secondary = mix["w"], mix["secondary"]
    for e in MIKELS_8:  # the documented law: the mixture, then a uniform replacement with probability noise
        p = noise / 8 + (1 - noise) * (w * (e == mix["primary"]) + (1 - w) * (e == secondary))
        bound = Z999 * math.sqrt(p * (1 - p) / n) + 1e-12
        assert abs(counts[e] / n - p) <= bound, (e, counts[e] / n, p)
    label, conf = synthemo.oracle(mix, noise)
    assert label == mix["primary"] and conf == pytest.approx((1 - noise) * w + noise / 8)
    pol, pconf = synthemo.oracle(mix, noise, sentiment=True)
    same = secondary is None or MIKELS_TO_POLARITY[secondary] == pol
    assert pol == MIKELS_TO_POLARITY[mix["primary"]]
    assert pconf == pytest.approx((1 - noise) * (1.0 if same else w) + noise / 2)
    freq = sum(c for e, c in counts.items() if MIKELS_TO_POLARITY[e] == pol) / n
    assert abs(freq - pconf) <= Z999 * math.sqrt(pconf * (1 - pconf) / n) + 1e-12


def test_oracle_is_calibrated_over_a_large_draw():
    """Records from the real generator (pixels skipped): correct answers sum to the confidences, per task."""
    from emocaliber.metrics import ece

    cfg = synthemo.WorldConfig(n_train=6000, seed=5)
    records = [r for i in range(cfg.n_train) for r in synthemo._image_records(cfg, "train", i, f"x/{i}.png")]
    for task in ("SynthEmo-8", "SynthEmo-2"):
        recs = [r for r in records if r.task == task]
        conf = np.array([r.meta["oracle_confidence"] for r in recs])
        correct = np.array([r.meta["oracle_label"] == r.ground_truth for r in recs], dtype=float)
        sd = math.sqrt(float(np.sum(conf * (1 - conf))))
        assert abs(correct.sum() - conf.sum()) <= Z999 * sd
        summary = synthemo.oracle_summary(recs)
        assert summary["n"] == len(recs)
        assert summary["accuracy"] == pytest.approx(correct.mean())
        assert summary["ece"] == pytest.approx(ece(conf, correct, n_bins=10))
        assert summary["ece"] < 0.03
        print(f"{task}: oracle accuracy {summary['accuracy']:.4f}, oracle ECE {summary['ece']:.4f}")
    mixed = sum(r.meta["mix"]["secondary"] is not None for r in records if r.task == "SynthEmo-8")
    p = cfg.mix_fraction
    assert abs(mixed / cfg.n_train - p) <= Z999 * math.sqrt(p * (1 - p) / cfg.n_train)


def test_summary_reports_oracle_metrics_per_split_and_task(world):
    import json

    summary = json.loads((world / "summary.json").read_text())
    test = read_records(world / "test.jsonl")
    assert set(summary["splits"]) == {"train/SynthEmo-8", "train/SynthEmo-2", "test/SynthEmo-8",
                                      "test/SynthEmo-2", "test/SynthEmo-OOD-8"}
    ood = summary["splits"]["test/SynthEmo-OOD-8"]
    expect = synthemo.oracle_summary([r for r in test if r.task == "SynthEmo-OOD-8"])
    assert ood["accuracy"] == pytest.approx(expect["accuracy"]) and ood["ece"] == pytest.approx(expect["ece"])
    assert "| test | SynthEmo-OOD-8 | 8 |" in (world / "summary.md").read_text()


def _pure(emotion: str, style: str, seeds: range) -> list[np.ndarray]:
    mix = {"primary": emotion, "secondary": None, "w": 1.0, "style": style}
    return [synthemo.render_image(mix, 56, np.random.default_rng(s)).astype(float) / 255 for s in seeds]


def test_ood_changes_style_but_not_colour_semantics():
    protos = np.stack([synthemo.prototype_rgb(e) for e in MIKELS_8])
    for e in MIKELS_8:
        for style in ("base", "shifted"):
            for img in _pure(e, style, range(10)):
                median = np.median(img.reshape(-1, 3), axis=0)
                assert MIKELS_8[int(np.argmin(np.abs(protos - median).sum(1)))] == e, (e, style)
        # pixel statistics: the shifted style carries much more high-frequency energy (hatching, outlines)
        def energy(imgs):
            return float(np.mean([np.abs(np.diff(i, axis=1)).mean() for i in imgs]))
        assert energy(_pure(e, "shifted", range(10))) > 1.5 * energy(_pure(e, "base", range(10)))
    assert get_task("SynthEmo-OOD-8").labels == get_task("SynthEmo-8").labels


def test_mixture_weight_is_visible_in_the_pixels():
    """The background colour of a blend sits at w along the segment between the two prototype colours."""
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(200):
        a, b = rng.choice(MIKELS_8, 2, replace=False)
        w = float(rng.uniform(0.55, 0.95))
        mix = {"primary": str(a), "secondary": str(b), "w": w, "style": "base"}
        img = synthemo.render_image(mix, 56, rng).astype(float) / 255
        colour = np.median(img.reshape(-1, 3), axis=0)
        ca, cb = synthemo.prototype_rgb(str(a)), synthemo.prototype_rgb(str(b))
        w_hat = float(np.dot(colour - cb, ca - cb) / np.dot(ca - cb, ca - cb))
        errors.append(abs(w_hat - w))
    assert np.median(errors) < 0.05 and np.quantile(errors, 0.9) < 0.15


def _random_mix(rng: np.random.Generator) -> dict:
    return synthemo.sample_mix(rng, mix_fraction=0.6, w_range=(0.55, 0.95),
                               style=str(rng.choice(["base", "shifted"])))


def test_teacher_never_names_a_candidate_before_the_analysis():
    candidates = [c.lower() for t in synthemo.TASKS for c in get_task(t).labels]
    for phrase in synthemo.pre_analysis_phrases():  # every phrase it can ever write there
        assert not [c for c in candidates if c in phrase.lower()], phrase
    rng = np.random.default_rng(0)
    for _ in range(1500):
        mix, sentiment = _random_mix(rng), bool(rng.integers(2))
        parts = synthemo.teacher_reasoning(mix, rng, sentiment=sentiment)
        assert list(parts) == list(REASONING_PARTS)
        before = " ".join(parts[p] for p in REASONING_PARTS[:-1]).lower()
        assert not [c for c in candidates if c in before], parts
        analysis = parts["analysis"].lower()
        assert mix["primary"] in analysis
        if mix["secondary"] is not None:  # ambiguity: both emotions, the heavier named first
            assert analysis.index(mix["primary"]) < analysis.index(mix["secondary"])
        if sentiment:
            assert MIKELS_TO_POLARITY[mix["primary"]] in analysis


def test_teacher_text_varies_is_short_and_within_its_vocabulary():
    vocab = set(synthemo.teacher_vocabulary())
    rng = np.random.default_rng(1)
    mix = {"primary": "anger", "secondary": "awe", "w": 0.7, "style": "base"}
    texts = {tuple(synthemo.teacher_reasoning(mix, rng).values()) for _ in range(60)}
    assert len(texts) >= 20
    for part in range(5):
        assert len({t[part] for t in texts}) >= 2, REASONING_PARTS[part]
    for _ in range(1000):
        parts = synthemo.teacher_reasoning(_random_mix(rng), rng, sentiment=bool(rng.integers(2)))
        for text in parts.values():
            words = re.findall(r"[a-z]+", text.lower())
            assert 3 <= len(words) <= 14, text
            assert set(words) <= vocab, set(words) - vocab


def test_analysis_wording_follows_the_mixture_weight():
    rng = np.random.default_rng(2)
    by_degree: dict[str, set[str]] = {}
    for w in (1.0, 0.9, 0.7, 0.58):
        mix = {"primary": "sadness", "secondary": None if w == 1.0 else "amusement", "w": w, "style": "base"}
        texts = {synthemo.teacher_reasoning(mix, rng)["analysis"] for _ in range(40)}
        by_degree[synthemo.mix_degree(w)] = texts
    assert len(by_degree) == 4
    for d1, texts1 in by_degree.items():
        for d2, texts2 in by_degree.items():
            if d1 != d2:
                assert not texts1 & texts2, (d1, d2)


def test_analysis_degree_reads_back_what_the_teacher_wrote():
    rng = np.random.default_rng(3)
    for w in (1.0, 0.9, 0.7, 0.58):
        for _ in range(30):
            mix = {"primary": "fear", "secondary": None if w == 1.0 else "awe", "w": w, "style": "base"}
            analysis = synthemo.teacher_reasoning(mix, rng, sentiment=bool(rng.integers(2)))["analysis"]
            assert synthemo.analysis_degree(analysis) == synthemo.mix_degree(w), analysis
    assert synthemo.analysis_degree("It is anger.") is None


def test_confusable_classes_are_always_blended_with_their_partner(tmp_path):
    cfg = synthemo.WorldConfig(n_train=300, n_test=0, n_ood=0, tasks=(synthemo.TASK_8,), mix_fraction=0.0,
                               confusions=(("fear", "awe"), ("awe", "fear")), confusion_w_min=0.6,
                               confusion_w_max=0.65)
    synthemo.build_world(tmp_path, cfg)
    mixes = [r.meta["mix"] for r in read_records(tmp_path / "train.jsonl")]
    confusable = [m for m in mixes if m["primary"] in ("fear", "awe")]
    assert confusable and all(m["secondary"] == {"fear": "awe", "awe": "fear"}[m["primary"]] for m in confusable)
    assert all(0.6 <= m["w"] <= 0.65 for m in confusable)
    assert all(m["secondary"] is None for m in mixes if m["primary"] not in ("fear", "awe"))


@pytest.mark.parametrize("confusions, needle", [
    ((("fear", "fear"),), "not a pair of two different emotions"),
    ((("fear", "joy"),), "not a pair of two different emotions"),
    ((("fear", "awe"), ("fear", "anger")), "more than one partner"),
])
def test_bad_confusions_are_refused(confusions, needle):
    with pytest.raises(ValueError, match=needle):
        synthemo.WorldConfig(confusions=confusions).validate()


def test_tokenizer_corpus_covers_the_vocabulary():
    text = " ".join(synthemo.tokenizer_corpus()[1:]).lower()  # skip the plain word list
    missing = [w for w in synthemo.teacher_vocabulary() if not re.search(rf"\b{w}\b", text)]
    assert not missing


def test_cli_help_explains_every_option():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                         check=True).stdout
    parser = synthemo.build_parser()
    for action in parser._actions:
        for opt in action.option_strings:
            assert opt in out
        assert action.help
    assert "oracle" in out and "stage1.jsonl" in out


def test_cli_builds_a_world_and_prints_oracle_metrics(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--n-train", "12",
                           "--n-test", "6", "--seed", "1", "--tasks", "SynthEmo-8", "SynthEmo-OOD-8",
                           "--image-size", "84"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"test/SynthEmo-8: n=6 oracle accuracy=\d\.\d{4} oracle ECE=\d\.\d{4}", proc.stdout)
    assert re.search(r"test/SynthEmo-OOD-8: n=6 oracle accuracy", proc.stdout)
    assert {r.task for r in read_records(tmp_path / "train.jsonl")} == {"SynthEmo-8"}
    with Image.open(tmp_path / read_records(tmp_path / "test.jsonl")[0].image) as im:
        assert im.size == (84, 84)


@pytest.mark.parametrize("args, needle", [
    (["--n-train", "-5"], "--n-train: must be >= 0"),
    (["--seed", "-1"], "--seed: must be >= 0"),
    (["--n-test", "x"], "--n-test: expected a whole number"),
    (["--tasks", "FI-8"], "unknown task 'FI-8'"),
    (["--mix-fraction", "1.5"], "mix_fraction must be in [0, 1]"),
    (["--w-min", "0.3"], "0.5 <= w_min"),
    (["--image-size", "7"], "image_size must be in [28, 512]"),
    (["--confusions", "fear-awe"], "is not EMOTION:PARTNER"),
    (["--confusion-w", "0.4,0.6"], "0.5 <= confusion_w_min"),
    (["--confusion-w", "0.6"], "--confusion-w: expected two numbers like 0.55,0.7"),
])
def test_cli_rejects_bad_options_in_one_line(args, needle, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _load_cli().main(["--out", str(tmp_path / "out"), *args])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_cli_rejects_an_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(blocker / "sub"), "--n-train", "1"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write to output directory" in lines[0] and str(blocker) in lines[0]

"""Building VECBench from miniature raw trees: splits, de-duplication, image placement, bad input, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_raw import make_abstract, make_all, make_artphoto, make_emoset, make_fi, make_webemo

from emocaliber.records import Record, dumps, read_records, resolve_image
from emocaliber.sources import open_sources
from emocaliber.vecbench import BuildConfig, _with_split, build_vecbench, split_rank

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "data_prep"))
import build_vecbench as cli


def build(paths: dict, out: Path, **cfg):
    cfg.setdefault("progress", False)
    sources = open_sources(**paths, extract_to=out / "extracted")
    return build_vecbench(sources, BuildConfig(out=out, **cfg))


def by_task(records):
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(r.task, []).append(r)
    return out


def test_full_build_splits_every_task_by_its_policy(tmp_path):
    raw = make_all(tmp_path / "raw")
    out = tmp_path / "out"
    result = build(raw, out, test_size=1)
    train, test = by_task(read_records(out / "train.jsonl")), by_task(read_records(out / "test.jsonl"))
    sizes = {t: (len(train.get(t, [])), len(test.get(t, []))) for t in sorted(set(train) | set(test))}
    assert sizes == {
        "FI-8": (3, 1), "FI-2": (3, 1),                                # no split: 1 sampled to test, rest train
        "EmoSet-8": (2, 1),                                            # official train; test drawn from test.json
        "WebEmo-25": (2, 1), "WebEmo-7": (2, 1), "WebEmo-2": (2, 1),   # official train; test from test25.txt
        "Abstract-8": (0, 2), "Artphoto-8": (0, 2),                    # OOD: all non-tied / all, whatever the size
        "UnbiasedEmo-6": (0, 1),                                       # OOD: test only, sampled
    }
    assert test["FI-8"][0].image == test["FI-2"][0].image  # shared images are split together
    assert test["EmoSet-8"][0].meta["source_split"] == "test"
    assert {r.meta["source_split"] for r in train["EmoSet-8"]} == {"train"}
    assert test["WebEmo-25"][0].meta["url"] == "https://x.test/b/3_F_3.jpg"
    assert {r.ground_truth for r in test["Abstract-8"]} == {"contentment", "sadness"}
    assert all(r.split == "test" for rs in test.values() for r in rs)
    assert all(r.split == "train" for rs in train.values() for r in rs)

    s = result.summary
    assert s["tasks"]["EmoSet-8"]["unused"] == {"test_pool_not_sampled": 1, "val_split_not_used": 1}
    assert s["tasks"]["UnbiasedEmo-6"]["unused"] == {"test_pool_not_sampled": 2}
    assert s["tasks"]["Abstract-8"]["labels"] == {"contentment": {"train": 0, "test": 1},
                                                  "sadness": {"train": 0, "test": 1}}
    assert s["tasks"]["WebEmo-7"]["labels"] == {"joy": {"train": 1, "test": 0}, "anger": {"train": 1, "test": 0},
                                                "surprise": {"train": 0, "test": 1}}
    assert {k: v["total"] for k, v in s["skipped"].items()} == {"tie": 1, "non_image_file": 1,
                                                                "annotation_missing": 4}
    assert s["totals"] == {"train": 14, "test": 11, "dropped": 2, "errors": 0}
    md = (out / "summary.md").read_text()
    assert "| Abstract-8 | 0 | 2 | - |" in md and "| tie | policy | 1 | Abstract-8: 1 |" in md
    assert json.loads((out / "summary.json").read_text()) == s

    # Every image sits under <out>/images (hard links: same file, no copy) and resolves safely.
    for r in [r for rs in list(train.values()) + list(test.values()) for r in rs]:
        placed = resolve_image(out / "images", r.image)
        assert placed.is_file() and not placed.is_symlink()
    fi_img = out / "images" / test["FI-8"][0].image
    assert fi_img.stat().st_ino == (raw["fi"] / "emotion_dataset" / test["FI-8"][0].image[3:]).stat().st_ino


def test_same_seed_same_bytes_and_seed_changes_the_test_set(tmp_path):
    fi = make_fi(tmp_path / "raw", {"amusement": [f"amusement_{i}.jpg" for i in range(20)],
                                    "fear": [f"fear_{i}.jpg" for i in range(20)], "awe": [".DS_Store"]})
    (fi / "emotion_dataset" / "fear" / "fear_7.jpg").write_bytes(b"<html></html>")
    (fi / "emotion_dataset" / "amusement" / "amusement_3.jpg").write_bytes(b"")
    outs = [build({"fi": fi}, tmp_path / name, test_size=10, seed=seed, link_mode="none", workers=workers)
            for name, seed, workers in (("a", 1, 1), ("b", 1, 4), ("c", 2, 4))]
    files = ("train.jsonl", "test.jsonl", "summary.json", "summary.md")
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    test_a = {r.image for r in read_records(tmp_path / "a" / "test.jsonl")}
    test_c = {r.image for r in read_records(tmp_path / "c" / "test.jsonl")}
    assert test_a != test_c
    assert outs[0].summary["tasks"]["FI-8"]["test"] == 10 and outs[0].summary["tasks"]["FI-8"]["train"] == 28
    # The rule: the test set is the test_size images with the smallest seeded hash of the image path.
    images = sorted({r.image for r in read_records(tmp_path / "a" / "train.jsonl")} | test_a)
    assert test_a == set(sorted(images, key=lambda im: split_rank(1, im))[:10])


def test_bad_input_is_counted_by_reason_and_nothing_else_is_lost(tmp_path):
    raw = tmp_path / "raw"
    fi = make_fi(raw, {"awe": ["awe_1.jpg", "awe_2.jpg"], "fear": ["fear_1.jpg"]})
    (fi / "emotion_dataset" / "awe" / "awe_3.jpg").write_bytes(b"")
    (fi / "emotion_dataset" / "fear" / "fear_2.jpg").write_bytes(b"<html><body>Not Found</body></html>")
    good = (fi / "emotion_dataset" / "awe" / "awe_1.jpg").read_bytes()
    noisy = raw / "noise.jpg"
    from PIL import Image

    Image.effect_noise((64, 64), 60).convert("RGB").save(noisy, quality=95)
    (fi / "emotion_dataset" / "fear" / "fear_3.jpg").write_bytes(noisy.read_bytes()[:400])  # truncated
    emoset = make_emoset(raw, {
        "test": [["awe", "image/awe/awe_00001.jpg", "annotation/awe/awe_00001.json"]],
        "train": [["fear", "image/fear/fear_00002.jpg", "annotation/fear/fear_00002.json"],  # image missing
                  ["fear", "image/fear/fear_00003.jpg"],                                    # a third shape
                  ["awe", "../../../etc/awe.jpg", "annotation/awe/awe_x.json"],            # escapes the root
                  ["joyful", "image/joyful/joyful_00004.jpg", "annotation/joyful/joyful_00004.json"]],
    }, images=["image/awe/awe_00001.jpg"])
    art = make_artphoto(raw, ["sad_1.jpg", "happy_2.jpg"])
    abstract = make_abstract(raw, ["'abstract_0001.jpg',0,1,2,9,0,1,0,1", "'abstract_0002.jpg',1,x"],
                             ["abstract_0001.jpg"])
    webemo = make_webemo(raw, train=["https://x.test/1.jpg 3", "not a line"], test=[], cached=["1.jpg"])
    out = tmp_path / "out"
    result = build({"fi": fi, "emoset": emoset, "artphoto": art, "abstract": abstract, "webemo": webemo}, out,
                   test_size=1)
    skipped = {k: v["total"] for k, v in result.summary["skipped"].items()}
    assert skipped == {
        "zero_byte_image": 2, "html_not_image": 2, "corrupt_image": 2,  # FI-8 and FI-2 records of each file
        "missing_image": 1, "emoset_entry_shape": 1, "path_escapes_root": 1, "unknown_label": 2,
        "malformed_line": 2, "annotation_missing": 2,
    }
    assert result.n_errors == 13
    assert sorted(ex.split(": ")[0] for ex in result.summary["skipped"]["malformed_line"]["examples"]) == sorted([
        f"{abstract / 'ABSTRACT_groundTruth.csv'}:3", f"{webemo / 'train25.txt'}:2"])
    kept = read_records(out / "train.jsonl") + read_records(out / "test.jsonl")
    assert sorted(r.id for r in kept) == sorted([
        "FI-8/awe/awe_1.jpg", "FI-2/awe/awe_1.jpg", "FI-8/awe/awe_2.jpg", "FI-2/awe/awe_2.jpg",
        "FI-8/fear/fear_1.jpg", "FI-2/fear/fear_1.jpg", "EmoSet-8/image/awe/awe_00001.jpg",
        "Artphoto-8/sad_1.jpg", "Abstract-8/abstract_0001.jpg",
        "WebEmo-25/1.jpg", "WebEmo-7/1.jpg", "WebEmo-2/1.jpg"])
    assert (out / "images" / "FI" / "awe" / "awe_1.jpg").read_bytes() == good

    paths = ["--fi", str(fi), "--emoset", str(emoset), "--artphoto", str(art), "--no-progress"]
    assert cli.main([*paths, "--out", str(tmp_path / "lenient")]) == 0
    assert cli.main([*paths, "--out", str(tmp_path / "strict"), "--strict"]) == 1
    assert cli.main(["--fi", str(fi), "--out", str(tmp_path / "fi-strict"), "--strict", "--no-progress"]) == 1
    ok_fi = make_fi(tmp_path / "clean", {"awe": ["awe_1.jpg"]})
    assert cli.main(["--fi", str(ok_fi), "--out", str(tmp_path / "ok"), "--strict", "--no-progress"]) == 0


def test_no_verify_checks_existence_only(tmp_path):
    fi = make_fi(tmp_path / "raw", {"awe": ["awe_1.jpg"]})
    (fi / "emotion_dataset" / "awe" / "awe_2.jpg").write_bytes(b"\xff\xd8 garbage")
    (fi / "emotion_dataset" / "awe" / "awe_3.jpg").write_bytes(b"")
    result = build({"fi": fi}, tmp_path / "out", verify=False, link_mode="none")
    assert result.summary["tasks"]["FI-8"]["train"] + result.summary["tasks"]["FI-8"]["test"] == 2
    assert {k: v["total"] for k, v in result.summary["skipped"].items()} == {"zero_byte_image": 2}


def test_duplicates_by_content_when_verifying_and_by_path_always(tmp_path):
    raw = tmp_path / "raw"
    fi = make_fi(raw, {"awe": ["awe_1.jpg"], "fear": ["fear_1.jpg"]})
    shutil.copy(fi / "emotion_dataset" / "awe" / "awe_1.jpg", fi / "emotion_dataset" / "fear" / "fear_9.jpg")
    emoset = make_emoset(raw, {"test": [["awe", "image/awe/awe_00001.jpg", "annotation/awe/awe_00001.json"]],
                               "train": [["awe", "image/awe/awe_00001.jpg", "annotation/awe/awe_00001.json"],
                                         ["fear", "image/fear/fear_00002.jpg", "annotation/fear/fear_00002.json"]]})
    verified = build({"fi": fi, "emoset": emoset}, tmp_path / "v", test_size=0)
    dup = verified.summary["skipped"]["duplicate"]
    assert dup["by_group"] == {"FI-8": 1, "FI-2": 1, "EmoSet-8": 1}
    assert any("same bytes as FI/awe/awe_1.jpg" in ex for ex in dup["examples"])
    assert verified.summary["tasks"]["FI-8"]["train"] == 2
    # The EmoSet image listed in test.json and train.json stays a test candidate only, never a train item.
    assert [r.id for r in read_records(tmp_path / "v" / "train.jsonl") if r.task == "EmoSet-8"] == [
        "EmoSet-8/image/fear/fear_00002.jpg"]
    unverified = build({"fi": fi, "emoset": emoset}, tmp_path / "u", test_size=0, verify=False)
    assert unverified.summary["skipped"]["duplicate"]["by_group"] == {"EmoSet-8": 1}
    assert unverified.summary["tasks"]["FI-8"]["train"] == 3


@pytest.mark.parametrize("mode", ["copy", "symlink", "none"])
def test_link_modes(tmp_path, mode):
    art = make_artphoto(tmp_path / "raw", ["sad_1.jpg"])
    out = tmp_path / "out"
    build({"artphoto": art}, out, link_mode=mode)
    placed = out / "images" / "ArtPhoto" / "sad_1.jpg"
    roots = json.loads((out / "image_roots.json").read_text())
    assert roots == {"ArtPhoto": str(art.resolve())}
    if mode == "none":
        assert not (out / "images").exists()
        return
    assert placed.read_bytes() == (art / "sad_1.jpg").read_bytes()
    assert placed.is_symlink() == (mode == "symlink")
    if mode == "copy":
        assert placed.stat().st_ino != (art / "sad_1.jpg").stat().st_ino


def test_rerun_into_the_same_folder_is_idempotent(tmp_path):
    raw = make_all(tmp_path / "raw")
    out = tmp_path / "out"
    build(raw, out, test_size=1)
    first = {f: (out / f).read_bytes() for f in ("train.jsonl", "test.jsonl", "summary.json")}
    build(raw, out, test_size=1)
    assert {f: (out / f).read_bytes() for f in first} == first
    assert not (out / ".vecbench-work").exists()


@pytest.mark.parametrize("verify", [True, False])
def test_links_out_of_the_dataset_root_are_not_followed(tmp_path, verify):
    raw = tmp_path / "raw"
    fi = make_fi(raw, {"awe": ["awe_1.jpg"]})
    outside = make_fi(tmp_path / "elsewhere", {"x": ["private.jpg"]}) / "emotion_dataset" / "x"
    awe = fi / "emotion_dataset" / "awe"
    os.symlink(outside / "private.jpg", awe / "awe_2.jpg")  # a file link out of the root
    os.symlink(outside, awe / "linked")                     # a folder link out of it
    os.symlink("..", awe / "loop")                          # a folder link that would loop
    os.symlink("awe_1.jpg", awe / "awe_3.jpg")              # a link that stays inside: read at its target
    out = tmp_path / "out"
    result = build({"fi": fi}, out, verify=verify, link_mode="copy")
    kept = sorted(r.image for r in read_records(out / "train.jsonl") + read_records(out / "test.jsonl"))
    assert kept == ["FI/awe/awe_1.jpg", "FI/awe/awe_1.jpg"]  # the real file, not a link to it nor its "duplicate"
    skipped = result.summary["skipped"]
    assert skipped["path_escapes_root"]["total"] == 2  # the file link and the folder link out of the root
    assert any("awe_2.jpg is a link to" in ex for ex in skipped["path_escapes_root"]["examples"])
    assert any("linked is a link to " + str(outside) in ex for ex in skipped["path_escapes_root"]["examples"]), skipped
    assert not (out / "images" / "FI" / "awe" / "awe_2.jpg").exists()
    assert skipped["linked_file"]["total"] == 1 and skipped["linked_folder"]["total"] == 1  # awe_3, loop
    assert "non_image_file" not in skipped and "duplicate" not in skipped


def test_a_rebuild_serves_a_corrected_original(tmp_path):
    from PIL import Image

    art = make_artphoto(tmp_path / "raw", ["sad_1.jpg"])
    out = tmp_path / "out"
    for mode in ("copy", "hardlink", "symlink"):
        build({"artphoto": art}, out / mode, link_mode=mode)
    original = art / "sad_1.jpg"
    fixed = tmp_path / "fixed.jpg"
    Image.new("RGB", (16, 16), (0, 0, 255)).save(fixed)
    os.replace(fixed, original)  # a new file at the old path, as a re-download or a fix would leave it
    for mode in ("copy", "hardlink", "symlink"):
        build({"artphoto": art}, out / mode, link_mode=mode)
        assert (out / mode / "images" / "ArtPhoto" / "sad_1.jpg").read_bytes() == original.read_bytes(), mode


def test_cli_help_and_missing_sources(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "data_prep" / "build_vecbench.py"), "--help"],
                         capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0 and "--link-mode" in run.stdout and "--strict" in run.stdout
    assert cli.main(["--out", str(tmp_path / "o")]) == 2
    assert cli.main(["--fi", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    abstract = make_abstract(tmp_path, [], [])
    (abstract / "ABSTRACT_groundTruth.csv").write_text("'','Happy'\n")
    assert cli.main(["--abstract", str(abstract), "--out", str(tmp_path / "o"), "--no-progress"]) == 1


def test_split_rewrite_touches_only_the_field():
    full = Record(id="FI-8/a.jpg", task="FI-8", image="FI/a.jpg", candidates=["awe", "fear"], ground_truth="awe",
                  split="train", source="FI", confidence=0.5,
                  reasoning={p: p for p in ("element", "human", "context", "interaction", "analysis")},
                  meta={"split": "train", "note": 'say "split": "train"', "votes": {"awe": 1}})
    bare = Record(id="FI-2/b.jpg", task="FI-2", image="FI/b.jpg", candidates=["positive", "negative"],
                  ground_truth="positive", split="train", source="FI")
    for r in (full, bare):
        moved = json.loads(_with_split(dumps(r.to_dict()), "test"))
        assert moved == {**r.to_dict(), "split": "test"}

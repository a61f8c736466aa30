"""The six raw-dataset readers, image checks, safe zip extraction and the WebEmo downloader."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from fixtures_raw import (
    WEBEMO_CATEGORY_LINES,
    image_bytes,
    make_abstract,
    make_artphoto,
    make_emoset,
    make_fi,
    make_unbiasedemo,
    make_webemo,
    write_image,
    zip_bytes,
)
from PIL import Image

from emocaliber.records import Record
from emocaliber.sources import (
    AbstractSource,
    ArtPhotoSource,
    EmoSetSource,
    FISource,
    SkipLog,
    UnbiasedEmoSource,
    WebEmoSource,
    open_sources,
)
from emocaliber.sources.common import check_bytes, check_image
from emocaliber.sources.emoset import iter_json_array
from emocaliber.sources.unbiasedemo import ZipSafetyError, safe_extract_zip
from emocaliber.sources.webemo_download import DownloadConfig, download_one, download_webemo
from emocaliber.tasks import get_task


def rec(task, rel, folder, label, split, source, meta):
    """The expected on-disk form of a reader's record."""
    return {"id": f"{task}/{rel}", "task": task, "image": f"{folder}/{rel}", "candidates": list(get_task(task).labels),
            "ground_truth": label, "split": split, "source": source, "meta": meta}


def read(source, skips=None):
    skips = skips if skips is not None else SkipLog()
    return [r.to_dict() for r in source.records(skips)], skips


def counts(skips: SkipLog) -> dict[str, int]:
    return {reason: sum(c.values()) for reason, c in skips.counts.items()}


# --- FI ------------------------------------------------------------------------------------------------------


def test_fi_records_share_images_between_fi8_and_fi2(tmp_path):
    base = make_fi(tmp_path, {"amusement": ["amusement_1.jpg", ".DS_Store", "notes.txt"], "fear": ["fear_10.jpg"],
                              "digust": ["digust_1.jpg"]})
    got, skips = read(FISource(base))
    assert got == [
        rec("FI-8", "amusement/amusement_1.jpg", "FI", "amusement", "train", "FI", {"file": "amusement_1.jpg"}),
        rec("FI-2", "amusement/amusement_1.jpg", "FI", "positive", "train", "FI", {"file": "amusement_1.jpg"}),
        rec("FI-8", "fear/fear_10.jpg", "FI", "fear", "train", "FI", {"file": "fear_10.jpg"}),
        rec("FI-2", "fear/fear_10.jpg", "FI", "negative", "train", "FI", {"file": "fear_10.jpg"}),
    ]
    assert counts(skips) == {"hidden_file": 1, "non_image_file": 1, "unknown_label": 1}
    assert "digust" in skips.examples["unknown_label"][0]


def test_fi_accepts_the_folder_inside_too(tmp_path):
    base = make_fi(tmp_path, {"awe": ["awe_1.jpg"]})
    assert read(FISource(base / "emotion_dataset"))[0] == read(FISource(base))[0]


# --- EmoSet --------------------------------------------------------------------------------------------------


def test_emoset_both_entry_shapes_attributes_and_bad_entries(tmp_path):
    base = make_emoset(tmp_path, {
        "test": [["awe", "image/awe/awe_00001.jpg", "annotation/awe/awe_00001.json"],
                 ["awe", "image/awe/awe_00009.jpg"],
                 {"emotion": "awe"}],
        "val": [["anger", "image/anger/anger_00003.jpg", "annotation/anger/anger_00003.json"]],
        "train": [["amusement", "amusement_00004", "image/amusement/amusement_00004.jpg",
                   "annotation/amusement/amusement_00004.json"],
                  ["happy", "image/happy/happy_00006.jpg", "annotation/happy/happy_00006.json"],
                  ["fear", "../../outside.jpg", "annotation/fear/fear_00007.json"],
                  ["fear", "image/fear/bad\u0000.jpg", "annotation/fear/fear_00008.json"]],  # a NUL in the path
    }, annotations={
        "annotation/awe/awe_00001.json": {"emotion": "awe", "scene": "mountain", "object": ["Tree", "Sky"],
                                          "brightness": 0.6},
        "annotation/anger/anger_00003.json": {"emotion": "anger"},
        "annotation/amusement/amusement_00004.json": {"emotion": "amusement", "facial_expression": "happy"},
    })
    got, skips = read(EmoSetSource(base))
    assert got == [
        rec("EmoSet-8", "image/awe/awe_00001.jpg", "EmoSet-118K", "awe", "test", "EmoSet",
            {"file": "awe_00001.jpg", "source_split": "test",
             "attributes": {"brightness": 0.6, "object": ["Tree", "Sky"], "scene": "mountain"}}),
        rec("EmoSet-8", "image/anger/anger_00003.jpg", "EmoSet-118K", "anger", "train", "EmoSet",
            {"file": "anger_00003.jpg", "source_split": "val", "attributes": {}}),
        rec("EmoSet-8", "image/amusement/amusement_00004.jpg", "EmoSet-118K", "amusement", "train", "EmoSet",
            {"file": "amusement_00004.jpg", "source_split": "train", "image_id": "amusement_00004",
             "attributes": {"facial_expression": "happy"}}),
    ]
    assert counts(skips) == {"emoset_entry_shape": 2, "unknown_label": 1, "path_escapes_root": 2}
    assert any("control character" in ex for ex in skips.examples["path_escapes_root"])
    assert any("test.json" in ex and "entry 1" in ex for ex in skips.examples["emoset_entry_shape"])


def test_emoset_missing_annotation_is_a_warning_and_the_record_is_kept(tmp_path):
    base = make_emoset(tmp_path, {"train": [["fear", "image/fear/fear_00002.jpg", "annotation/fear/fear_00002.json"]]})
    got, skips = read(EmoSetSource(base))
    assert [r["id"] for r in got] == ["EmoSet-8/image/fear/fear_00002.jpg"]
    assert "attributes" not in got[0]["meta"]
    assert counts(skips) == {"annotation_missing": 1}
    assert skips.n_errors == 0


def test_emoset_malformed_entry_is_reported_with_line_and_the_rest_is_read(tmp_path):
    base = make_emoset(tmp_path, {"train": []})
    (base / "train.json").write_text(
        '[\n ["awe", "image/awe/awe_1.jpg" "annotation/awe/awe_1.json"],\n'
        ' ["fear", "image/fear/fear_2.jpg", "annotation/fear/fear_2.json"]\n]\n')
    got, skips = read(EmoSetSource(base))
    assert [r["ground_truth"] for r in got] == ["fear"]
    assert counts(skips) == {"malformed_line": 1, "annotation_missing": 1}
    assert "train.json:2 (entry 0)" in skips.examples["malformed_line"][0]


@pytest.mark.parametrize("chunk", [3, 7, 1 << 20])
def test_iter_json_array_streams_any_chunking(tmp_path, chunk):
    data = [["awe", f"image/awe/awe_{i:05d}.jpg", {"k": [i, "]"]}] for i in range(50)]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data, indent=1))
    skips = SkipLog()
    got = [obj for _, obj in iter_json_array(path, skips, group="x", chunk_chars=chunk)]
    assert got == data
    assert skips.total() == 0


# --- WebEmo --------------------------------------------------------------------------------------------------


def test_webemo_three_tasks_from_the_hierarchy_with_original_spellings(tmp_path):
    base = make_webemo(tmp_path, train=["https://x.test/a/1_F_1.jpg 1", "https://x.test/a/2_F_2.jpg 11"],
                       test=["https://x.test/b/3_F_3.jpg 22", "https://x.test/b/4_F_4.jpg?w=200 2"])
    got, skips = read(WebEmoSource(base))
    expected = []
    for url, name, idx, split, fine, mid, pol in [
        ("https://x.test/b/3_F_3.jpg", "3_F_3.jpg", 22, "test", "surprise", "surprise", "positive"),
        ("https://x.test/b/4_F_4.jpg?w=200", "4_F_4.jpg", 2, "test", "confusion", "confusion", "negative"),
        ("https://x.test/a/1_F_1.jpg", "1_F_1.jpg", 1, "train", "cheerfullness", "joy", "positive"),
        ("https://x.test/a/2_F_2.jpg", "2_F_2.jpg", 11, "train", "irritabilty", "anger", "negative"),
    ]:
        meta = {"url": url, "source_split": split, "label_index": idx}
        for task, label in (("WebEmo-25", fine), ("WebEmo-7", mid), ("WebEmo-2", pol)):
            expected.append(rec(task, name, "WebEmo", label, split, "WebEmo", meta))
    assert got == expected
    assert skips.total() == 0


def test_webemo_bad_lines_are_counted_with_file_and_line(tmp_path):
    lines = list(WEBEMO_CATEGORY_LINES)
    lines[0] = "('affektion', 'love', '+')"
    lines[3] = "('contentment', 'joy')"
    base = make_webemo(tmp_path, category_lines=lines, test=[], train=[
        "https://x.test/a/ok.jpg 24", "https://x.test/a/nolabel.jpg", "https://x.test/a/range.jpg 25",
        "https://x.test/a/word.jpg joy", "https://x.test/dir/ 5", "https://x.test/a/aff.jpg 0",
        "https://x.test/a/cont.jpg 3"])
    got, skips = read(WebEmoSource(base))
    assert [(r["task"], r["ground_truth"]) for r in got] == [("WebEmo-25", "zest"), ("WebEmo-7", "joy"),
                                                            ("WebEmo-2", "positive")]
    assert counts(skips) == {"malformed_line": 5, "unknown_label": 3}
    examples = skips.examples["malformed_line"]
    assert any(ex.startswith(f"{base / 'category.txt'}:4") for ex in examples)
    assert any(ex.startswith(f"{base / 'train25.txt'}:2") for ex in examples)
    assert any(ex.startswith(f"{base / 'train25.txt'}:5") and "names no file" in ex for ex in examples)


def test_webemo_cache_dir_option(tmp_path):
    base = make_webemo(tmp_path, train=["https://x.test/a/1_F_1.jpg 1"], test=[])
    source = WebEmoSource(base, cache_dir=tmp_path / "cache")
    record = next(source.records(SkipLog()))
    assert source.original_path(record) == tmp_path / "cache" / "1_F_1.jpg"


# --- Abstract ------------------------------------------------------------------------------------------------


def test_abstract_majority_votes_ties_and_bad_rows(tmp_path):
    base = make_abstract(tmp_path, [
        "'abstract_0001.jpg',0,1,2,9,0,1,0,1",
        "'abstract_0002.jpg',3,0,0,3,0,0,0,0",
        "'abstract_0003.jpg', 0, 0, 0, 0, 0, 0, 1, 7",
        "'abstract_0004.jpg',1,2",
        "'abstract_0005.jpg',0,0,x,0,0,0,0,0",
        "'../abstract_0006.jpg',0,9,0,0,0,0,0,0",
    ], ["abstract_0001.jpg", "abstract_0002.jpg", "abstract_0003.jpg"])
    got, skips = read(AbstractSource(base))
    assert got == [
        rec("Abstract-8", "abstract_0001.jpg", "Abstract", "contentment", "test", "Abstract",
            {"file": "abstract_0001.jpg", "votes": {"amusement": 0, "anger": 1, "awe": 2, "contentment": 9,
                                                    "disgust": 0, "excitement": 1, "fear": 0, "sadness": 1}}),
        rec("Abstract-8", "abstract_0003.jpg", "Abstract", "sadness", "test", "Abstract",
            {"file": "abstract_0003.jpg", "votes": {"amusement": 0, "anger": 0, "awe": 0, "contentment": 0,
                                                    "disgust": 0, "excitement": 0, "fear": 1, "sadness": 7}}),
    ]
    assert counts(skips) == {"tie": 1, "malformed_line": 2, "path_escapes_root": 1}
    assert skips.n_errors == 3  # the tie is policy, not bad input
    csv_path = base / "ABSTRACT_groundTruth.csv"
    assert [ex.split(": ")[0] for ex in skips.examples["malformed_line"]] == [f"{csv_path}:5", f"{csv_path}:6"]


def test_abstract_unknown_header_column_is_a_clear_error(tmp_path):
    base = make_abstract(tmp_path, [], [])
    (base / "ABSTRACT_groundTruth.csv").write_text("'','Happy','Anger'\n'a.jpg',1,2\n")
    with pytest.raises(ValueError, match=r"ABSTRACT_groundTruth.csv:1: .*unknown: \['Happy'\]"):
        read(AbstractSource(base))


# --- ArtPhoto ------------------------------------------------------------------------------------------------


def test_artphoto_prefix_labels_and_non_images(tmp_path):
    base = make_artphoto(tmp_path, ["amusement_11.jpg", "sad_4.jpg", "Awe_7.JPG", "happy_1.jpg", "noprefix.jpg"],
                         {"ReadMe.rtf": b"{\\rtf1}", ".DS_Store": b"\x00\x01"})
    got, skips = read(ArtPhotoSource(base))
    assert got == [
        rec("Artphoto-8", "Awe_7.JPG", "ArtPhoto", "awe", "test", "ArtPhoto", {"file": "Awe_7.JPG"}),
        rec("Artphoto-8", "amusement_11.jpg", "ArtPhoto", "amusement", "test", "ArtPhoto",
            {"file": "amusement_11.jpg"}),
        rec("Artphoto-8", "sad_4.jpg", "ArtPhoto", "sadness", "test", "ArtPhoto", {"file": "sad_4.jpg"}),
    ]
    assert counts(skips) == {"hidden_file": 1, "non_image_file": 1, "unknown_label": 2}


# --- UnbiasedEmo ---------------------------------------------------------------------------------------------


def test_unbiasedemo_nested_zip_and_duplicate_base_names(tmp_path):
    base = make_unbiasedemo(tmp_path, ["images/joy/dog/1.jpg", "images/sadness/dog/1.jpg", "images/love/baby/2.jpg"])
    source = UnbiasedEmoSource(base, extract_to=tmp_path / "ex")
    got, skips = read(source)
    assert got == [
        rec("UnbiasedEmo-6", "images/joy/dog/1.jpg", "UnbiasedEmo", "joy", "test", "UnbiasedEmo",
            {"file": "1.jpg", "subcategory": "dog"}),
        rec("UnbiasedEmo-6", "images/love/baby/2.jpg", "UnbiasedEmo", "love", "test", "UnbiasedEmo",
            {"file": "2.jpg", "subcategory": "baby"}),
        rec("UnbiasedEmo-6", "images/sadness/dog/1.jpg", "UnbiasedEmo", "sadness", "test", "UnbiasedEmo",
            {"file": "1.jpg", "subcategory": "dog"}),
    ]
    assert skips.total() == 0
    original = source.original_path(Record.from_dict(got[2]))
    assert original.read_bytes() == image_bytes("images/sadness/dog/1.jpg")
    # A second run finds the extraction marker and does not unpack again.
    original.unlink()
    assert len(read(UnbiasedEmoSource(base, extract_to=tmp_path / "ex"))[0]) == 2


def test_unbiasedemo_plain_images_zip_and_extracted_folder(tmp_path):
    base = make_unbiasedemo(tmp_path, ["images/fear/x/a.jpg"], nested=False)
    got, _ = read(UnbiasedEmoSource(base))  # extracts next to the zip, as the authors' instructions do
    assert [r["id"] for r in got] == ["UnbiasedEmo-6/images/fear/x/a.jpg"]
    assert (base / "images" / "fear" / "x" / "a.jpg").is_file()
    (base / "images.zip").unlink()
    assert [r["id"] for r in read(UnbiasedEmoSource(base))[0]] == ["UnbiasedEmo-6/images/fear/x/a.jpg"]


def test_zip_entries_escaping_the_target_are_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("images/joy/a/ok.jpg", b"ok")
        zf.writestr("../evil.jpg", b"x")
        zf.writestr("/abs/evil2.jpg", b"x")
        zf.writestr("images/../../evil3.jpg", b"x")
        link = zipfile.ZipInfo("images/joy/a/link.jpg")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "../../../../etc/passwd")
        zf.writestr(".", b"x")  # names the target folder itself: its temp file would land beside it
    zpath = tmp_path / "in" / "images.zip"
    zpath.parent.mkdir()
    zpath.write_bytes(buf.getvalue())
    target = tmp_path / "out" / "t"
    skips = SkipLog()
    assert safe_extract_zip(zpath, target, skips, group="UnbiasedEmo") == 1
    assert counts(skips) == {"zip_entry_unsafe": 5}
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["in/images.zip", "out/t/images/joy/a/ok.jpg"]
    assert not any(p.is_symlink() for p in tmp_path.rglob("*"))


def test_zip_total_size_is_capped(tmp_path):
    zpath = tmp_path / "big.zip"
    zpath.write_bytes(zip_bytes({"images/joy/a/1.jpg": b"\0" * 5000}))
    with pytest.raises(ZipSafetyError, match="exceeds the cap"):
        safe_extract_zip(zpath, tmp_path / "t", SkipLog(), group="x", max_total_bytes=1000)
    assert not any(p.is_file() for p in (tmp_path / "t").rglob("*"))


# --- image checks --------------------------------------------------------------------------------------------


def noisy_jpeg(size: int = 64) -> bytes:
    im = Image.effect_noise((size, size), 80).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("content, reason", [
    (noisy_jpeg()[: len(noisy_jpeg()) // 2], "corrupt_image"),
    (b"", "zero_byte_image"),
    (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "html_not_image"),
    (b"\n  <html>gone</html>", "html_not_image"),
    (b"\xff\xd8\xff\xe0 not really a jpeg", "corrupt_image"),
])
def test_check_image_rejects_bad_files(tmp_path, content, reason):
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    assert check_image(path, verify=True).reason == reason
    assert check_bytes(content).reason == reason


def test_check_image_accepts_images_and_hashes_their_bytes(tmp_path):
    a = write_image(tmp_path / "a.jpg", "one")
    b = write_image(tmp_path / "b.jpg", "one")
    c = write_image(tmp_path / "c.jpg", "two")
    png = tmp_path / "d.png"
    Image.new("L", (5, 3), 7).save(png)
    results = [check_image(p, verify=True) for p in (a, b, c, png)]
    assert all(r.ok for r in results)
    assert results[0].digest == results[1].digest != results[2].digest
    assert check_image(tmp_path / "missing.jpg", verify=False).reason == "missing_image"
    assert check_image(tmp_path, verify=False).reason == "missing_image"
    empty = tmp_path / "e.jpg"
    empty.write_bytes(b"")
    assert check_image(empty, verify=False).reason == "zero_byte_image"
    corrupt = tmp_path / "f.jpg"
    corrupt.write_bytes(b"\xff\xd8garbage")
    assert check_image(corrupt, verify=False).ok  # without verification the bytes are not read


def test_open_sources_keeps_the_vecbench_order(tmp_path):
    fi = make_fi(tmp_path, {"awe": ["awe_1.jpg"]})
    art = make_artphoto(tmp_path, ["sad_1.jpg"])
    assert [s.name for s in open_sources(artphoto=art, fi=fi)] == ["FI", "ArtPhoto"]
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        open_sources(fi=tmp_path / "nope")


# --- WebEmo downloader against a local server ----------------------------------------------------------------

GOOD = image_bytes("good", size=16)


class _Handler(BaseHTTPRequestHandler):
    hits: ClassVar[dict[str, int]] = {}

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        hits = self.hits
        hits[self.path] = hits.get(self.path, 0) + 1
        name = self.path.rsplit("/", 1)[-1]
        if name.startswith("slow"):
            threading.Event().wait(0.7)
        if name == "drip.jpg":  # headers at once, then a byte every 50 ms: each read is within the socket timeout
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            try:
                for i in range(len(GOOD)):
                    self.wfile.write(GOOD[i:i + 1])
                    self.wfile.flush()
                    threading.Event().wait(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        status, ctype, body = {
            "ok.jpg": (200, "image/jpeg", GOOD),
            "octet.jpg": (200, "application/octet-stream", GOOD),
            "html.jpg": (200, "text/html; charset=utf-8", b"<html>moved</html>"),
            "htmlasjpeg.jpg": (200, "image/jpeg", b"<html>moved</html>"),
            "empty.jpg": (200, "image/jpeg", b""),
            "corrupt.jpg": (200, "image/jpeg", noisy_jpeg()[:300]),
            "big.jpg": (200, "image/jpeg", b"\xff" * 5000),
            "gone.jpg": (404, "text/html", b"nope"),
        }.get(name, (200, "image/jpeg", GOOD))
        if name == "flaky.jpg" and hits[self.path] == 1:
            status, body = 503, b"busy"
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout case)


@pytest.fixture
def server():
    """A local HTTP server on 127.0.0.1 that stops at the end of the test (or after 60 s at the latest)."""
    _Handler.hits = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    guard = threading.Timer(60, httpd.shutdown)
    guard.daemon = True
    guard.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        guard.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


FAST = DownloadConfig(timeout=0.3, max_bytes=4000, retries=1, backoff=0.01, workers=4)


@pytest.mark.parametrize("name, status", [
    ("ok.jpg", "downloaded"), ("octet.jpg", "downloaded"), ("flaky.jpg", "downloaded"),
    ("html.jpg", "bad_content_type"), ("htmlasjpeg.jpg", "html_not_image"), ("empty.jpg", "zero_byte_image"),
    ("corrupt.jpg", "corrupt_image"), ("big.jpg", "image_too_large"), ("gone.jpg", "http_404"),
    ("slow.jpg", "timeout"), ("drip.jpg", "timeout"),
])
def test_download_one_checks_every_answer(server, tmp_path, name, status):
    dest = tmp_path / name
    start = time.monotonic()
    got, detail = download_one(f"{server}/img/{name}", dest, FAST)
    assert got == status, detail
    if name == "drip.jpg":  # the 0.3 s deadline holds for the body too (the whole drip takes 2 x len(GOOD) x 50 ms)
        assert time.monotonic() - start < 0.025 * len(GOOD)
    assert dest.exists() == (status == "downloaded")
    assert not dest.with_name(name + ".part").exists()
    if status == "downloaded":
        assert dest.read_bytes() == GOOD
    expected_hits = 2 if name in ("flaky.jpg", "slow.jpg", "drip.jpg") else 1  # transient failures: one retry
    assert _Handler.hits[f"/img/{name}"] == expected_hits


def test_download_refuses_non_http_urls(tmp_path):
    secret = tmp_path / "secret.jpg"
    write_image(secret)
    assert download_one(secret.as_uri(), tmp_path / "copy.jpg", FAST)[0] == "bad_url"
    assert not (tmp_path / "copy.jpg").exists()


def test_download_webemo_resumes_and_lists_failures(server, tmp_path):
    base = make_webemo(tmp_path, test=[f"{server}/a/ok.jpg 0", f"{server}/a/gone.jpg 1"],
                       train=[f"{server}/b/have.jpg 2", f"{server}/b/stale.jpg 3", f"{server}/c/ok.jpg 4",
                              "broken line"])
    cache = base / "images"
    write_image(cache / "have.jpg")
    (cache / "stale.jpg").write_bytes(b"<html>old error page</html>")
    (cache / "ok.jpg.part").write_bytes(b"half")
    failures = tmp_path / "failures.tsv"
    report = download_webemo(base, cfg=FAST, progress=False, failures_path=failures)
    assert dict(report.counts) == {"downloaded": 2, "present": 1, "http_404": 1, "index_malformed_line": 1}
    assert "/b/have.jpg" not in _Handler.hits and "/c/ok.jpg" not in _Handler.hits  # same cache name as /a/ok.jpg
    assert (cache / "stale.jpg").read_bytes() == GOOD and (cache / "ok.jpg").read_bytes() == GOOD
    assert not (cache / "ok.jpg.part").exists()
    assert failures.read_text().splitlines()[1].startswith(f"{server}/a/gone.jpg\thttp_404\t")
    again = download_webemo(base, cfg=FAST, progress=False)
    assert again.counts["present"] == 3 and again.counts["downloaded"] == 0
    # The reader finds what the downloader wrote.
    source = WebEmoSource(base)
    found = {source.original_path(r).name for r in source.records(SkipLog()) if source.original_path(r).exists()}
    assert found == {"ok.jpg", "have.jpg", "stale.jpg"}
    assert Path(cache / "ok.jpg").is_file()

"""The demo page in a real browser: `python -m emocaliber.serve` on the tiny checkpoint, driven by Playwright in
headless Debian chromium.

Playwright and chromium are requirements of this file, not options: without them the import or the launch fails
and so do the tests (`make test` installs both). The tiny checkpoint has random weights and cannot write the
answer format by itself, so the server decodes under the format's grammar (``--constrained``): the page then has
a label, a confidence and five parts to show, and what it shows is what the model generated. Its parts run long
(the grammar allows 600 characters each; 770-1,200 tokens in all on the test images), hence 2,048 new tokens. Screenshots are kept
under each test's tmp_path for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from emocaliber.records import REASONING_PARTS, Record, dumps
from emocaliber.report import write_report
from emocaliber.serve.app import PART_TITLES
from emocaliber.serve.examples import write_examples
from emocaliber.tasks import MIKELS_8

pytestmark = pytest.mark.slow  # a server start and a browser: about two minutes in all on two cores

TASK = "SynthEmo-8"
PIXEL_LIMIT = 1_000_000
ANSWER_TIMEOUT_MS = 180_000  # two cores shared with other test processes
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def chromium_executable() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed; `make test` installs it (apt-get install chromium)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_evaluation(out: Path) -> dict[int, tuple[int, int]]:
    """A metrics.json and its predictions.jsonl for SynthEmo-8: per confidence bin k, 3 + k answers of which k
    are right. Returns {bin: (n, right)}, counted here independently of the page's code."""
    rows, bins = [], {}
    for k in range(10):
        n = 3 + k
        bins[k] = (n, k)
        for i in range(n):
            truth = MIKELS_8[i % 8]
            answer = truth if i < k else MIKELS_8[(i + 1) % 8]
            record = Record(id=f"{TASK}/test/{k:02d}{i:02d}", task=TASK, image=f"images/{k}_{i}.png",
                            candidates=list(MIKELS_8), ground_truth=truth, split="test", source="SynthEmo")
            reasoning = "".join(f"<{p}>x</{p}>" for p in REASONING_PARTS)
            response = f"<think>{reasoning}</think><answer>{answer}</answer><confidence>{(k + 0.5) / 10:.2f}</confidence>"
            rows.append({"record": record.to_dict(), "sample": 0, "response": response, "error": None})
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions.jsonl").write_text("".join(dumps(r) + "\n" for r in rows), encoding="utf-8")
    write_report(out / "predictions.jsonl", out, n_bootstrap=10)
    return bins


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation")
    return out / "metrics.json", write_evaluation(out)


@pytest.fixture(scope="module")
def server(tiny_model_dir, evaluation, tmp_path_factory):
    """The page on a free loopback port; its output goes to server.log (shown when it fails to start)."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    port = free_port()
    cmd = [sys.executable, "-m", "emocaliber.serve", "--model", str(tiny_model_dir), "--port", str(port),
           "--metrics", str(evaluation[0]), "--default-task", TASK, "--constrained",
           "--max-image-pixels", str(PIXEL_LIMIT), "--max-new-tokens", "2048"]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer within 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, proc, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    page.goto(server[0], wait_until="domcontentloaded")
    page.wait_for_selector("#submit", timeout=60_000)
    page.wait_for_selector("#message", state="attached", timeout=60_000)  # Gradio renders it after the button
    # Every text the message area shows, in order, so a progress line that is replaced quickly is still seen.
    page.evaluate("""() => {
        window.__messages = [];
        const target = document.querySelector('#message');
        new MutationObserver(() => {
            const t = target.innerText.trim();
            if (t && window.__messages[window.__messages.length - 1] !== t) window.__messages.push(t);
        }).observe(target, {subtree: true, childList: true, characterData: true});
    }""")
    yield page
    context.close()


@pytest.fixture(scope="module")
def synthemo_images(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthemo")
    return [p for p, _ in write_examples([{"primary": "awe"}, {"primary": "sadness", "seed": 1}], out, 112)]


def upload_and_ask(page: Page, path: Path) -> None:
    clear = page.locator("#image-file button[aria-label='Clear']")
    if clear.count():  # a file from the last request is still there: remove it as a person would
        clear.click()
    page.locator("#image-file input[type=file]").set_input_files(str(path))
    page.locator("#image-file").get_by_text(path.name.rsplit(".", 1)[0]).first.wait_for(timeout=30_000)
    page.click("#submit")


def wait_for_answer(page: Page) -> None:
    page.wait_for_function("() => (document.querySelector('#message') || {}).innerText?.includes('Answered in')",
                           timeout=ANSWER_TIMEOUT_MS)


def test_an_uploaded_synthemo_image_gets_reasoning_a_label_and_a_confidence(page, server, evaluation,
                                                                            synthemo_images, tmp_path):
    upload_and_ask(page, synthemo_images[0])
    wait_for_answer(page)
    page.screenshot(path=str(tmp_path / "serve-result.png"), full_page=True)

    label = page.locator("#answer-label")
    assert label.get_attribute("data-label") in MIKELS_8
    assert label.inner_text().strip() == label.get_attribute("data-label")
    shown = page.locator("#answer-confidence").inner_text()
    confidence = float(re.search(r"Confidence\s+([0-9.]+)", shown).group(1))
    assert 0.0 <= confidence <= 1.0
    stated = float(page.locator("#answer-confidence").get_attribute("data-confidence"))
    assert confidence == pytest.approx(stated, abs=0.005)
    width = page.locator(".confidence-bar > div").evaluate("e => e.style.width")
    assert float(width.rstrip("%")) == pytest.approx(100 * stated, abs=0.05)

    sections = page.locator("section.reasoning-part")
    assert [sections.nth(i).get_attribute("data-part") for i in range(sections.count())] == list(REASONING_PARTS)
    for i, part in enumerate(REASONING_PARTS):
        assert sections.nth(i).locator("h3").inner_text() == PART_TITLES[part]
        body = sections.nth(i).locator("p").inner_text().strip()
        assert body and "missing from the response" not in body

    messages = page.evaluate("window.__messages")
    assert any(m.startswith("Generating...") for m in messages), messages  # progress was shown before the answer

    # The bin of this answer's confidence, as counted by write_evaluation.
    k = min(int(round(stated * 1e6) * 10 // 10**6), 9)
    n, right = evaluation[1][k]
    sentence = page.locator("#calibration").inner_text()
    assert f"on {TASK}, it was right {100 * right / n:.0f}% of the time, n={n}" in sentence
    assert page.locator("#reliability").is_visible()


def test_a_text_file_is_refused_in_the_page_and_the_next_image_is_answered(page, server, synthemo_images,
                                                                          tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("these are words, not pixels\n", encoding="utf-8")
    upload_and_ask(page, notes)
    error = page.locator("#message .error")
    error.wait_for(timeout=60_000)
    assert "could not be decoded: notes.txt" in error.inner_text()
    assert page.locator("#answer-label").count() == 0
    page.screenshot(path=str(tmp_path / "serve-error.png"), full_page=True)
    assert server[1].poll() is None

    upload_and_ask(page, synthemo_images[1])
    wait_for_answer(page)
    assert page.locator("#answer-label").get_attribute("data-label") in MIKELS_8
    assert page.locator("#message .error").count() == 0
    page.screenshot(path=str(tmp_path / "serve-after-error.png"), full_page=True)


def test_an_image_over_the_pixel_limit_is_refused_in_the_page(page, server, tmp_path):
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("RGB", (1100, 1000), (40, 80, 200)).save(big)  # 1.1 M pixels, over the server's 1 M
    upload_and_ask(page, big)
    error = page.locator("#message .error")
    error.wait_for(timeout=60_000)
    assert "big.png is 1100x1000 = 1,100,000 pixels, more than the limit of 1,000,000" in error.inner_text()
    assert server[1].poll() is None


def test_a_second_request_waits_for_the_first(browser, server, synthemo_images, tmp_path):
    """Two pages ask at once: the model serves one at a time, so the later request shows its place in Gradio's
    queue and starts generating only after the earlier one's last progress line."""
    pages = []
    for _ in range(2):
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        p = context.new_page()
        p.goto(server[0], wait_until="domcontentloaded")
        p.wait_for_selector("#submit", timeout=60_000)
        p.wait_for_selector("#message", state="attached", timeout=60_000)
        p.locator("#image-file input[type=file]").set_input_files(str(synthemo_images[0]))
        p.locator("#image-file").get_by_text(synthemo_images[0].stem).first.wait_for(timeout=30_000)
        p.evaluate("""() => { window.__log = [];
            const m = document.querySelector('#message');
            new MutationObserver(() => window.__log.push([Date.now(), m.innerText]))
              .observe(m, {subtree: true, childList: true, characterData: true}); }""")
        pages.append(p)
    for p in pages:
        p.click("#submit")
    for p in pages:
        wait_for_answer(p)
    logs = [p.evaluate("window.__log") for p in pages]
    (tmp_path / "messages.json").write_text(json.dumps(logs, indent=1))
    generating = [[t for t, text in log if "Generating..." in text] for log in logs]
    earlier, later = sorted(range(2), key=lambda i: generating[i][0])
    assert generating[earlier][-1] < generating[later][0], "the two requests generated at the same time"
    assert any(text.startswith("queue:") and t > generating[earlier][0] for t, text in logs[later]), logs[later]
    for p in pages:
        p.context.close()

#!/usr/bin/env python
"""Time from upload to answer on the demo page, in a real browser: `emocaliber serve` on a tiny checkpoint,
driven by Playwright in headless chromium (Debian's; `apt-get install chromium`).

For each of --requests uploads of a SynthEmo image it prints: upload to the first progress line ("Generating...",
the page's first sign of life), and upload to the answer on the page. The first request is the cold one (the
model's first forward pass). Without --model a tiny random Qwen2.5-VL is built in a temporary directory (seed 0);
it cannot write the answer format itself, so --constrained (the default here) decodes under the format's grammar,
as the page tests do; --no-constrained measures free generation up to --max-new-tokens. The target is the first
answer within 10 s on two CPU cores.

Example: python bench/serve_latency.py --requests 3
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def cpu_name() -> str:
    """Model name, family and model number from /proc/cpuinfo, and the cores this process may use."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    name = info.get("model name") or platform.processor() or platform.machine()
    return f"{name} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}), {cores} cores"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 180) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return time.perf_counter() - start
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the server did not answer within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint directory (default: a tiny random one, built now)")
    p.add_argument("--requests", type=int, default=3, help="uploads, one after the other (default 3)")
    p.add_argument("--constrained", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--max-new-tokens", type=int, default=2048,
                   help="the random model's constrained answers take 770-1,200 tokens (default 2048)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server (OMP_NUM_THREADS)")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from emocaliber.serve.examples import write_examples

    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        model = args.model
        if model is None:
            from emocaliber.modeling import build_tiny_model

            model = str(build_tiny_model(Path(tmp) / "tiny", seed=0))
        images = [path for path, _ in write_examples(
            [{"primary": e, "seed": i} for i, e in enumerate(("awe", "sadness", "anger", "contentment"))],
            Path(tmp) / "images", 56)]
        port = free_port()
        cmd = [sys.executable, "-m", "emocaliber.serve", "--model", model, "--port", str(port),
               "--max-new-tokens", str(args.max_new_tokens), "--default-task", "SynthEmo-8",
               "--constrained" if args.constrained else "--no-constrained"]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "GRADIO_ANALYTICS_ENABLED": "False"}
        launched = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_until_up(url, proc)
            up = time.perf_counter() - launched
            print(f"CPU: {cpu_name()}; server threads: {args.threads}; model: {model if args.model else 'tiny random'}"
                  f"; constrained: {args.constrained}; max_new_tokens: {args.max_new_tokens}")
            print(f"server start (launch to first page): {up:.1f} s")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                page = browser.new_page()
                page.goto(url, wait_until="domcontentloaded")
                page.wait_for_selector("#submit", timeout=60_000)
                answers = []
                for i in range(args.requests):
                    clear = page.locator("#image-file button[aria-label='Clear']")
                    if clear.count():
                        clear.click()
                    image = images[i % len(images)]
                    # Every text the message area shows, with its time, so a stale "Answered" of the last request
                    # is never taken for this one's.
                    t0 = page.evaluate("""() => { window.__log = [];
                        const m = document.querySelector('#message');
                        if (!window.__observer) {
                            window.__observer = new MutationObserver(() => window.__log.push([Date.now(),
                                (m.querySelector('.progress, .error') || {}).innerText || '']));
                            window.__observer.observe(m, {subtree: true, childList: true, characterData: true});
                        }
                        return Date.now(); }""")
                    page.locator("#image-file input[type=file]").set_input_files(str(image))
                    page.locator("#image-file").get_by_text(image.stem).first.wait_for(timeout=60_000)
                    uploaded = (page.evaluate("Date.now()") - t0) / 1000
                    page.evaluate("window.__log = []")
                    page.click("#submit")
                    # The last request's "Answered" stays on the page until this one's first progress line.
                    page.wait_for_function("""() => { const i = window.__log.findIndex(([t, x]) =>
                                                          /^(Generating|Error)/.test(x));
                        return i >= 0 && window.__log.slice(i).some(([t, x]) => /^(Answered|Error)/.test(x)); }""",
                                           timeout=300_000)
                    log = page.evaluate("window.__log")
                    first = next(i for i, (_, x) in enumerate(log) if x.startswith(("Generating", "Error")))
                    progress = (log[first][0] - t0) / 1000
                    answered, message = next(((t - t0) / 1000, x) for t, x in log[first:]
                                             if x.startswith(("Answered", "Error")))
                    label = page.locator("#answer-label").inner_text() if page.locator("#answer-label").count() else "-"
                    answers.append(answered)
                    print(f"request {i + 1} ({'cold' if i == 0 else 'warm'}): upload {uploaded:.2f} s, first progress "
                          f"{progress:.2f} s, answer {answered:.2f} s after the upload began  [{message.strip()}; "
                          f"label {label}]")
                browser.close()
            print(f"first answer: {answers[0]:.2f} s (target < 10 s); "
                  f"median of all {len(answers)}: {sorted(answers)[len(answers) // 2]:.2f} s")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

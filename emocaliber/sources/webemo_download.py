"""Fill the WebEmo image cache from the URLs in ``train25.txt`` / ``test25.txt``.

WEBEmo ships URLs only (Adobe Stock thumbnails from 2017), so expect link rot: 404s, HTML error pages served as
``.jpg``, empty bodies. Every download is checked before it counts: HTTP status, ``Content-Type`` (an image type
or a generic binary one), a size cap, and a full decode with PIL. Files are written to ``<name>.part`` and
renamed, so an interrupted run never leaves a half file under a real name, and a re-run skips every file already
present and valid (resume). Transient failures (timeouts, connection errors, HTTP 429/5xx) are retried with
exponential backoff; permanent ones are not.
"""

from __future__ import annotations

import argparse
import os
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from emocaliber.sources.common import SkipLog, check_bytes, check_image, find_root
from emocaliber.sources.webemo import INDEX_FILES, iter_index, url_cache_name

ACCEPTED_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


@dataclass
class DownloadConfig:
    timeout: float = 20.0  # seconds per connection attempt and for the whole body
    max_bytes: int = 10 * 1024 * 1024
    retries: int = 3  # extra attempts after the first, for transient failures only
    backoff: float = 1.0  # seconds before the first retry, doubled each time
    workers: int = 8
    user_agent: str = "emocaliber-webemo-downloader/0.1 (research; +https://github.com/wdqqdw/EmoCaliber)"


@dataclass
class DownloadReport:
    """Outcome counts (``downloaded``, ``present``, and one key per failure reason) and the first failures."""

    counts: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    max_failures_kept: int = 1000

    def add(self, url: str, status: str, detail: str) -> None:
        self.counts[status] += 1
        if status not in ("downloaded", "present") and len(self.failures) < self.max_failures_kept:
            self.failures.append((url, status, detail))


class _Failure(Exception):
    def __init__(self, reason: str, detail: str, transient: bool = False) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.transient = reason, detail, transient


def _fetch(url: str, cfg: DownloadConfig) -> bytes:
    """One attempt: the body if it looks like an image of acceptable size; raises _Failure otherwise."""
    request = urllib.request.Request(url, headers={"User-Agent": cfg.user_agent})
    deadline = time.monotonic() + cfg.timeout
    try:
        with urllib.request.urlopen(request, timeout=cfg.timeout) as resp:  # scheme checked by download_one
            ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype and not ctype.startswith(ACCEPTED_TYPES):
                raise _Failure("bad_content_type", f"Content-Type {ctype!r} is not an image")
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > cfg.max_bytes:
                raise _Failure("image_too_large", f"Content-Length {length} > {cfg.max_bytes}")
            chunks, size = [], 0
            # read1 returns what has arrived (one socket read), so a server that drips bytes meets the deadline
            # check; read(n) would wait for all n bytes.
            while chunk := resp.read1(64 * 1024):
                size += len(chunk)
                if size > cfg.max_bytes:
                    raise _Failure("image_too_large", f"body exceeds {cfg.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise _Failure("timeout", f"body not received within {cfg.timeout} s", transient=True)
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as e:
        transient = e.code == 429 or e.code >= 500
        raise _Failure(f"http_{e.code}", f"HTTP {e.code} {e.reason}", transient) from None
    except TimeoutError as e:
        raise _Failure("timeout", f"no answer within {cfg.timeout} s ({e})", transient=True) from None
    except (urllib.error.URLError, ConnectionError, OSError) as e:
        raise _Failure("network_error", str(getattr(e, "reason", e)), transient=True) from None


def download_one(url: str, dest: Path, cfg: DownloadConfig) -> tuple[str, str]:
    """Fetch one URL into ``dest``: returns (status, detail), status ``downloaded``, ``present`` or a reason."""
    if dest.exists() and check_image(dest, verify=True).ok:
        return "present", ""
    if urlsplit(url).scheme not in ("http", "https"):
        return "bad_url", f"only http(s) URLs are fetched: {url!r}"
    for attempt in range(cfg.retries + 1):
        try:
            data = _fetch(url, cfg)
        except _Failure as f:
            if not f.transient or attempt == cfg.retries:
                return f.reason, f.detail
            time.sleep(cfg.backoff * 2**attempt)
            continue
        result = check_bytes(data)
        if not result.ok:
            return result.reason, result.detail or "downloaded bytes are not a decodable image"
        tmp = dest.with_name(dest.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        return "downloaded", ""
    raise AssertionError("unreachable")


def iter_urls(index_dir: Path, skips: SkipLog) -> Iterator[tuple[str, str]]:
    """(url, cache name) for each distinct cache name in the index files, test file first."""
    seen: set[str] = set()
    for fname, _ in INDEX_FILES:
        path = index_dir / fname
        if not path.is_file():
            continue
        for _, url, _ in iter_index(path, skips):
            name = url_cache_name(url)
            if name and name not in seen:
                seen.add(name)
                yield url, name


def download_webemo(index_dir: str | Path, cache_dir: str | Path | None = None, *,
                    cfg: DownloadConfig | None = None, limit: int | None = None, progress: bool = True,
                    failures_path: str | Path | None = None) -> DownloadReport:
    """Download every WebEmo image not yet in ``cache_dir`` (default ``<index_dir>/images``).

    ``limit`` stops after that many URLs (a trial run). Every failure is listed in ``failures_path`` (TSV: url,
    reason, detail) when given; the report keeps counts and the first failures. At most ``4 * workers``
    downloads are queued at once, so memory stays flat.
    """
    cfg = cfg or DownloadConfig()
    index_dir = find_root(Path(index_dir), "WEBEmo")
    cache = Path(cache_dir) if cache_dir else index_dir / "images"
    cache.mkdir(parents=True, exist_ok=True)
    report = DownloadReport()
    skips = SkipLog()
    pending: dict[Future, str] = {}
    log_fh = open(failures_path, "w", encoding="utf-8") if failures_path else None  # noqa: SIM115
    if log_fh:
        log_fh.write("url\treason\tdetail\n")
    try:
        with ThreadPoolExecutor(max_workers=cfg.workers) as pool, \
                tqdm(desc="WebEmo images", unit="img", total=limit, disable=not progress) as bar:

            def drain(block_until: int) -> None:
                while len(pending) > block_until:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        url = pending.pop(fut)
                        status, detail = fut.result()
                        report.add(url, status, detail)
                        if log_fh and status not in ("downloaded", "present"):
                            log_fh.write(f"{url}\t{status}\t{' '.join(detail.split())}\n")
                        bar.update()
                    ok = report.counts["downloaded"] + report.counts["present"]
                    bar.set_postfix(ok=ok, failed=bar.n - ok)

            for i, (url, name) in enumerate(iter_urls(index_dir, skips)):
                if limit is not None and i >= limit:
                    break
                pending[pool.submit(download_one, url, cache / name, cfg)] = url
                drain(4 * cfg.workers)
            drain(0)
    finally:
        if log_fh:
            log_fh.close()
    for reason, per_group in skips.counts.items():
        report.counts[f"index_{reason}"] += sum(per_group.values())
    return report


# -------------------------------------------------------------- command line (download_webemo.py)
DOWNLOAD_HELP = """Download the WebEmo images listed in WEBEmo/train25.txt and test25.txt into a local cache.

Files are named by the URL's base name, which is how build_vecbench.py finds them. Re-running resumes: files
already present and decodable are skipped. Each download is checked (HTTP status, Content-Type, size cap, PIL
decode); transient failures are retried with exponential backoff. Every failure is listed in a TSV file.

Example:
  python data_prep/download_webemo.py --webemo raw/WEBEmo --workers 16
"""


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``emocaliber prepare webemo`` (``data_prep/download_webemo.py``)."""
    d = DownloadConfig()
    p = argparse.ArgumentParser(prog=prog, description=DOWNLOAD_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--webemo", required=True, help="WEBEmo folder with train25.txt / test25.txt")
    p.add_argument("--cache", help="image cache folder (default: <webemo>/images)")
    p.add_argument("--workers", type=int, default=d.workers, help=f"parallel downloads (default {d.workers})")
    p.add_argument("--timeout", type=float, default=d.timeout, help=f"seconds per attempt (default {d.timeout})")
    p.add_argument("--retries", type=int, default=d.retries, help=f"retries of transient failures ({d.retries})")
    p.add_argument("--backoff", type=float, default=d.backoff, help=f"first retry delay, doubled ({d.backoff} s)")
    p.add_argument("--max-bytes", type=int, default=d.max_bytes, help=f"size cap per image ({d.max_bytes})")
    p.add_argument("--limit", type=int, help="stop after this many URLs (trial run)")
    p.add_argument("--failures", help="TSV of failed URLs (default: <webemo>/download_failures.tsv)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    cfg = DownloadConfig(timeout=args.timeout, max_bytes=args.max_bytes, retries=args.retries,
                         backoff=args.backoff, workers=args.workers)
    failures = args.failures or str(Path(args.webemo) / "download_failures.tsv")
    report = download_webemo(args.webemo, args.cache, cfg=cfg, limit=args.limit, progress=not args.no_progress,
                             failures_path=failures)
    print(", ".join(f"{k}: {v}" for k, v in sorted(report.counts.items())) or "no URLs found")
    print(f"failures listed in {failures}")
    return 0

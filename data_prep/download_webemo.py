#!/usr/bin/env python
"""Download the WebEmo images listed in WEBEmo/train25.txt and test25.txt into a local cache.

Files are named by the URL's base name, which is how build_vecbench.py finds them. Re-running resumes: files
already present and decodable are skipped. Each download is checked (HTTP status, Content-Type, size cap, PIL
decode); transient failures are retried with exponential backoff. Every failure is listed in a TSV file.

Example:
  python data_prep/download_webemo.py --webemo raw/WEBEmo --workers 16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emocaliber.sources.webemo_download import DownloadConfig, download_webemo


def main(argv: list[str] | None = None) -> int:
    d = DownloadConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


if __name__ == "__main__":
    sys.exit(main())

"""Crawl throughput against the local mock board with delays off (images/s).

    .venv/bin/python bench/crawl_speed.py [--posts 300] [--size 512]

Runs the real `python -m crawlers crawl` (all three APIs) against tests/crawlers/mock_board.py
on 127.0.0.1 and prints what crawl_stats.json reports: the crawl's own wall time, so process
start-up is excluded. It measures the crawler (JSON paging, md5, Pillow decode, atomic
writes, fsync'd manifest), not any real board, which allows 1 request/s by default.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "crawlers"))
from mock_board import MockBoard, MockPost  # noqa: E402


def jpeg(post_id: int, size: int) -> bytes:
    # A smooth gradient plus a little noise: a realistic size for a JPEG illustration.
    rng = np.random.default_rng(post_id)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (size, 1)), np.full((size, size), post_id % 256)], -1)
    pixels += rng.normal(0, 8, pixels.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    args = parser.parse_args()

    started = time.perf_counter()
    images = [jpeg(i, args.size) for i in range(1, args.posts + 1)]
    print(f"{args.posts} JPEGs of {args.size}x{args.size}, {sum(map(len, images)) / 1e6:.1f} MB "
          f"(made in {time.perf_counter() - started:.1f} s)")
    for site in ("gelbooru", "moebooru", "danbooru"):
        rating = "safe" if site == "moebooru" else "general"
        posts = [MockPost(i, data, args.size, args.size, rating=rating, ext="jpg") for i, data in enumerate(images, 1)]
        tmp = Path(tempfile.mkdtemp(prefix="crawl-bench-"))
        try:
            with MockBoard(site, posts) as board:
                params = {"runs": {}, "anime": {"crawl": {
                    "sources": [{"site": site, "base_url": board.base_url, "tags": "1girl"}], "download_delay": 0,
                    "min_width": 64, "min_height": 64, "max_posts": args.posts}}}
                (tmp / "params.yaml").write_text(yaml.safe_dump(params))
                result = subprocess.run(
                    [sys.executable, "-m", "crawlers", "crawl", "--params", str(tmp / "params.yaml"),
                     "--out", str(tmp / "out"), "-s", "LOG_LEVEL=WARNING"],
                    cwd=REPO, capture_output=True, text=True)
            if result.returncode:
                sys.exit(f"{site}: crawl failed\n{result.stderr[-3000:]}")
            stats = yaml.safe_load((tmp / "out" / "crawl_stats.json").read_text())
            print(f"{site:9s} {stats['new']:4d} images, {stats['bytes'] / 1e6:6.1f} MB in {stats['seconds']:5.2f} s: "
                  f"{stats['images_per_second']:6.1f} images/s, {stats['bytes'] / 1e6 / stats['seconds']:5.1f} MB/s "
                  f"({stats['pages']} pages)")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

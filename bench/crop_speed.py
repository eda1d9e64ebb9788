"""crop_anime_faces throughput (pages/s) with 1 worker and with every core, and the cost of a refresh.

    .venv/bin/python bench/crop_speed.py [--pages 204] [--detector combined] [--workers N]

The 12 real illustrations of ../shared/data/anime-dev, each copy re-encoded with one pixel
changed (so every page has its own sha256 and is detected, as a crawl's pages are), make a raw
crawl folder of --pages pages. The real stage function runs on it three times:

    1 worker, no memory      pages/s of a crop from scratch on one core
    all workers, no memory   the same on every core (anime.faces.workers: null)
    refresh                  +5% new pages, with the memory of the run before: pages detected,
                             seconds, and pages/s over the whole set

Each time is the whole stage (decode, monochrome test, detection, crops, dedup, the dataset
written), with the detector's loading included. Timings on a shared machine are rough.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from pipeline.config import AnimeFacesParams  # noqa: E402
from pipeline.faces.crop import crop_anime_faces  # noqa: E402
from pipeline.pool import resolve_workers  # noqa: E402

SHARED = REPO.parent / "shared"
ANIME_DEV = SHARED / "data" / "anime-dev"
CASCADE = SHARED / "models" / "lbpcascade_animeface.xml"


def distinct_copy(tile: Path, copy: int) -> bytes:
    """The tile with its top-left pixel set from the copy number, re-encoded: new bytes, same picture."""
    image = np.asarray(Image.open(tile).convert("RGB")).copy()
    image[0, 0] = (copy % 256, (copy // 256) % 256, 7)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def add_pages(raw: Path, start: int, count: int) -> None:
    tiles = sorted(ANIME_DEV.glob("tile*.jpg"))
    (raw / "images").mkdir(parents=True, exist_ok=True)
    with open(raw / "manifest.jsonl", "a") as manifest:
        for post_id in range(start, start + count):
            data = distinct_copy(tiles[post_id % len(tiles)], post_id)
            sha = hashlib.sha256(data).hexdigest()
            (raw / "images" / f"{sha}.jpg").write_bytes(data)
            manifest.write(json.dumps({"site": "bench", "post_id": post_id, "md5": hashlib.md5(data).hexdigest(),
                                       "sha256": sha, "tags": ["1girl"], "path": f"images/{sha}.jpg"}) + "\n")


def run(params: AnimeFacesParams, raw: Path, out: Path, cache: Path, label: str, pages: int) -> dict:
    summary = crop_anime_faces(params, raw, out, cache_dir=cache, progress=False)
    d = summary["detection"]
    print(f"{label:<34} {pages:4d} pages in {d['seconds']:6.1f} s: {pages / d['seconds']:5.2f} pages/s "
          f"(detected {d['detected']}, from memory {d['from_memory']}, decoded {d['decoded']}, "
          f"{d['workers']} worker{'s' * (d['workers'] > 1)}; {summary['faces'].get('kept', 0)} faces kept)", flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=204, help="pages of the first crawl (>= 200)")
    parser.add_argument("--detector", default="combined", choices=["combined", "anime_cascade", "animeface"])
    parser.add_argument("--workers", type=int, default=None, help="'all workers' (default: every core)")
    args = parser.parse_args()

    cores = resolve_workers(None)
    workers = args.workers or cores
    params = AnimeFacesParams(detector=args.detector, cascade_path=str(CASCADE), device="cpu")
    print(f"crop_anime_faces, detector {args.detector}, {cores} cores; load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (above {cores} = a busy machine: rough timings)")
    with tempfile.TemporaryDirectory(prefix="crop-bench-") as tmp:
        tmp = Path(tmp)
        raw = tmp / "raw"
        add_pages(raw, 1, args.pages)
        run(params.model_copy(update={"workers": 1}), raw, tmp / "a", tmp / "memory-1", "from scratch, 1 worker",
            args.pages)
        run(params.model_copy(update={"workers": workers}), raw, tmp / "b", tmp / "memory",
            f"from scratch, all workers ({workers})", args.pages)
        new = max(1, round(args.pages * 0.05))
        add_pages(raw, args.pages + 1, new)
        run(params.model_copy(update={"workers": workers}), raw, tmp / "c", tmp / "memory",
            f"refresh +{new} pages (+5%), {workers} workers", args.pages + new)
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

"""How long `read_dataset` takes to open a CelebA-sized dataset (202,599 x 64 x 64 x 3, 2.5 GB).

    .venv/bin/python bench/dataset_open.py [--dir /tmp/bench-celeba] [--count 202599] [--keep]

Builds a synthetic dataset with DatasetWriter (random pixels: the hash cost does not depend on
the content) unless one is already at --dir, then times three default opens and an explicit
full check (`verify=True`). Before the verification record every open hashed every array; with
it the first open hashes and records, later ones stat each array. The page cache is warm after
the build, so the full-hash figures are the hashing cost, not the disk's. The folder (and its
record) is deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.datasets import SPLITS, DatasetWriter, read_dataset  # noqa: E402


def build(path: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    chunk = 10_000
    with DatasetWriter(path, count, (64, 64, 3), source="bench") as writer:
        for start in range(0, count, chunk):
            stop = min(start + chunk, count)
            writer.images[start:stop] = rng.integers(0, 256, (stop - start, 64, 64, 3), dtype=np.uint8)
        writer.split = np.full(count, SPLITS["train"], dtype=np.uint8)
        writer.labels = np.zeros(count, dtype=np.int64)


def timed(label: str, **kwargs) -> None:
    started = time.perf_counter()
    dataset = read_dataset(ARGS.dir, **kwargs)
    print(f"{label:<36} {time.perf_counter() - started:8.3f} s  ({len(dataset)} images)", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "bench-celeba")
    parser.add_argument("--count", type=int, default=202_599)
    parser.add_argument("--keep", action="store_true", help="keep the dataset folder afterwards")
    ARGS = parser.parse_args()
    if not (ARGS.dir / "meta.json").is_file():
        started = time.perf_counter()
        build(ARGS.dir, ARGS.count)
        print(f"built {ARGS.dir} in {time.perf_counter() - started:.1f} s")
    size = sum(f.stat().st_size for f in ARGS.dir.glob("*.npy")) / 1e9
    print(f"{ARGS.dir}: {size:.2f} GB of arrays")
    try:
        for i in (1, 2, 3):
            timed(f"open {i} (default)")
        timed("open, verify=True (full sha256)", verify=True)
    finally:
        if not ARGS.keep:
            shutil.rmtree(ARGS.dir)
            (ARGS.dir.parent / f".{ARGS.dir.name}.verified.json").unlink(missing_ok=True)

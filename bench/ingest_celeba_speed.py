"""How fast does ingest_celeba turn a full-size CelebA zip into the 64x64 dataset?

    .venv/bin/python bench/ingest_celeba_speed.py [--count 202599] [--workers N]

The first run writes a synthetic Kaggle-layout CelebA (img_align_celeba.zip with 202,599
178x218 JPEGs at quality 95 and the real mean file size, plus the two CSVs with the official
split sizes) under /tmp/celeba-bench/ and keeps it (a few minutes); later runs reuse it. Then it
times the whole stage and prints images/s next to the load average, since other work may share
the cores. The target (issue 6) is the full set in under 3 minutes on 2 cores (> 1,125 images/s).
It also times one core decoding with and without JPEG draft mode, the trick the speed rests on.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.config import CelebaParams
from pipeline.ingest.celeba import center_crop_resize, ingest_celeba
from pipeline.pool import resolve_workers

# The fake-CelebA generator the tests use. Imported by path: torch-fidelity installs a top-level
# `tests` package that shadows this repository's `tests.*` outside pytest.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "ingest"))
from celeba_fixture import attr_csv, file_name, jpeg_bytes, partition_csv, synthetic_face  # noqa: E402

FULL = 202_599
OFFICIAL_SPLITS = (162_770, 19_867, 19_962)  # train, valid, test
GEN_CHUNK = 1000


def _generate(start: int) -> list[bytes]:
    rng = np.random.default_rng(start)  # seeded per chunk: the same set whatever the pool does
    return [jpeg_bytes(synthetic_face(rng)) for _ in range(start, min(start + GEN_CHUNK, _generate.count))]


def _set_count(count: int) -> None:
    _generate.count = count


def synthetic_celeba(folder: Path, count: int) -> Path:
    """The cached synthetic Kaggle layout; returns the zip (what celeba.source points at)."""
    archive = folder / "img_align_celeba.zip"
    if archive.is_file():
        return archive
    folder.mkdir(parents=True, exist_ok=True)
    names = [file_name(i) for i in range(count)]
    train, valid, _ = (round(n * count / FULL) for n in OFFICIAL_SPLITS)
    partition = np.repeat([0, 1, 2], [train, valid, count - train - valid])
    attrs = np.random.default_rng(0).choice(np.array([-1, 1]), size=(count, 40))
    (folder / "list_attr_celeba.csv").write_text(attr_csv(names, attrs))
    (folder / "list_eval_partition.csv").write_text(partition_csv(names, partition))
    tmp = archive.with_suffix(".zip.tmp")
    started, size = time.perf_counter(), 0
    with multiprocessing.Pool(resolve_workers(None), initializer=_set_count, initargs=(count,)) as pool, \
            zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for start, blobs in zip(range(0, count, GEN_CHUNK), pool.imap(_generate, range(0, count, GEN_CHUNK))):
            for i, data in enumerate(blobs):
                out.writestr(f"img_align_celeba/{names[start + i]}", data)
                size += len(data)
            print(f"\rgenerating: {start + len(blobs):,}/{count:,}", end="", file=sys.stderr)
    os.replace(tmp, archive)
    print(f"\nwrote {archive} in {time.perf_counter() - started:.0f} s: {count:,} JPEGs, "
          f"mean {size / count / 1024:.1f} KiB (the real set: ~7 KiB), zip {archive.stat().st_size / 2**30:.2f} GiB")
    return archive


def one_core_rate(archive: Path, n: int = 3000) -> None:
    """Decode + crop on one core, with and without draft mode."""
    import io

    with zipfile.ZipFile(archive) as zf:
        blobs = [zf.read(m) for m in zf.namelist()[:n]]
    for draft in (True, False):
        started = time.perf_counter()
        for data in blobs:
            with Image.open(io.BytesIO(data)) as image:
                center_crop_resize(image, 178, 64, draft=draft)
        rate = len(blobs) / (time.perf_counter() - started)
        print(f"one core, draft={'on ' if draft else 'off'}: {rate:,.0f} images/s")


class AnonMemory:
    """Peak anonymous memory (RssAnon) of this process, sampled in a thread. The output memmap's
    pages are file-backed page cache, so plain RSS would count the 2.5 GB array itself."""

    def __init__(self, every: float = 0.25):
        import threading

        self.peak_kib, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak_kib = max(self.peak_kib, int(line.split()[1]))

    def __enter__(self) -> "AnonMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=FULL)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "celeba-bench")
    args = parser.parse_args()

    archive = synthetic_celeba(args.cache / str(args.count), args.count)
    one_core_rate(archive)
    out = args.cache / "dataset"
    load_before = os.getloadavg()
    started = time.perf_counter()
    with AnonMemory() as memory:
        ingest_celeba(CelebaParams(source=str(archive), workers=args.workers), out)
    seconds = time.perf_counter() - started
    import resource

    worker_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    load_after = os.getloadavg()
    print(f"ingest_celeba: {args.count:,} images in {seconds:.1f} s = {args.count / seconds:,.0f} images/s "
          f"with {resolve_workers(args.workers)} workers on {os.cpu_count()} cores; "
          f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"memory: parent peak anonymous {memory.peak_kib / 1024:.0f} MiB; largest worker peak RSS "
          f"{worker_peak:.0f} MiB (includes the generator pool when the set was just built)")
    print(f"target: {FULL:,} images in under 180 s -> {'met' if seconds * FULL / args.count < 180 else 'MISSED'} "
          f"(projected {seconds * FULL / args.count:.0f} s for the full set)")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()

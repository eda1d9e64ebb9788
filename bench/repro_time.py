"""How long the training of each default run takes on this machine: an estimate per run from
timings of the real training loop (pipeline.train.train) with the run's own params.yaml entry.

For each run, three fresh trainings are timed whole: E1, E1 and E2 epochs (default 1, 1, 4).
The difference of the last two is the wall time of one more epoch (the steps, the checkpoint,
and the sample grid where `sample_every` is 1), of which the steps' share comes from the
images/s the loop logs. The rest of the first call is the fixed cost: moving the data to the
device, building the models, the final exports, and for the first run timed, lazy
initialisation. Python's start-up and imports are not in it, nor, where the epochs are timed
on fewer images (the CPU), reading and checking the whole dataset (seconds). Then

    estimate = fixed + epochs x per_epoch

(Training draws no fid_domain curve: it saves G snapshots, which evaluate measures.)

Data: MNIST is the real one (--mnist); CelebA is a stand-in of random images of the real count
(162,770 train images at celeba.image_size), since a step costs the same whatever the pixels;
anime has the crop count of data/datasets/anime when that exists, else --anime-images. On the
CPU an epoch is timed on --max-images images (default 2,048) and its steps are scaled to the
full count in whole batches. Evaluation (evaluate@<run>) is not included. Not a test:

    .venv/bin/python bench/repro_time.py [--device auto] [--runs dcgan-mnist ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import MnistParams, load_params
from pipeline.datasets import SPLITS, DatasetWriter, read_dataset
from pipeline.device import resolve_device
from pipeline.ingest.mnist import ingest_mnist
from pipeline.report import read_curves
from pipeline.train import train

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared"))  # set by bench/gpu_check.sh
CELEBA_TRAIN = 162_770  # the official partition's train split


def stand_in_dataset(out: Path, count: int, size: int, channels: int) -> None:
    """Random uint8 images, all in the train split: the step time of real ones at that count."""
    rng = np.random.default_rng(0)
    with DatasetWriter(out, count, (size, size, channels), source="stand-in") as writer:
        for start in range(0, count, 10_000):
            stop = min(count, start + 10_000)
            writer.images[start:stop] = rng.integers(0, 256, (stop - start, size, size, channels), dtype=np.uint8)
        writer.split[:] = SPLITS["train"]


def timed_training(name: str, params, epochs: int, images: int, device: torch.device, work: Path,
                   datasets: Path) -> tuple[float, float, dict]:
    """(wall seconds of the whole call, median seconds of the training steps of one epoch
    after the first, the run's train.json) of a training on the first `images` train images,
    the steps' time from the images/s the loop logs per epoch."""
    run = params.runs[name].model_copy(update={"epochs": epochs, "max_images": images, "device": str(device)})
    short = params.model_copy(update={"runs": {name: run}})
    runs_dir = work / "runs"
    shutil.rmtree(runs_dir, ignore_errors=True)  # a fresh run, never a resumed one
    start = time.perf_counter()
    run_dir = train(name, short, runs_dir=runs_dir, datasets_dir=datasets)
    wall = time.perf_counter() - start
    rates = read_curves(run_dir / "dvclive")["images_per_s"][1][1:] or [float("nan")]
    record = json.loads((run_dir / "train.json").read_text())
    return wall, float(np.median([images / rate for rate in rates])), record


def hms(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--runs", nargs="*", help="default: every run in params.yaml")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--mnist", default=str(SHARED / "data" / "mnist"), help="a folder of the MNIST IDX files")
    parser.add_argument("--anime-images", type=int, default=10_000,
                        help="crop count assumed for anime when data/datasets/anime does not exist "
                             "(the default crawl: 20,000 posts at about 0.5 face each)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="images per timed epoch (default: all on CUDA, 2,048 elsewhere)")
    parser.add_argument("--epochs", type=int, nargs=2, default=(1, 4), metavar=("E1", "E2"))
    parser.add_argument("--out", type=Path, help="also write the figures to OUT/repro_time.json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    e1, e2 = args.epochs
    if not 0 < e1 < e2:
        parser.error("--epochs: need 0 < E1 < E2")
    cap = args.max_images if args.max_images else (None if device.type == "cuda" else 2048)
    params = load_params(args.params)
    names = args.runs or list(params.runs)
    name_of = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name_of} | torch {torch.__version__} | timed epochs {e1} and {e2}"
          f" | images per timed epoch: {cap or 'all'}")

    with tempfile.TemporaryDirectory(prefix="repro_time-") as scratch:
        work, datasets = Path(scratch), Path(scratch) / "datasets"
        full_counts: dict[str, int] = {}
        rows = []
        for name in names:
            run = params.run(name)
            if run.dataset not in full_counts:
                if run.dataset == "mnist":
                    ingest_mnist(MnistParams(source=args.mnist), datasets / "mnist")
                    full_counts["mnist"] = len(read_dataset(datasets / "mnist", verify=False).indices("train"))
                else:
                    real = REPO / "data" / "datasets" / run.dataset / "meta.json"
                    if run.dataset == "anime" and real.is_file():
                        full = json.loads(real.read_text())["counts"]["train"]
                    else:
                        full = CELEBA_TRAIN if run.dataset == "celeba" else args.anime_images
                    full_counts[run.dataset] = full
                    size = params.celeba.image_size if run.dataset == "celeba" else params.anime.faces.image_size
                    stand_in_dataset(datasets / run.dataset, min(full, cap or full), size, 3)
            full = min(full_counts[run.dataset], run.max_images or full_counts[run.dataset])
            run_cap = min(cap or full, full)
            used = run_cap
            per_update = run.batch_size * run.d_steps  # an epoch trains only whole G updates
            # The first call pays what only a process's first training pays (lazy
            # initialisation, cuDNN's first kernels): it belongs to the fixed cost, not to the
            # per-epoch difference.
            w0, _, _ = timed_training(name, params, e1, run_cap, device, work, datasets)
            w1, _, _ = timed_training(name, params, e1, run_cap, device, work, datasets)
            w2, steps, record = timed_training(name, params, e2, run_cap, device, work, datasets)
            per_epoch = (w2 - w1) / (e2 - e1)
            # Differences of timings can undershoot a cost that is near zero; none is negative.
            fixed = max(0.0, w0 - e1 * per_epoch)
            # Only the steps grow with the image count (in whole batches); the rest of an epoch
            # (sample grid, checkpoint) does not.
            overhead = max(0.0, per_epoch - steps)
            per_epoch_full = steps * (full // per_update) / (used // per_update) + overhead
            estimate = fixed + run.epochs * per_epoch_full
            row = {"run": name, "train_images": full, "timed_images": used, "epochs": run.epochs,
                   "per_epoch_s": per_epoch_full, "steps_images_per_s": used // per_update * per_update / steps,
                   "epoch_overhead_s": overhead, "fixed_s": fixed, "estimate_s": estimate,
                   "trained_with": {k: record[k] for k in ("device", "precision", "memory_format")}}
            rows.append(row)
            print(f"{name:>14}: {run.epochs} epochs x {full:,} images: {per_epoch_full:8.1f} s/epoch "
                  f"(steps {row['steps_images_per_s']:,.0f} img/s + {row['epoch_overhead_s']:.1f} s), fixed "
                  f"{fixed:5.1f} s  ->  {hms(estimate)} (h:mm:ss)  [{record['device']}, {record['precision']}, "
                  f"{record['memory_format']}]", flush=True)
    print(f"{'all':>14}: {hms(sum(r['estimate_s'] for r in rows))} (h:mm:ss), training only")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "repro_time.json").write_text(json.dumps(
            {"device": name_of, "torch": torch.__version__, "epochs_timed": [e1, e2], "runs": rows}, indent=2))


if __name__ == "__main__":
    main()

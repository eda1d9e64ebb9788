"""The same short dcgan-mnist run on the GPU (auto speed settings) and on the CPU (fp32):
per-epoch losses side by side, the wall time of each, and how each was trained (its
train.json: device, the precision and memory format `auto` resolved to, images/s); exits 1 when
a GPU loss is further than 25% from the CPU one (tests/test_gpu.py's bound). Not a test;
bench/gpu_check.sh runs it.

    .venv/bin/python bench/loss_trend.py [--mnist $SHARED_DIR/data/mnist] [--epochs 3] [--images 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from pipeline.config import MnistParams, Params
from pipeline.ingest.mnist import ingest_mnist
from pipeline.report import read_curves
from pipeline.train import train

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared"))  # set by bench/gpu_check.sh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", default=str(SHARED / "data" / "mnist"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "loss_trend")
    args = parser.parse_args()
    datasets = args.out / "datasets"
    ingest_mnist(MnistParams(source=args.mnist, limit_train=args.images, limit_test=1000), datasets / "mnist")
    devices = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
    results = {}
    for device in devices:
        # The CPU side is the fp32 baseline even where `auto` picks bf16 (a CPU with AMX).
        run = {"model": "dcgan", "dataset": "mnist", "epochs": args.epochs, "batch_size": 128,
               "device": device, "sample_every": args.epochs, "precision": "auto" if device == "cuda" else "fp32"}
        shutil.rmtree(args.out / device, ignore_errors=True)  # a fresh run: never resume an earlier one
        start = time.perf_counter()
        run_dir = train("trend", Params.model_validate({"runs": {"trend": run}}),
                        runs_dir=args.out / device, datasets_dir=datasets)
        curves = read_curves(run_dir / "dvclive")
        results[device] = (time.perf_counter() - start, curves["loss_d"][1], curves["loss_g"][1])
        record = json.loads((run_dir / "train.json").read_text())
        stretch = record["stretches"][-1]
        print(f"{device:>5} trained with: {json.dumps(stretch['device'])}, precision {record['precision']}, "
              f"{record['memory_format']}, fused Adam {stretch['fused_adam']}, compile {stretch['compile']}, "
              f"torch {stretch['torch']}, CUDA {stretch['cuda']}; {record['images_per_s']:,.0f} img/s, "
              f"{record['seconds_per_epoch']:.1f} s/epoch", flush=True)
    for device, (seconds, loss_d, loss_g) in results.items():
        print(f"{device:>5}: {seconds:7.1f} s  loss_d {' '.join(f'{v:.3f}' for v in loss_d)}"
              f"  loss_g {' '.join(f'{v:.3f}' for v in loss_g)}")
    if "cuda" in results:
        # Other kernels, random streams and bf16: the same trend, not the same bits (the bound of
        # tests/test_gpu.py). On the CPU, seeds 0, 1 and 2 of this run differ by at most 14% in any epoch.
        apart = [(name, epoch + 1, gpu, cpu)
                 for i, name in ((1, "loss_d"), (2, "loss_g"))
                 for epoch, (gpu, cpu) in enumerate(zip(results["cuda"][i], results["cpu"][i]))
                 if not abs(gpu - cpu) < 0.25 * max(1.0, abs(cpu))]
        for name, epoch, gpu, cpu in apart:
            print(f"{name} of epoch {epoch}: GPU {gpu:.3f} vs CPU {cpu:.3f}, further apart than 25%")
        print("trend: " + ("GPU and CPU losses diverge" if apart else "GPU losses follow the CPU run's"))
        sys.exit(1 if apart else 0)


if __name__ == "__main__":
    main()

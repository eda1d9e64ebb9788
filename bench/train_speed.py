"""Training-step throughput: this project's loop against a plain pytorch/examples-style loop.

For the model of each default run (gan-mnist, dcgan-mnist, dcgan-celeba, dcgan-anime), times
one training step (D update + G update) in images/s two ways, in the same process on the same
device and the same uint8 images:

- ours: pipeline.train.GANStep with the run's `auto` speed settings, the dataset resident on
  the device, batches gathered by index there;
- reference: the pytorch/examples DCGAN loop (bench/dcgan28.py: ReferenceStep): a DataLoader
  over the images (per-item conversion to float, default collate, a host-to-device copy per
  batch), fp32, no tricks; for dcgan-mnist with the DCGAN-28 people use for MNIST
  (bench/dcgan28.py), for the 64x64 runs with pytorch/examples' own model (which ours is),
  for gan-mnist with our MLP (there is no one standard MLP GAN).

Our models take the widths of params.yaml's runs (ngf, ndf), so `ours` is what a default run trains.

Prints one line per model and the ratio ours/reference; `--compile` adds our loop with
`compile: true` (torch.compile), to see whether that param should default on for a device.
Not a test: run it by hand,

    .venv/bin/python bench/train_speed.py [--device auto] [--steps 30] [--repeats 3] [--precision fp32] [--compile]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dcgan28 import Discriminator28, Generator28, ReferenceStep, UInt8Images  # bench/ is the script's folder
from pipeline.config import RunParams, load_params
from pipeline.device import resolve_device
from pipeline.distributed import World
from pipeline.models import build_models
from pipeline.train import GANStep, Speed, prepare_models, to_float

REPO = Path(__file__).resolve().parents[1]

# (run, model, image size, channels): the default runs' shapes.
SHAPES = [("gan-mnist", "gan", 28, 1), ("dcgan-mnist", "dcgan", 28, 1),
          ("dcgan-celeba", "dcgan", 64, 3), ("dcgan-anime", "dcgan", 64, 3)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ours(run: RunParams, images: torch.Tensor, device: torch.device, steps: int) -> float:
    speed = Speed.resolve(run, device)
    G, D, _, _ = prepare_models(run, images.shape[1], images.shape[3], device, speed, World())
    step = GANStep(G, D, run, speed, device, World())
    data = images.to(device)
    n = len(data)

    def one(i: int) -> None:
        idx = torch.randint(0, n, (run.batch_size,), device=device)
        step([to_float(data[idx], speed.channels_last)])

    for i in range(3):  # warm-up (cuDNN autotuning, allocator, torch.compile)
        one(i)
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        one(i)
    sync(device)
    return steps * run.batch_size / (time.perf_counter() - start)


def reference_models(run: RunParams, size: int, channels: int) -> tuple[torch.nn.Module, torch.nn.Module, bool]:
    """(G, D, D returns logits) of the reference loop for this shape."""
    if run.model == "dcgan" and size == 28:
        return Generator28(run.nz, nc=channels), Discriminator28(nc=channels), False
    G, D = build_models(run.model, image_size=size, channels=channels, nz=run.nz)
    return G, D, True


def time_reference(run: RunParams, images: torch.Tensor, device: torch.device, steps: int) -> float:
    torch.manual_seed(0)
    netG, netD, logits = reference_models(run, images.shape[1], images.shape[3])
    netG.to(device)
    netD.to(device)
    step = ReferenceStep(netG, netD, run.nz, run.lr, run.beta1, device, logits=logits)
    # num_workers: the example's 2 worker processes on a GPU; on a 2-core CPU they would only
    # take cores from the training step itself, so the reference loads in-process there.
    workers = 2 if device.type == "cuda" else 0
    loader = DataLoader(UInt8Images(images), batch_size=run.batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, pin_memory=device.type == "cuda")

    def batches():
        while True:
            yield from loader

    it = batches()

    def one() -> None:
        step(next(it).to(device))

    for _ in range(3):
        one()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        one()
    sync(device)
    return steps * run.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per trial (default: 20 CPU, 200 GPU)")
    parser.add_argument("--repeats", type=int, default=3, help="trials per loop; the best is reported")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=8192, help="synthetic uint8 images per shape")
    parser.add_argument("--shapes", nargs="+", choices=[shape[0] for shape in SHAPES],
                        default=[shape[0] for shape in SHAPES], help="default: all four")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="our loop's runs.<run>.precision; fp32 also sets channels_last: false (the CPU "
                             "default before bf16 on AMX), for a before/after on one machine")
    parser.add_argument("--compile", action="store_true",
                        help="also time our loop with `compile: true` (one trial; compiling is warm-up)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    runs = load_params(REPO / "params.yaml").runs
    steps = args.steps or (200 if device.type == "cuda" else 20)
    print(f"device {device}, batch {args.batch_size}, {steps} steps x best of {args.repeats}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    compiled_header = f"{'compiled img/s':>16}" if args.compile else ""
    print(f"{'run':<14}{'ours img/s':>12}{'reference img/s':>17}{'ratio':>8}{compiled_header}   settings")
    for name, model, size, channels in SHAPES:
        if name not in args.shapes:
            continue
        widths = {k: getattr(runs[name], k) for k in ("ngf", "ndf")} if name in runs else {}
        forced = {} if args.precision == "auto" else {"precision": args.precision}
        if args.precision == "fp32":
            forced["channels_last"] = False
        run = RunParams(model=model, dataset="mnist", batch_size=args.batch_size, device=args.device, **widths,
                        **forced)
        images = torch.randint(0, 256, (args.images, size, size, channels), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(0))
        ours, ref = 0.0, 0.0
        for _ in range(args.repeats):  # interleaved, so a load change hits both loops alike
            ours = max(ours, time_ours(run, images, device, steps))
            ref = max(ref, time_reference(run, images, device, steps))
        compiled = ""
        if args.compile:
            compiled_run = run.model_copy(update={"compile": True})
            compiled = f"{time_ours(compiled_run, images, device, steps):>16.0f}"
        speed = Speed.resolve(run, device)
        settings = (f"amp={'bf16' if speed.amp_dtype else 'fp32'} channels_last={speed.channels_last} "
                    f"fused_adam={speed.fused_adam}")
        print(f"{name:<14}{ours:>12.0f}{ref:>17.0f}{ours / ref:>8.2f}{compiled}   {settings}", flush=True)


if __name__ == "__main__":
    main()

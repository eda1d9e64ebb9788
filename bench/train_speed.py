"""Training-step throughput: this project's loop against a plain pytorch/examples-style loop.

For the model of each default run (gan-mnist, dcgan-mnist, dcgan-celeba, dcgan-anime), times
one training step (D update + G update) in images/s two ways, in the same process on the same
device and the same uint8 images:

- ours: pipeline.train.GANStep with the run's `auto` speed settings, the dataset resident on
  the device, batches gathered by index there;
- reference: the pytorch/examples DCGAN loop: a DataLoader over the images (per-item
  conversion to float, default collate, a host-to-device copy per batch), fp32, no tricks.

Prints one line per model and the ratio ours/reference; `--compile` adds our loop with
`compile: true` (torch.compile), to see whether that param should default on for a device.
Not a test: run it by hand,

    .venv/bin/python bench/train_speed.py [--device auto] [--steps 30] [--repeats 3] [--compile]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.config import RunParams
from pipeline.device import resolve_device
from pipeline.distributed import World
from pipeline.models import build_models
from pipeline.train import GANStep, Speed, prepare_models, to_float

# (run, model, image size, channels): the default runs' shapes.
SHAPES = [("gan-mnist", "gan", 28, 1), ("dcgan-mnist", "dcgan", 28, 1),
          ("dcgan-celeba", "dcgan", 64, 3), ("dcgan-anime", "dcgan", 64, 3)]


class UInt8Images(Dataset):
    """What torchvision's ToTensor + Normalize((0.5,), (0.5,)) does, per item."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i].permute(2, 0, 1).float().div(127.5).sub(1.0)


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


def time_reference(run: RunParams, images: torch.Tensor, device: torch.device, steps: int) -> float:
    torch.manual_seed(0)
    netG, netD = build_models(run.model, image_size=images.shape[1], channels=images.shape[3], nz=run.nz)
    netG.to(device)
    netD.to(device)
    criterion = torch.nn.BCEWithLogitsLoss()
    optD = torch.optim.Adam(netD.parameters(), lr=run.lr, betas=(run.beta1, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=run.lr, betas=(run.beta1, 0.999))
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
        real = next(it).to(device)
        b = real.size(0)
        netD.zero_grad()
        errD_real = criterion(netD(real), torch.ones(b, device=device))
        errD_real.backward()
        fake = netG(torch.randn(b, run.nz, device=device))
        errD_fake = criterion(netD(fake.detach()), torch.zeros(b, device=device))
        errD_fake.backward()
        optD.step()
        netG.zero_grad()
        errG = criterion(netD(fake), torch.ones(b, device=device))
        errG.backward()
        optG.step()

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
    parser.add_argument("--compile", action="store_true",
                        help="also time our loop with `compile: true` (one trial; compiling is warm-up)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    steps = args.steps or (200 if device.type == "cuda" else 20)
    print(f"device {device}, batch {args.batch_size}, {steps} steps x best of {args.repeats}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    compiled_header = f"{'compiled img/s':>16}" if args.compile else ""
    print(f"{'run':<14}{'ours img/s':>12}{'reference img/s':>17}{'ratio':>8}{compiled_header}   settings")
    for name, model, size, channels in SHAPES:
        if name not in args.shapes:
            continue
        run = RunParams(model=model, dataset="mnist", batch_size=args.batch_size, device=args.device)
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

"""A plain pytorch/examples-style DCGAN-28 for MNIST: the reference our dcgan-mnist is held to.

Written on its own (no pipeline.models, no pipeline.train), so a fault in our models or loop
cannot hide in the reference too.

Layers: pytorch/examples' dcgan/main.py (4x4 stride-2 (transposed) convolutions, bias-free,
BatchNorm everywhere except G's output and D's input, ReLU in G, LeakyReLU(0.2) in D,
N(0, 0.02) weights, D ends in a sigmoid trained with BCELoss), cut to 7 -> 14 -> 28.
Widths: the ones people use for a 28x28 MNIST DCGAN, as in TensorFlow's DCGAN tutorial
(tensorflow.org/tutorials/generative/dcgan: G projects the noise to 256 x 7 x 7 and ends
with 128 and 64 maps; D has 64 then 128 maps) and the common PyTorch ports of it:

    G: nz x 1 x 1 -> 256 x 7 x 7 -> 128 x 14 x 14 -> 1 x 28 x 28
    D: 1 x 28 x 28 -> 64 x 14 x 14 -> 128 x 7 x 7 -> 1

The loop is pytorch/examples' too: a DataLoader with per-item conversion, D on a real and
a fake batch, then G on the same fake batch with the "real" label. Per-epoch seeding makes
a run resumed from its per-epoch checkpoint draw what the uninterrupted run would.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

G_WIDTHS = (256, 128)  # at 7 x 7, at 14 x 14
D_WIDTHS = (64, 128)   # at 14 x 14, at 7 x 7


def weights_init(m: nn.Module) -> None:
    """pytorch/examples' weights_init."""
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Generator28(nn.Module):
    def __init__(self, nz: int = 100, widths: tuple[int, int] = G_WIDTHS, nc: int = 1):
        super().__init__()
        w1, w2 = widths
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, w1, 7, 1, 0, bias=False), nn.BatchNorm2d(w1), nn.ReLU(True),  # w1 x 7 x 7
            nn.ConvTranspose2d(w1, w2, 4, 2, 1, bias=False), nn.BatchNorm2d(w2), nn.ReLU(True),  # w2 x 14 x 14
            nn.ConvTranspose2d(w2, nc, 4, 2, 1, bias=False), nn.Tanh(),                          # nc x 28 x 28
        )
        self.nz = nz
        self.apply(weights_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(z.shape[0], self.nz, 1, 1))


class Discriminator28(nn.Module):
    def __init__(self, widths: tuple[int, int] = D_WIDTHS, nc: int = 1):
        super().__init__()
        w1, w2 = widths
        self.main = nn.Sequential(
            nn.Conv2d(nc, w1, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),                   # w1 x 14 x 14
            nn.Conv2d(w1, w2, 4, 2, 1, bias=False), nn.BatchNorm2d(w2), nn.LeakyReLU(0.2, inplace=True),  # w2 x 7 x 7
            nn.Conv2d(w2, 1, 7, 1, 0, bias=False), nn.Sigmoid(),                                        # 1 x 1 x 1
        )
        self.apply(weights_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1)


class UInt8Images(Dataset):
    """uint8 N x H x W x C images, converted per item as torchvision's ToTensor +
    Normalize((0.5,), (0.5,)) would."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i].permute(2, 0, 1).float().div(127.5).sub(1.0)


class ReferenceStep:
    """One iteration of pytorch/examples' loop (D: real + fake, then G on the same fake)."""

    def __init__(self, netG: nn.Module, netD: nn.Module, nz: int, lr: float, beta1: float,
                 device: torch.device, logits: bool = False):
        self.netG, self.netD, self.nz, self.device = netG, netD, nz, device
        # logits=True for a D without the final sigmoid (our models, in bench/train_speed.py).
        self.criterion = nn.BCEWithLogitsLoss() if logits else nn.BCELoss()
        self.optD = torch.optim.Adam(netD.parameters(), lr=lr, betas=(beta1, 0.999))
        self.optG = torch.optim.Adam(netG.parameters(), lr=lr, betas=(beta1, 0.999))

    def __call__(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss_d, loss_g) as detached device tensors (no host sync)."""
        netG, netD, criterion, device = self.netG, self.netD, self.criterion, self.device
        b = real.size(0)
        netD.zero_grad()
        errD_real = criterion(netD(real), torch.ones(b, device=device))
        errD_real.backward()
        fake = netG(torch.randn(b, self.nz, device=device))
        errD_fake = criterion(netD(fake.detach()), torch.zeros(b, device=device))
        errD_fake.backward()
        self.optD.step()
        netG.zero_grad()
        errG = criterion(netD(fake), torch.ones(b, device=device))
        errG.backward()
        self.optG.step()
        return (errD_real + errD_fake).detach(), errG.detach()


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def _save(obj, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


def train_reference(images: torch.Tensor, out_dir: Path, *, seed: int, epochs: int, batch_size: int = 128,
                    lr: float = 2e-4, beta1: float = 0.5, nz: int = 100,
                    device: torch.device = torch.device("cpu")) -> Generator28:
    """Train the reference on uint8 N x 28 x 28 x 1 `images`; returns G (eval mode, CPU).

    `out_dir/checkpoint.pt` is written after every epoch; a later call with the same
    seed and no fewer epochs resumes from it. drop_last: every epoch makes
    len(images) // batch_size G updates, as our loop does."""
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / "checkpoint.pt"
    torch.manual_seed(seed)  # the initial weights
    netG, netD = Generator28(nz).to(device), Discriminator28().to(device)
    step = ReferenceStep(netG, netD, nz, lr, beta1, device)
    start = 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state["seed"] == seed and state["epoch"] <= epochs:
            netG.load_state_dict(state["G"])
            netD.load_state_dict(state["D"])
            step.optG.load_state_dict(state["optG"])
            step.optD.load_state_dict(state["optD"])
            start = state["epoch"]
    loader = DataLoader(UInt8Images(images), batch_size=batch_size, shuffle=True, drop_last=True)
    for epoch in range(start, epochs):
        started = time.perf_counter()
        torch.manual_seed(epoch_seed(seed, epoch))  # the shuffle and the noise of this epoch
        netG.train()
        netD.train()
        sums = torch.zeros(2, device=device)
        for real in loader:
            sums += torch.stack(step(real.to(device)))
        loss_d, loss_g = (sums / len(loader)).tolist()
        print(f"reference seed {seed} epoch {epoch + 1}/{epochs}: loss_d {loss_d:.3f} loss_g {loss_g:.3f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        _save({"seed": seed, "epoch": epoch + 1, "G": netG.state_dict(), "D": netD.state_dict(),
               "optG": step.optG.state_dict(), "optD": step.optD.state_dict()}, checkpoint)
    return netG.cpu().eval()

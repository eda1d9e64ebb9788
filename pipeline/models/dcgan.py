"""DCGAN (Radford et al., 2015) for 28x28 (MNIST) and 64x64 (faces) images.

The architecture guidelines of the paper: strided (transposed) convolutions instead of
pooling, BatchNorm in both nets (not on G's output nor D's input), ReLU in G with tanh at
the end, LeakyReLU(0.2) in D, weights from N(0, 0.02). The depth follows from the image
size: a `base` x `base` map (4 for 32/64, 7 for 28) doubled `k` times.
D returns logits (BCEWithLogits), which keeps mixed precision numerically safe.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.models.blocks import BlockDiscriminator


def _geometry(image_size: int) -> tuple[int, int]:
    """(base, k) with image_size == base * 2**k and k >= 1."""
    for base in (4, 7):
        k = math.log2(image_size / base) if image_size % base == 0 else -1
        if k >= 1 and k == int(k):
            return base, int(k)
    raise ValueError(f"DCGAN needs image_size = 4*2^k or 7*2^k (e.g. 28, 32, 64), got {image_size}")


def init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    def __init__(self, nz: int = 100, image_size: int = 64, channels: int = 3, ngf: int = 64):
        super().__init__()
        base, k = _geometry(image_size)
        width = ngf * 2 ** (k - 1)
        # 64x64: nz x 1 x 1 -> 512 x 4 x 4 -> 256 x 8 x 8 -> 128 x 16 x 16 -> 64 x 32 x 32 -> 3 x 64 x 64
        # 28x28: nz x 1 x 1 -> 2ngf x 7 x 7 -> ngf x 14 x 14 -> 1 x 28 x 28. ngf 64 is half the
        # width people use for MNIST (256 -> 128, TensorFlow's DCGAN tutorial) and scores a clearly
        # worse fid_domain (bench/dcgan28_compare.py), so runs.dcgan-mnist sets ngf: 128.
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, width, base, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
        ]
        for _ in range(k - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.nz = nz
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.nz, 1, 1))


class Discriminator(BlockDiscriminator):
    def __init__(self, image_size: int = 64, channels: int = 3, ndf: int = 64):
        super().__init__()
        base, k = _geometry(image_size)
        # 64x64: 3 x 64 x 64 -> 64 x 32 x 32 -> 128 x 16 x 16 -> 256 x 8 x 8 -> 512 x 4 x 4 -> 1
        # 28x28: 1 x 28 x 28 -> 64 x 14 x 14 -> 128 x 7 x 7 -> 1
        # Conv blocks are kept separate so the linear probe can read every one of them.
        blocks = [nn.Sequential(nn.Conv2d(channels, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True))]
        width = ndf
        for _ in range(k - 1):
            blocks.append(nn.Sequential(nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                                        nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2, True)))
            width *= 2
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(width, 1, base, 1, 0, bias=False)
        self.apply(init_weights)

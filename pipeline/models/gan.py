"""The MLP GAN of Goodfellow et al. (2014), as in the seed experiment.

G maps 100-d noise through three hidden layers to a tanh image; D is an MLP with LeakyReLU
and dropout (the paper used maxout; LeakyReLU + dropout is the common modern stand-in).
D returns logits, so the loss is BCEWithLogits and mixed precision stays safe.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.blocks import BlockDiscriminator


class Generator(nn.Module):
    def __init__(self, nz: int = 100, image_size: int = 28, channels: int = 1, hidden: int = 256):
        super().__init__()
        self.shape = (channels, image_size, image_size)
        pixels = channels * image_size * image_size
        self.net = nn.Sequential(
            nn.Linear(nz, hidden), nn.LeakyReLU(0.2),                 # B x 256
            nn.Linear(hidden, hidden * 2), nn.LeakyReLU(0.2),         # B x 512
            nn.Linear(hidden * 2, hidden * 4), nn.LeakyReLU(0.2),     # B x 1024
            nn.Linear(hidden * 4, pixels), nn.Tanh(),                 # B x 784, in [-1, 1]
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.flatten(1)).view(-1, *self.shape)


class Discriminator(BlockDiscriminator):
    def __init__(self, image_size: int = 28, channels: int = 1, hidden: int = 256, dropout: float = 0.3):
        super().__init__()
        pixels = channels * image_size * image_size
        # Blocks are kept separate so the linear probe can read every hidden layer.
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Flatten(), nn.Linear(pixels, hidden * 4), nn.LeakyReLU(0.2), nn.Dropout(dropout)),  # B x 1024
            nn.Sequential(nn.Linear(hidden * 4, hidden * 2), nn.LeakyReLU(0.2), nn.Dropout(dropout)),  # B x 512
            nn.Sequential(nn.Linear(hidden * 2, hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout)),      # B x 256
        ])
        self.head = nn.Linear(hidden, 1)                                                               # B x 1 logit

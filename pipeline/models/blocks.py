"""The shape both discriminators share: `blocks` whose activations the linear probe reads,
then a `head` that turns the last one into one logit per image."""

from __future__ import annotations

import torch
from torch import nn


class BlockDiscriminator(nn.Module):
    blocks: nn.ModuleList
    head: nn.Module

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations of every block (B x C_i x H_i x W_i for convs, B x F_i for MLP layers)."""
        out, h = [], x
        for block in self.blocks:
            h = block(h)
            out.append(h)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[-1]).view(-1)

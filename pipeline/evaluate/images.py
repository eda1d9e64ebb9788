"""Image plumbing shared by every metric: one uint8 path for real and generated images.

Generated images are quantised to uint8 exactly as a saved PNG would be, and real images are
read as uint8 from the dataset; from there both go through the same code, so no metric can see
a difference that is only a preprocessing difference.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.datasets import Dataset


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] (B x C x H x W float) -> uint8 in [0, 255], as a PNG would hold."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 B x C x H x W -> float in [-1, 1], the range G produces and D was trained on."""
    return x.float() / 127.5 - 1.0


def dataset_images(dataset: Dataset, index: np.ndarray) -> torch.Tensor:
    """Rows `index` of a dataset as a uint8 N x C x H x W tensor (copied out of the memmap)."""
    images = np.ascontiguousarray(dataset.images[np.sort(index)] if len(index) else dataset.images[:0])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def sorted_subset(dataset: Dataset, split: str, limit: int | None, seed: int) -> np.ndarray:
    """Up to `limit` indices of `split`, a seeded random choice, sorted (fast memmap reads)."""
    index = dataset.indices(split)
    if limit is not None and len(index) > limit:
        index = np.random.default_rng(seed).choice(index, size=limit, replace=False)
    return np.sort(index)


def sample_batch_size(p, spec: dict) -> int:
    """The batches G is drawn in. eval mode: any size gives the same images, so evaluate.batch_size
    (speed only). train mode: BatchNorm normalises each batch by its own statistics, so the size
    is part of the images: the run's own training batch (model.json), as pytorch/examples samples."""
    if p.sample_mode != "train":
        return p.batch_size
    if spec.get("batch_size") is None:
        raise ValueError("evaluate.sample_mode train draws G in its training batches, and this run's model.json "
                         "predates recording them: retrain it (dvc repro train@<run>)")
    return spec["batch_size"]


@torch.no_grad()
def generate_uint8(generator: nn.Module, n: int, nz: int, seed: int, batch_size: int,
                   device: torch.device | str = "cpu", mode: str = "eval") -> torch.Tensor:
    """`n` samples of G as uint8 N x C x H x W on the CPU, from seeded N(0, 1) noise.

    The noise is drawn on the CPU from its own generator, so the same seed gives the same images
    on every device. `mode` is evaluate.sample_mode: "eval" normalises with BatchNorm's running
    statistics (the same images whatever the batch size); "train" with each batch's own
    statistics, as pytorch/examples samples (then `batch_size` is part of the images:
    sample_batch_size). A
    train-mode draw runs on a copy, so G's running statistics are never changed.
    """
    if mode not in ("eval", "train"):
        raise ValueError(f"sample mode must be 'eval' or 'train', got {mode!r}")
    rng = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, nz, generator=rng)
    was_training = generator.training
    net = copy.deepcopy(generator).train() if mode == "train" else generator.eval()
    out = []
    for z in noise.split(batch_size):
        out.append(to_uint8(net(z.to(device))).cpu())
    if mode == "eval":
        generator.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.uint8)


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Float B x C x H x W to size x size (antialiased), a no-op when it already fits."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

"""Several processes (torchrun) for one training run: DDP plus BatchNorm over the global batch.

`torchrun --nproc_per_node N -m pipeline train <run>` starts N processes; each holds the whole
uint8 dataset on its device and takes a disjoint slice of every global batch (as
DistributedSampler would), so `batch_size` in params.yaml stays the global batch.

BatchNorm, deliberately: plain per-process BatchNorm would normalise each slice by its own
statistics, so N GPUs would train a different model than one GPU at the same global batch.
We normalise by the statistics of the whole global batch instead, which makes a DDP run the
same computation as a single-process run (up to float summation order). `nn.SyncBatchNorm`
does this on CUDA only; `GlobalBatchNorm2d` below does it with one differentiable all-reduce
of 2 x C numbers per layer on every backend, so the code the 2-process CPU (gloo) test proves
is the code that runs on GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun describes in the environment (or stay single)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(), device
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, device


def close_world(world: World, *, failed: bool = False) -> None:
    """Leave the process group; after a failure without the barrier, which the other ranks
    (stuck in a collective, or gone) would never reach."""
    if world.distributed and dist.is_initialized():
        if not failed:
            dist.barrier()
        dist.destroy_process_group()


def all_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    if world.distributed:
        dist.all_reduce(tensor)
    return tensor


def from_main(obj, world: World):
    """Rank 0's `obj` on every rank. On several nodes only rank 0's disk is sure to hold the
    run folder (only rank 0 writes), so what is read from it (the checkpoint) is rank 0's."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(ok: bool, world: World, device: torch.device) -> bool:
    """True on every rank when `ok` is true on every rank, so all of them stop together (a
    rank that raised alone would leave the others waiting in their next collective)."""
    if not world.distributed:
        return ok
    return all_sum(torch.tensor([0.0 if ok else 1.0], device=device), world).item() == 0


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span the global batch of all processes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        xf = x.float()  # statistics in fp32 even under bf16 autocast
        count = xf.numel() // xf.shape[1] * dist.get_world_size()  # every rank has the same slice size
        sums = differentiable_all_reduce(torch.stack([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3))]))
        mean = sums[0] / count
        var = (sums[1] / count - mean * mean).clamp_min(0)  # biased, as BatchNorm normalises
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * count / max(count - 1, 1), alpha=m)
        scale = self.weight * torch.rsqrt(var + self.eps)
        y = xf * scale[None, :, None, None] + (self.bias - mean * scale)[None, :, None, None]
        return y.to(x.dtype)


def use_global_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d for GlobalBatchNorm2d in place, keeping its parameters and buffers."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum,
                                            child.affine, child.track_running_stats)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement.to(child.weight.device))
        else:
            use_global_batchnorm(child)
    return module

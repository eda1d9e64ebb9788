"""GlobalBatchNorm2d's own all-reduce path, in a real 2-process gloo group on this machine:
two shards normalised together give what F.batch_norm gives on the whole batch, forward,
backward and running statistics. (The single-process fallback is plain BatchNorm2d and is
checked in tests/test_distributed.py; the end-to-end 2-process training run there is slow.)"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from pipeline.distributed import GlobalBatchNorm2d

WORLD, SHARD, C, H, W = 2, 5, 3, 4, 6  # 5 images a rank: different shards, different statistics
MOMENTUM, EPS = 0.3, 1e-5


def inputs():
    """The global batch, the affine parameters and a fixed upstream gradient (same on every rank)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(WORLD * SHARD, C, H, W, generator=gen) * 3 + torch.arange(C).view(1, C, 1, 1)
    x[SHARD:] += 2.0  # rank 1's shard has another mean: per-shard BatchNorm would differ
    weight = torch.rand(C, generator=gen) + 0.5
    bias = torch.randn(C, generator=gen)
    upstream = torch.randn(WORLD * SHARD, C, H, W, generator=gen)
    return x, weight, bias, upstream


def rank_main(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        x, weight, bias, upstream = inputs()
        bn = GlobalBatchNorm2d(C, eps=EPS, momentum=MOMENTUM)
        with torch.no_grad():
            bn.weight.copy_(weight)
            bn.bias.copy_(bias)
        bn.train()
        part = slice(rank * SHARD, (rank + 1) * SHARD)
        shard = x[part].clone().requires_grad_(True)
        y = bn(shard)
        (y * upstream[part]).sum().backward()
        torch.save({"y": y.detach(), "x_grad": shard.grad, "weight_grad": bn.weight.grad,
                    "bias_grad": bn.bias.grad, "running_mean": bn.running_mean,
                    "running_var": bn.running_var, "world": dist.get_world_size()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_normalise_over_the_global_batch(tmp_path: Path):
    mp.spawn(rank_main, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert all(r["world"] == WORLD for r in ranks)

    x, weight, bias, upstream = inputs()
    x = x.clone().requires_grad_(True)
    weight, bias = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    running_mean, running_var = torch.zeros(C), torch.ones(C)
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training=True, momentum=MOMENTUM, eps=EPS)
    (y * upstream).sum().backward()

    close = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), y.detach(), **close)
    # The statistics are differentiable through the all-reduce: each input's gradient includes
    # its effect on the other rank's outputs.
    torch.testing.assert_close(torch.cat([r["x_grad"] for r in ranks]), x.grad, **close)
    # DDP sums the ranks' parameter gradients (then averages by the world size).
    torch.testing.assert_close(sum(r["weight_grad"] for r in ranks), weight.grad, **close)
    torch.testing.assert_close(sum(r["bias_grad"] for r in ranks), bias.grad, **close)
    for r in ranks:  # running statistics: the global batch's, unbiased variance, on every rank
        torch.testing.assert_close(r["running_mean"], running_mean, **close)
        torch.testing.assert_close(r["running_var"], running_var, **close)

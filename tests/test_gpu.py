"""Checks that only mean something on a CUDA device; skipped elsewhere (bench/gpu_check.sh)."""

import json
import math

import pytest
import torch

from pipeline.config import Params
from pipeline.train import Speed, train


def params(**run) -> Params:
    settings = {"model": "dcgan", "dataset": "mnist", "epochs": 3, "batch_size": 64, "max_images": 2048,
                "ngf": 32, "ndf": 32, "sample_every": 3, **run}
    return Params.model_validate({"runs": {"g": settings}})


def final(run_dir):
    return json.loads((run_dir / "dvclive" / "metrics.json").read_text())


@pytest.mark.gpu
def test_auto_settings_on_cuda_are_the_fast_ones():
    speed = Speed.resolve(params().run("g"), torch.device("cuda"))
    assert speed.channels_last and speed.fused_adam
    assert speed.amp_dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else None)


@pytest.mark.gpu
def test_cuda_bf16_run_follows_the_fp32_run_and_the_cpu_run(tmp_path, mnist_small):
    finals = {}
    for name, run in (("cpu", {"device": "cpu", "precision": "fp32"}),
                      ("cuda_fp32", {"device": "cuda", "precision": "fp32"}),
                      ("cuda_bf16", {"device": "cuda", "precision": "bf16"})):
        run_dir = train("g", params(**run), runs_dir=tmp_path / name, datasets_dir=mnist_small.parent)
        finals[name] = final(run_dir)
    for name in ("cuda_fp32", "cuda_bf16"):
        for key in ("loss_d", "loss_g", "d_real", "d_fake"):
            value, reference = finals[name][key], finals["cpu"][key]
            assert math.isfinite(value)
            # Different kernels and precisions: the same trend, not the same bits.
            assert abs(value - reference) < 0.25 * max(1.0, abs(reference)), (name, key, value, reference)

"""torchrun with 2 CPU processes (gloo) trains the same model as 1 process at the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from pipeline.distributed import GlobalBatchNorm2d, use_global_batchnorm
from pipeline.models import build_models

RUN = {"model": "dcgan", "dataset": "mnist", "epochs": 2, "batch_size": 32, "max_images": 256,
       "ngf": 8, "ndf": 8, "nz": 16, "sample_every": 1, "device": "cpu"}


def train_in(workdir, mnist_small, nproc):
    workdir.mkdir()
    (workdir / "data" / "datasets").mkdir(parents=True)
    (workdir / "data" / "datasets" / "mnist").symlink_to(mnist_small)
    (workdir / "params.yaml").write_text(yaml.safe_dump({"runs": {"tiny": RUN}}))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = (launcher if nproc > 1 else [sys.executable]) + ["-m", "pipeline", "train", "tiny"]
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir / "runs" / "tiny"


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path, mnist_small):
    single = train_in(tmp_path / "single", mnist_small, 1)
    double = train_in(tmp_path / "ddp", mnist_small, 2)
    for name in ("generator.pt", "discriminator.pt"):
        a = torch.load(single / name, weights_only=True)
        b = torch.load(double / name, weights_only=True)
        assert a.keys() == b.keys()
        for key in a:
            # Same computation, different float summation order: equal to float tolerance.
            torch.testing.assert_close(b[key].float(), a[key].float(), rtol=1e-3, atol=1e-4, msg=key)
    m1 = json.loads((single / "dvclive" / "metrics.json").read_text())
    m2 = json.loads((double / "dvclive" / "metrics.json").read_text())
    for key in ("loss_d", "loss_g", "d_real", "d_fake"):
        assert m2[key] == pytest.approx(m1[key], rel=1e-3), key
    # Only rank 0 wrote: one row per epoch.
    assert len((double / "dvclive" / "plots" / "metrics" / "loss_d.tsv").read_text().splitlines()) == 3


def test_global_batchnorm_is_batchnorm_in_one_process():
    torch.manual_seed(0)
    _, D = build_models("dcgan", image_size=28, channels=1, nz=8, ndf=8)
    swapped = use_global_batchnorm(build_models("dcgan", image_size=28, channels=1, nz=8, ndf=8)[1])
    swapped.load_state_dict(D.state_dict())
    assert any(isinstance(m, GlobalBatchNorm2d) for m in swapped.modules())
    x = torch.randn(6, 1, 28, 28)
    torch.testing.assert_close(swapped(x), D(x))

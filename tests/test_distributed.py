"""torchrun with 2 CPU processes (gloo) trains the same model as 1 process at the same global batch."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from pipeline.distributed import GlobalBatchNorm2d, use_global_batchnorm
from pipeline.models import build_models

# fp32 explicitly: these tests compare N processes with one to float tolerance, which bf16's
# rounding (what `auto` gives on a CPU with AMX) would swamp.
RUN = {"model": "dcgan", "dataset": "mnist", "epochs": 2, "batch_size": 32, "max_images": 256,
       "ngf": 8, "ndf": 8, "nz": 16, "sample_every": 1, "device": "cpu", "precision": "fp32"}


def workspace(workdir, mnist_small, **run):
    """A folder as one machine sees it: params.yaml and the dataset (made once)."""
    if not workdir.exists():
        (workdir / "data" / "datasets").mkdir(parents=True)
        (workdir / "data" / "datasets" / "mnist").symlink_to(mnist_small)
    (workdir / "params.yaml").write_text(yaml.safe_dump({"runs": {"tiny": {**RUN, **run}}}))
    return workdir


def train_in(workdir, mnist_small, nproc):
    workspace(workdir, mnist_small)
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_on_two_nodes(nodes, mnist_small, epochs, node1_run=None):
    """docs/speed.md's multi-node command, one process per "node", each node in its own folder
    (as two machines: no shared disk), rendezvous on 127.0.0.1."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    procs = []
    for rank, node in enumerate(nodes):
        workspace(node, mnist_small, epochs=epochs, **(node1_run if rank == 1 and node1_run else {}))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
               "--nproc-per-node", "1", "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "pipeline", "train", "tiny"]
        procs.append(subprocess.Popen(cmd, cwd=node, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    try:
        outputs = [proc.communicate(timeout=180)[0] for proc in procs]
    finally:
        for proc in procs:  # a rank stuck in a collective whose peer is gone: do not leave it running
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if node1_run is not None:
        return outputs
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
    return nodes[0] / "runs" / "tiny"


@pytest.mark.slow
def test_two_nodes_match_one_process_also_after_a_resume(tmp_path, mnist_small):
    single = train_in(tmp_path / "single", mnist_small, 1)  # 2 epochs
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    train_on_two_nodes(nodes, mnist_small, epochs=1)
    # Only global rank 0 writes, and with the static rendezvous that is node 0.
    assert (nodes[0] / "runs" / "tiny" / "checkpoint.pt").is_file()
    assert not (nodes[1] / "runs").exists()
    # Raising epochs continues the run: from node 0's checkpoint on both nodes, though node 1
    # has none (it must not start over while node 0 resumes).
    multi = train_on_two_nodes(nodes, mnist_small, epochs=2)
    for name in ("generator.pt", "discriminator.pt"):
        a = torch.load(single / name, weights_only=True)
        b = torch.load(multi / name, weights_only=True)
        for key in a:
            torch.testing.assert_close(b[key].float(), a[key].float(), rtol=1e-3, atol=1e-4, msg=key)
    assert not (nodes[1] / "runs").exists()
    # A node with other params (or data) stops every node with one clear error, no hang.
    outputs = train_on_two_nodes(nodes, mnist_small, epochs=3, node1_run={"seed": 7})
    assert all("differs between the processes of this torchrun" in out for out in outputs), outputs[0][-2000:]


def test_global_batchnorm_is_batchnorm_in_one_process():
    torch.manual_seed(0)
    _, D = build_models("dcgan", image_size=28, channels=1, nz=8, ndf=8)
    swapped = use_global_batchnorm(build_models("dcgan", image_size=28, channels=1, nz=8, ndf=8)[1])
    swapped.load_state_dict(D.state_dict())
    assert any(isinstance(m, GlobalBatchNorm2d) for m in swapped.modules())
    x = torch.randn(6, 1, 28, 28)
    torch.testing.assert_close(swapped(x), D(x))

"""`python -m pipeline sample`: the exact images evaluate scores, which another tool (here
torch-fidelity's own `fidelity` command) scores to the project's number."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.evaluate.export import generated_images, real_images, write_pngs
from pipeline.evaluate.fid import kid
from pipeline.evaluate.images import generate_uint8
from pipeline.evaluate.inception import inception_features, load_inception
from pipeline.models import load_trained
from tests.evaluate.eval_helpers import make_params, make_run

COUNT = 24  # images a side: seconds of Inception on a CPU


def read_pngs(folder: Path) -> torch.Tensor:
    arrays = [np.asarray(Image.open(path)) for path in sorted(folder.glob("*.png"))]
    return torch.from_numpy(np.stack(arrays))[:, None]  # grayscale N x 1 x H x W


def test_the_pngs_are_the_images_evaluate_scores(tmp_path, mnist_dir):
    params = make_params(num_samples=60)
    run_dir = make_run(tmp_path / "run", "dcgan")
    write_pngs(generated_images(run_dir, params, 40), tmp_path / "fake")
    G, _, spec = load_trained(run_dir)
    scored = generate_uint8(G, 60, spec["nz"], params.evaluate.seed, params.evaluate.batch_size)
    assert torch.equal(read_pngs(tmp_path / "fake"), scored[:40])  # lossless, in evaluate's order
    assert sorted(p.name for p in (tmp_path / "fake").iterdir())[:2] == ["000000.png", "000001.png"]
    with pytest.raises(ValueError, match="evaluate.num_samples"):
        generated_images(run_dir, params, 61)


def test_torch_fidelity_scores_the_exported_folders_to_our_kid(tmp_path, mnist_dir, inception_weights):
    params = make_params(num_samples=COUNT, num_real=COUNT, inception=True, inception_weights=str(inception_weights))
    run_dir = make_run(tmp_path / "run", "gan")
    fakes, reals = generated_images(run_dir, params), real_images("mnist", mnist_dir, params)
    write_pngs(fakes, tmp_path / "fake")
    write_pngs(reals, tmp_path / "real")
    # Ours: the project's Inception and KID on the same images, in memory.
    model, _ = load_inception(str(inception_weights), antialias=False)
    ours = kid(inception_features(model, fakes, batch_size=COUNT), inception_features(model, reals, batch_size=COUNT),
               subset_size=12, subsets=10, seed=0)[0]
    # Theirs: torch-fidelity's command on the PNG folders, with the same checked weights file.
    fidelity = shutil.which("fidelity", path=str(Path(__import__("sys").executable).parent))
    out = subprocess.run([fidelity, "--input1", str(tmp_path / "fake"), "--input2", str(tmp_path / "real"), "--kid",
                          "--kid-subset-size", "12", "--kid-subsets", "10", "--rng-seed", "0", "--no-cache",
                          "--feature-extractor-weights-path", str(inception_weights), "--samples-find-ext", "png"],
                         capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    theirs = float(re.search(r"kernel_inception_distance_mean:\s*(-?[\d.e+-]+)", out.stdout + out.stderr).group(1))
    assert ours > 0.01  # an untrained G against real digits: far apart, so the match means something
    assert theirs == pytest.approx(ours, rel=1e-3)

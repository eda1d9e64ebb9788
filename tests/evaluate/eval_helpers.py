"""Helpers for the evaluation tests (imported as tests.evaluate.eval_helpers)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline.config import EvaluateParams, Params
from pipeline.models import build_models

TRAIN, TEST = 12_000, 2_000


def make_params(**evaluate) -> Params:
    base = dict(device="cpu", classifier_epochs=1, classifier_batch_size=64, num_samples=500, num_real=TEST, kid_subset_size=200,
                kid_subsets=10, probe_per_class=[10, "all"], probe_max_train=1000, probe_val_size=300,
                probe_max_test=600, probe_c_grid=[0.01, 0.1], inception=False, batch_size=250)
    base.update(evaluate)
    return Params(runs={}, evaluate=EvaluateParams(**base))


def make_run(run_dir: Path, model: str = "gan", *, seed: int = 0, nz: int = 16, ngf: int = 8, ndf: int = 8) -> Path:
    """A run folder as train writes it (state dicts + model.json), with seeded random weights."""
    torch.manual_seed(seed)
    G, D = build_models(model, image_size=28, channels=1, nz=nz, ngf=ngf, ndf=ndf)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(G.state_dict(), run_dir / "generator.pt")
    torch.save(D.state_dict(), run_dir / "discriminator.pt")
    spec = {"model": model, "image_size": 28, "channels": 1, "nz": nz, "ngf": ngf, "ndf": ndf, "dataset": "mnist",
            "seed": seed}
    (run_dir / "model.json").write_text(json.dumps(spec))
    return run_dir

"""GAN (MLP) and DCGAN generators and discriminators, built from a run's params."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from pipeline.config import MissingInputError
from pipeline.models import dcgan, gan


def build_models(model: str, *, image_size: int, channels: int, nz: int, ngf: int = 64,
                 ndf: int = 64) -> tuple[nn.Module, nn.Module]:
    """Return (generator, discriminator) for `model` ("gan" or "dcgan"), freshly initialised."""
    if model == "gan":
        return gan.Generator(nz, image_size, channels), gan.Discriminator(image_size, channels)
    if model == "dcgan":
        return (dcgan.Generator(nz, image_size, channels, ngf),
                dcgan.Discriminator(image_size, channels, ndf))
    raise ValueError(f"unknown model {model!r} (known: gan, dcgan)")


# A run folder records how its models were built (model.json) next to the state dicts, so
# evaluation rebuilds exactly the trained architecture without re-reading params.yaml.
SPEC_FILE = "model.json"


def load_trained(run_dir: Path | str, device: str | torch.device = "cpu") -> tuple[nn.Module, nn.Module, dict]:
    """(generator, discriminator, spec) of a finished run, in eval mode, on `device`."""
    run_dir = Path(run_dir)
    spec_file = run_dir / SPEC_FILE
    if not spec_file.is_file():
        raise MissingInputError(f"{spec_file}: not found; train this run first (python -m pipeline train <run>)")
    spec = json.loads(spec_file.read_text())
    G, D = build_models(spec["model"], image_size=spec["image_size"], channels=spec["channels"],
                        nz=spec["nz"], ngf=spec["ngf"], ndf=spec["ndf"])
    for net, name in ((G, "generator.pt"), (D, "discriminator.pt")):
        net.load_state_dict(torch.load(run_dir / name, map_location="cpu", weights_only=True))
        net.to(device).eval()
    return G, D, spec

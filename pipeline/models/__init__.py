"""GAN (MLP) and DCGAN generators and discriminators, built from a run's params."""

from __future__ import annotations

import json
import re
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
# G every runs.<run>.snapshot_every epochs: train writes them, evaluate draws the fid_domain curve.
SNAPSHOTS_DIR = "snapshots"
SNAPSHOT_NAME = re.compile(r"generator_epoch_(\d+)\.pt")


def snapshot_path(run_dir: Path | str, epoch: int) -> Path:
    return Path(run_dir) / SNAPSHOTS_DIR / f"generator_epoch_{epoch:04d}.pt"


def list_snapshots(run_dir: Path | str) -> list[tuple[int, Path]]:
    """(epoch, path) of every G snapshot of a run folder, by epoch."""
    found = []
    for path in (Path(run_dir) / SNAPSHOTS_DIR).glob("generator_epoch_*.pt"):
        match = SNAPSHOT_NAME.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


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

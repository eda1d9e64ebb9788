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


# The averaged G (runs.<run>.ema), in a folder that is a DVC output even when the run has none.
EMA_DIR = "ema"


def ema_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / EMA_DIR / "generator.pt"


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


def read_model_spec(run_dir: Path | str) -> dict:
    """A trained run's model.json: what G and D are, and what they were trained on."""
    spec_file = Path(run_dir) / SPEC_FILE
    if not spec_file.is_file():
        raise MissingInputError(f"{spec_file}: not found; train this run first (python -m pipeline train <run>)")
    return json.loads(spec_file.read_text())


def load_trained(run_dir: Path | str, device: str | torch.device = "cpu",
                 averaged: bool = True) -> tuple[nn.Module, nn.Module, dict]:
    """(generator, discriminator, spec) of a finished run, in eval mode, on `device`. The
    generator is the one evaluate scores: the averaged G (ema/generator.pt) when the run kept
    one and `averaged`, else G as trained; spec["scored_generator"] says which file."""
    run_dir = Path(run_dir)
    spec = read_model_spec(run_dir)
    G, D = build_models(spec["model"], image_size=spec["image_size"], channels=spec["channels"],
                        nz=spec["nz"], ngf=spec["ngf"], ndf=spec["ndf"])
    g_file = f"{EMA_DIR}/generator.pt" if averaged and spec.get("ema") is not None else "generator.pt"
    for net, name in ((G, g_file), (D, "discriminator.pt")):
        if not (run_dir / name).is_file():
            raise MissingInputError(f"{run_dir / name}: not found; train this run first (python -m pipeline train <run>)")
        net.load_state_dict(torch.load(run_dir / name, map_location="cpu", weights_only=True))
        net.to(device).eval()
    spec["scored_generator"] = g_file
    return G, D, spec

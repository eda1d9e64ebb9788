"""`python -m pipeline sample`: the exact uint8 images a run's numbers were computed from, as PNG
files, so that any FID tool (torch-fidelity's `fidelity`, clean-fid) can check them.

Generated: the scored G (the averaged one for an `ema` run) sampled as evaluate samples it
(evaluate.seed's noise, sample_mode, batch_size), the first `num` of the evaluate.num_samples
images it scores. Real: the images behind fid_reference's statistics (the protocol's split,
evaluate.num_real of them, chosen with evaluate.seed). Files are 000000.png, 000001.png, ...
in the order evaluate uses (tools that sort by name read them in that order, which KID's seeded
subsets depend on); grayscale stays one channel. docs/evaluation.md shows the commands.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from pipeline.config import Params
from pipeline.datasets import read_dataset, staged_dir
from pipeline.device import resolve_device
from pipeline.evaluate.images import dataset_images, generate_uint8, sample_batch_size
from pipeline.evaluate.reference import reference_index
from pipeline.models import load_trained


def write_pngs(images: torch.Tensor, out: Path | str, desc: str = "png") -> int:
    """uint8 N x C x H x W (C = 1 or 3) -> out/000000.png ...; the folder appears whole or not at all."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 N x (1|3) x H x W images, got {images.dtype} {tuple(images.shape)}")
    with staged_dir(out) as tmp:
        for i, image in enumerate(tqdm(images, desc=desc, unit="img", leave=False)):
            array = image.permute(1, 2, 0).numpy()
            Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(tmp / f"{i:06d}.png")
    return len(images)


def generated_images(run_dir: Path | str, params: Params, num: int | None = None) -> torch.Tensor:
    """The first `num` (default all) of the images evaluate scores for the run in `run_dir`."""
    device = resolve_device(params.evaluate.device)
    generator, _, spec = load_trained(run_dir, device)
    p = params.for_dataset(spec["dataset"]).evaluate
    if num is not None and num > p.samples:
        raise ValueError(f"--num {num}: evaluate scores {p.samples} generated images (evaluate.num_samples / "
                         f"protocol {p.protocol}); ask for at most that many")
    images = generate_uint8(generator, p.samples, spec["nz"], p.seed, sample_batch_size(p, spec), device, p.sample_mode)
    return images[:num]


def real_images(dataset_name: str, dataset_dir: Path | str, params: Params, num: int | None = None) -> torch.Tensor:
    """The first `num` (default all) real images behind the dataset's reference statistics."""
    dataset = read_dataset(dataset_dir)
    index, _, _ = reference_index(dataset, params.for_dataset(dataset_name).evaluate)
    return dataset_images(dataset, index[:num])

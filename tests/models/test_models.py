import pytest
import torch

from pipeline.models import build_models
from pipeline.models.dcgan import Discriminator as DCDiscriminator


@pytest.mark.parametrize("model", ["gan", "dcgan"])
@pytest.mark.parametrize("size, channels", [(28, 1), (64, 3), (32, 3)])
def test_shapes(model, size, channels):
    G, D = build_models(model, image_size=size, channels=channels, nz=100, ngf=16, ndf=16)
    fake = G(torch.randn(4, 100))
    assert fake.shape == (4, channels, size, size)
    assert fake.min() >= -1 and fake.max() <= 1  # tanh output
    logits = D(fake)
    assert logits.shape == (4,)
    feats = D.features(fake)
    assert len(feats) >= 2 and all(f.shape[0] == 4 for f in feats)


def test_dcgan_64_is_the_paper_architecture():
    G, D = build_models("dcgan", image_size=64, channels=3, nz=100)
    assert [f.shape[1:] for f in D.features(torch.zeros(2, 3, 64, 64))] == [
        (64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
    convs = [m for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [512, 256, 128, 64, 3]
    # N(0, 0.02) initialisation
    assert abs(convs[1].weight.std().item() - 0.02) < 0.002
    assert not any(isinstance(m, (torch.nn.MaxPool2d, torch.nn.AvgPool2d)) for m in D.modules())


def test_unsupported_size_and_model():
    with pytest.raises(ValueError, match="image_size"):
        DCDiscriminator(image_size=50)
    with pytest.raises(ValueError, match="unknown model 'vae'"):
        build_models("vae", image_size=28, channels=1, nz=100)


# A training step of these models (what each update touches and reads, the losses' closed
# forms) is tested through the real GANStep in tests/test_gan_step.py.


def test_dcgan_mnist_run_builds_the_usual_mnist_widths():
    """runs.dcgan-mnist is the DCGAN-28 people use (G 256x7x7 -> 128x14x14, D 64 -> 128): with
    ngf 64 our G had half those widths and a clearly worse fid_domain (bench/dcgan28_compare.py)."""
    from pathlib import Path

    from pipeline.config import load_params

    run = load_params(Path(__file__).resolve().parents[2] / "params.yaml").run("dcgan-mnist")
    G, D = build_models(run.model, image_size=28, channels=1, nz=run.nz, ngf=run.ngf, ndf=run.ndf)
    convs = [m for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(256, (7, 7)), (128, (4, 4)), (1, (4, 4))]
    assert [f.shape[1:] for f in D.features(torch.zeros(2, 1, 28, 28))] == [(64, 14, 14), (128, 7, 7)]

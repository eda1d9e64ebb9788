"""runs.<run>.ema: the averaged generator is kept, resumed bit-exactly, saved beside G and scored."""

import json

import pytest
import torch
from torch.optim.swa_utils import update_bn

from pipeline.config import ParamsError, load_params
from pipeline.models import build_models, ema_path, load_trained
from pipeline.train import epoch_seed, snapshot_due
from tests.test_train import make_params, run_tiny

EMA = dict(ema=0.9, ema_bn_batches=3, snapshot_every=[1, 2], precision="fp32")


def state(path):
    return torch.load(path, weights_only=True)


def test_the_averaged_g_is_saved_beside_g_and_differs_from_it(tmp_path, mnist_small):
    run_dir = run_tiny(tmp_path, mnist_small, params=make_params(epochs=2, **EMA))
    averaged, plain = state(ema_path(run_dir)), state(run_dir / "generator.pt")
    assert averaged.keys() == plain.keys()
    assert not torch.equal(averaged["net.0.weight"], plain["net.0.weight"])
    spec = json.loads((run_dir / "model.json").read_text())
    assert spec["ema"] == 0.9 and spec["ema_bn_batches"] == 3
    # The snapshots hold the averaged G (what evaluate scores); the last one is the saved file.
    last = state(run_dir / "snapshots" / "generator_epoch_0002.pt")
    assert all(torch.equal(last[k], averaged[k]) for k in averaged)
    # Its BatchNorm statistics are its own: update_bn on the seeded noise gives them again.
    G, _ = build_models("dcgan", image_size=28, channels=1, nz=16, ngf=8, ndf=8)
    G.load_state_dict(averaged)
    rng = torch.Generator().manual_seed(epoch_seed(0, -1))
    update_bn([torch.randn(32, 16, generator=rng) for _ in range(3)], G)
    assert torch.equal(G.state_dict()["net.1.running_mean"], averaged["net.1.running_mean"])
    assert not torch.equal(averaged["net.1.running_mean"], plain["net.1.running_mean"])
    # evaluate's loader returns the averaged G and says so; G as trained on request.
    scored, _, spec = load_trained(run_dir)
    assert spec["scored_generator"] == "ema/generator.pt"
    assert torch.equal(scored.state_dict()["net.0.weight"], averaged["net.0.weight"])
    raw, _, spec = load_trained(run_dir, averaged=False)
    assert spec["scored_generator"] == "generator.pt"
    assert torch.equal(raw.state_dict()["net.0.weight"], plain["net.0.weight"])


def test_the_average_follows_g_with_the_asked_decay(tmp_path, mnist_small):
    """A decay near 0 makes the average G itself; a decay near 1 keeps it where it started:
    AveragedModel's first update copies G after its first step, one Adam step (lr 2e-4 per
    weight) from the initialisation."""
    fast = run_tiny(tmp_path, mnist_small, name="fast", params=make_params(epochs=1, **{**EMA, "ema": 1e-6}))
    slow = run_tiny(tmp_path, mnist_small, name="slow", params=make_params(epochs=1, **{**EMA, "ema": 0.999999}))
    key = "net.0.weight"
    assert torch.allclose(state(ema_path(fast))[key], state(fast / "generator.pt")[key], atol=1e-5)
    torch.manual_seed(0)
    initial = build_models("dcgan", image_size=28, channels=1, nz=16, ngf=8, ndf=8)[0].state_dict()[key]
    trained = state(slow / "generator.pt")[key]
    assert (state(ema_path(slow))[key] - initial).abs().max() <= 2.01e-4
    assert (trained - initial).abs().max() > 5 * 2e-4


def test_the_average_resumes_bit_exactly(tmp_path, mnist_small):
    params = make_params(epochs=2, **EMA)
    straight = run_tiny(tmp_path, mnist_small, name="a", params=params)
    run_tiny(tmp_path, mnist_small, name="b", params=params, stop_after_epoch=1)
    resumed = run_tiny(tmp_path, mnist_small, name="b", params=params)
    for name in ("generator.pt", "discriminator.pt", "ema/generator.pt", "snapshots/generator_epoch_0001.pt"):
        a, b = state(straight / name), state(resumed / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert (straight / "samples" / "final.png").read_bytes() == (resumed / "samples" / "final.png").read_bytes()


def test_a_run_without_ema_has_an_empty_ema_folder(tmp_path, mnist_small):
    run_dir = run_tiny(tmp_path, mnist_small, params=make_params(epochs=1))
    assert (run_dir / "ema").is_dir() and not list((run_dir / "ema").iterdir())  # a DVC output all the same
    assert load_trained(run_dir)[2]["scored_generator"] == "generator.pt"


def test_snapshot_epochs_as_a_list():
    assert [e for e in range(1, 201) if snapshot_due(e, 200, [1, 2, 5, 10, 20, 50, 100])] == \
        [1, 2, 5, 10, 20, 50, 100, 200]
    assert [e for e in range(1, 7) if snapshot_due(e, 6, 4)] == [4, 6]


@pytest.mark.parametrize("bad, message", [("ema: 1.0", "runs.r.ema"), ("snapshot_every: [2, 2]", "distinct epochs")])
def test_bad_ema_and_snapshot_params_name_the_key(tmp_path, bad, message):
    (tmp_path / "params.yaml").write_text(f"runs:\n  r:\n    model: dcgan\n    dataset: mnist\n    {bad}\n")
    with pytest.raises(ParamsError, match=message):
        load_params(tmp_path / "params.yaml")

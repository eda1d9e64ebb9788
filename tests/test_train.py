import json
import math

import pytest
import torch
from PIL import Image

import pipeline.train as train_module
from pipeline.config import Params
from pipeline.models import load_trained
from pipeline.train import TrainingDiverged, train


def make_params(**run) -> Params:
    settings = {"model": "dcgan", "dataset": "mnist", "epochs": 2, "batch_size": 32, "max_images": 256,
                "ngf": 8, "ndf": 8, "nz": 16, "sample_every": 1, "device": "cpu", **run}
    return Params.model_validate({"runs": {"tiny": settings}})


def run_tiny(tmp_path, mnist_small, name="runs", **kwargs):
    params = kwargs.pop("params", None) or make_params()
    return train("tiny", params, runs_dir=tmp_path / name, datasets_dir=mnist_small.parent, **kwargs)


def metric_rows(run_dir, name):
    lines = (run_dir / "dvclive" / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()
    return [line.split("\t") for line in lines[1:]]


@pytest.mark.parametrize("model", ["gan", "dcgan"])
def test_a_run_writes_everything_the_contract_names(tmp_path, mnist_small, model):
    run_dir = run_tiny(tmp_path, mnist_small, params=make_params(model=model))
    G, D, spec = load_trained(run_dir)  # weights_only=True inside
    assert spec == {"model": model, "dataset": "mnist", "image_size": 28, "channels": 1,
                    "nz": 16, "ngf": 8, "ndf": 8, "batch_size": 32, "seed": 0, "ema": None, "ema_bn_batches": None,
                    "scored_generator": "generator.pt"}
    for name in ("generator.pt", "discriminator.pt"):
        torch.load(run_dir / name, weights_only=True)
    final = json.loads((run_dir / "dvclive" / "metrics.json").read_text())
    assert final["step"] == 1  # two epochs, steps 0 and 1
    for key in ("loss_d", "loss_g", "d_real", "d_fake"):
        assert math.isfinite(final[key])
    assert 0 < final["d_real"] < 1 and 0 < final["d_fake"] < 1
    assert len(metric_rows(run_dir, "loss_g")) == 2
    grid = Image.open(run_dir / "samples" / "final.png")
    assert grid.size == (8 * 30 + 2, 8 * 30 + 2)  # 8 x 8 tiles of 28 px with 2 px padding
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["epoch_0001.png", "epoch_0002.png", "final.png"]
    assert not list(run_dir.rglob("*.tmp*"))


def test_same_seed_same_weights_and_resume_continues_exactly(tmp_path, mnist_small):
    straight = run_tiny(tmp_path, mnist_small, name="a")
    # A run killed after its first epoch, then started again, continues at epoch 2 ...
    interrupted = run_tiny(tmp_path, mnist_small, name="b", stop_after_epoch=1)
    state = torch.load(interrupted / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    assert not (interrupted / "generator.pt").exists()
    # A kill after DVCLive logged epoch 2 but before its checkpoint was written:
    with open(interrupted / "dvclive" / "plots" / "metrics" / "loss_d.tsv", "a") as tsv:
        tsv.write("1\t99.0\n")
    resumed = run_tiny(tmp_path, mnist_small, name="b")
    # ... and ends with exactly the weights of the uninterrupted run.
    for name in ("generator.pt", "discriminator.pt"):
        a = torch.load(straight / name, weights_only=True)
        b = torch.load(resumed / name, weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert [row[0] for row in metric_rows(resumed, "loss_d")] == ["0", "1"]
    assert metric_rows(resumed, "loss_d") == metric_rows(straight, "loss_d")


def test_changed_params_start_over(tmp_path, mnist_small, capsys):
    run_tiny(tmp_path, mnist_small, stop_after_epoch=1)
    run_dir = run_tiny(tmp_path, mnist_small, params=make_params(lr=1e-3))
    assert "starting over" in capsys.readouterr().out
    assert len(metric_rows(run_dir, "loss_d")) == 2


def test_more_epochs_continue_a_finished_run(tmp_path, mnist_small, capsys):
    run_tiny(tmp_path, mnist_small)
    run_dir = run_tiny(tmp_path, mnist_small, params=make_params(epochs=3))
    assert "resuming after epoch 2 of 3" in capsys.readouterr().out
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 3


def test_nan_loss_stops_with_the_last_good_checkpoint(tmp_path, mnist_small, monkeypatch):
    real_g_loss = train_module.g_loss_fn
    calls = {"n": 0}

    def g_loss_turning_nan(logits, kind):
        calls["n"] += 1
        loss = real_g_loss(logits, kind)
        return loss * float("nan") if calls["n"] > 8 else loss  # 8 G steps per epoch here

    monkeypatch.setattr(train_module, "g_loss_fn", g_loss_turning_nan)
    with pytest.raises(TrainingDiverged, match="epoch 2.*checkpoint.pt still holds epoch 1"):
        run_tiny(tmp_path, mnist_small)
    run_dir = tmp_path / "runs" / "tiny"
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (run_dir / "generator.pt").exists()


def test_minimax_and_k_discriminator_steps(tmp_path, mnist_small):
    run_dir = run_tiny(tmp_path, mnist_small, params=make_params(model="gan", loss="minimax", d_steps=2, epochs=1))
    final = json.loads((run_dir / "dvclive" / "metrics.json").read_text())
    assert final["loss_g"] < 0  # log(1 - D(G(z))) is negative


def test_batch_larger_than_the_data_is_a_params_error(tmp_path, mnist_small):
    with pytest.raises(ValueError, match=r"runs.tiny.batch_size: 512 x d_steps 1 exceeds the 256"):
        run_tiny(tmp_path, mnist_small, params=make_params(batch_size=512))


def test_bf16_autocast_follows_fp32(tmp_path, mnist_small):
    """Mixed precision must not change what is learned: the same short run in fp32 and in
    bf16 autocast (CPU here; bench/gpu_check.sh repeats it on CUDA) ends at similar losses."""
    finals = {}
    for precision in ("fp32", "bf16"):
        run_dir = run_tiny(tmp_path, mnist_small, name=precision, params=make_params(precision=precision, epochs=3))
        finals[precision] = json.loads((run_dir / "dvclive" / "metrics.json").read_text())
    for key in ("loss_d", "loss_g", "d_real", "d_fake"):
        assert math.isfinite(finals["bf16"][key])
        assert abs(finals["bf16"][key] - finals["fp32"][key]) < 0.05 * max(1.0, abs(finals["fp32"][key])), key
    assert finals["bf16"] != finals["fp32"]  # autocast really ran in bf16


def test_fewer_epochs_than_the_checkpoint_start_over(tmp_path, mnist_small, capsys):
    run_tiny(tmp_path, mnist_small, params=make_params(epochs=3))
    run_dir = run_tiny(tmp_path, mnist_small, params=make_params(epochs=2))
    assert "holds epoch 3, more than epochs = 2; starting over" in capsys.readouterr().out
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert len(metric_rows(run_dir, "loss_d")) == 2


def test_lowering_epochs_to_a_killed_runs_last_epoch_still_exports_grid_and_snapshot(tmp_path, mnist_small):
    """Killed after epoch 1 of 3 (no grid, no snapshot at epoch 1), then `epochs: 1`: the run
    resumes with nothing left to train and must still export weights, final.png and the snapshot."""
    long = make_params(epochs=3, sample_every=3, snapshot_every=3)
    run_tiny(tmp_path, mnist_small, params=long, stop_after_epoch=1)
    run_dir = tmp_path / "runs" / "tiny"
    assert not (run_dir / "samples" / "epoch_0001.png").exists()
    run_tiny(tmp_path, mnist_small, params=make_params(epochs=1, sample_every=3, snapshot_every=3))
    assert Image.open(run_dir / "samples" / "final.png").size == (8 * 30 + 2,) * 2
    assert (run_dir / "snapshots" / "generator_epoch_0001.pt").is_file()
    load_trained(run_dir)

"""`auto` speed settings per hardware, and runs/<run>/train.json: how a run was trained."""

import json

import pytest
import torch

import pipeline.train as train_module
from pipeline.config import Params
from pipeline.device import cpu_has_fast_bf16, describe_device
from pipeline.train import Speed
from tests.test_train import make_params, run_tiny

CPU = torch.device("cpu")


def run_params(**run):
    return Params.model_validate({"runs": {"r": {"model": "dcgan", "dataset": "mnist", **run}}}).run("r")


def test_cpu_bf16_capability_is_torchs_own_answer():
    # torch's own per-instruction checks (another path to the same cpuinfo) must agree.
    assert cpu_has_fast_bf16() == (torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    described = describe_device(CPU)
    assert described["kind"] == "cpu" and described["name"] and described["capability"] in ("AVX512", "AVX2", "DEFAULT")
    assert described["avx512_bf16"] == torch.cpu._is_avx512_bf16_supported()
    assert described["threads"] == torch.get_num_threads()


@pytest.mark.parametrize("fast, precision, channels_last", [(True, "bf16", True), (False, "fp32", False)])
def test_auto_on_the_cpu_follows_its_bf16_hardware(monkeypatch, fast, precision, channels_last):
    monkeypatch.setattr(train_module, "cpu_has_fast_bf16", lambda: fast)
    speed = Speed.resolve(run_params(model="dcgan"), CPU)
    assert (speed.precision, speed.channels_last, speed.fused_adam) == (precision, channels_last, True)
    # The MLP GAN failed bench/bf16_quality.py's rule: fp32 on every CPU.
    mlp = Speed.resolve(run_params(model="gan"), CPU)
    assert (mlp.precision, mlp.channels_last) == ("fp32", False)


def test_explicit_settings_win_over_auto(monkeypatch):
    monkeypatch.setattr(train_module, "cpu_has_fast_bf16", lambda: True)
    fp32 = Speed.resolve(run_params(precision="fp32"), CPU)
    assert (fp32.precision, fp32.channels_last) == ("fp32", False)  # no channels_last without bf16 on a CPU
    mixed = Speed.resolve(run_params(precision="bf16", channels_last=False), CPU)
    assert (mixed.precision, mixed.channels_last) == ("bf16", False)
    monkeypatch.setattr(train_module, "cpu_has_fast_bf16", lambda: False)
    assert Speed.resolve(run_params(precision="bf16"), CPU).precision == "bf16"  # asked for: given, even if slow


def test_train_json_records_device_precision_versions_and_speed(tmp_path, mnist_small):
    run_dir = run_tiny(tmp_path, mnist_small, params=make_params(precision="bf16", channels_last=True, epochs=2))
    record = json.loads((run_dir / "train.json").read_text())
    assert record["precision"] == "bf16" and record["memory_format"] == "channels_last" and not record["mixed"]
    assert record["device"].startswith("cpu (")
    (stretch,) = record["stretches"]
    assert stretch["epochs"] == [1, 2] and stretch["torch"] == torch.__version__ and stretch["cuda"] is None
    assert stretch["processes"] == 1 and stretch["nodes"] == 1 and stretch["fused_adam"] is True
    assert stretch["device"] == describe_device(CPU)
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert all(e["seconds"] > 0 and e["images_per_s"] > 0 for e in record["epochs"])
    # The images/s the loop logs to DVCLive are the record's.
    logged = json.loads((run_dir / "dvclive" / "metrics.json").read_text())["images_per_s"]
    assert record["epochs"][-1]["images_per_s"] == pytest.approx(logged, rel=1e-3)
    assert record["seconds_per_epoch"] > 0 and record["train_seconds"] >= record["seconds_per_epoch"]


def test_a_resume_under_other_resolved_settings_continues_says_so_and_records_both(tmp_path, mnist_small, monkeypatch,
                                                                                    capsys):
    """The documented rule (docs/speed.md, 'Resuming elsewhere'): continue, one line naming what
    changed, both stretches in train.json, the run marked mixed."""
    params = make_params(epochs=2)  # precision and channels_last: auto
    monkeypatch.setattr(train_module, "cpu_has_fast_bf16", lambda: False)
    run_tiny(tmp_path, mnist_small, params=params, stop_after_epoch=1)
    capsys.readouterr()
    monkeypatch.setattr(train_module, "cpu_has_fast_bf16", lambda: True)  # as if moved to an AMX machine
    run_dir = run_tiny(tmp_path, mnist_small, params=params)
    out = capsys.readouterr().out
    assert "resuming after epoch 1 of 2" in out
    (line,) = [l for l in out.splitlines() if "other settings" in l]
    # Only what changed is named: the device itself did not.
    assert line.split("other settings: ")[1].split(";")[0] == \
        "epochs 1-1 ran with precision fp32 -> bf16, memory_format contiguous -> channels_last"
    record = json.loads((run_dir / "train.json").read_text())
    assert [(s["epochs"], s["precision"]) for s in record["stretches"]] == [([1, 1], "fp32"), ([2, 2], "bf16")]
    assert record["mixed"] and record["precision"] == "mixed: bf16, fp32"
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    # The checkpoint carries the same record (a resume always matches its epoch) and loads safely.
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["record"] == record


def test_a_resume_under_the_same_settings_is_one_stretch_in_the_record(tmp_path, mnist_small, capsys):
    run_tiny(tmp_path, mnist_small, params=make_params(epochs=2, precision="fp32"), stop_after_epoch=1)
    run_dir = run_tiny(tmp_path, mnist_small, params=make_params(epochs=2, precision="fp32"))
    assert "other settings" not in capsys.readouterr().out
    record = json.loads((run_dir / "train.json").read_text())
    assert [s["epochs"] for s in record["stretches"]] == [[1, 1], [2, 2]] and not record["mixed"]


def test_a_checkpoint_from_before_records_existed_is_marked_unknown(tmp_path, mnist_small):
    run_tiny(tmp_path, mnist_small, params=make_params(epochs=2), stop_after_epoch=1)
    checkpoint = tmp_path / "runs" / "tiny" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    del state["record"]
    torch.save(state, checkpoint)
    record = json.loads((run_tiny(tmp_path, mnist_small, params=make_params(epochs=2)) / "train.json").read_text())
    assert record["stretches"][0] == {"epochs": [1, 1], "unrecorded": True} and record["mixed"]


def test_a_start_with_nothing_left_to_train_adds_no_stretch(tmp_path, mnist_small, monkeypatch):
    run_dir = run_tiny(tmp_path, mnist_small, params=make_params(epochs=2))
    before = json.loads((run_dir / "train.json").read_text())
    monkeypatch.setattr(train_module, "cpu_has_fast_bf16", lambda: not cpu_has_fast_bf16())
    run_tiny(tmp_path, mnist_small, params=make_params(epochs=2))  # a finished run started again
    assert json.loads((run_dir / "train.json").read_text()) == before

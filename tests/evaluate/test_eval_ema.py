"""evaluate scores the averaged G of a run with runs.<run>.ema, and says so."""

from __future__ import annotations

import json
import shutil

from pipeline.config import Params
from pipeline.evaluate.reference import compute_reference
from pipeline.evaluate.run import evaluate_run
from pipeline.train import train
from tests.evaluate.eval_helpers import make_params


def test_an_ema_run_is_scored_by_its_average_and_named_so(tmp_path, mnist_dir, classifier):
    run = {"model": "dcgan", "dataset": "mnist", "epochs": 1, "batch_size": 64, "max_images": 1024, "ngf": 8,
           "ndf": 8, "nz": 16, "device": "cpu", "precision": "fp32", "ema": 0.9, "ema_bn_batches": 4}
    run_dir = train("ema-run", Params.model_validate({"runs": {"ema-run": run}}), runs_dir=tmp_path / "runs",
                    datasets_dir=mnist_dir.parent)
    params = make_params()
    reference = tmp_path / "reference"
    compute_reference("mnist", mnist_dir, reference, params, classifier_path=classifier[0])
    averaged = evaluate_run("ema-run", run_dir, mnist_dir, reference, params, classifier_path=classifier[0])
    generator = json.loads((run_dir / "eval" / "protocol.json").read_text())["generated"]["generator"]
    assert generator["weights"] == "ema/generator.pt" and generator["ema_decay"] == 0.9
    assert "moving average" in generator["what"] and "probe still reads D" in generator["what"]

    # The same run folder told it has no average: G as trained, other samples, another number;
    # D (and so the probe) is the same in both.
    plain_dir = tmp_path / "plain"
    shutil.copytree(run_dir, plain_dir)
    spec = json.loads((plain_dir / "model.json").read_text())
    (plain_dir / "model.json").write_text(json.dumps({**spec, "ema": None}))
    plain = evaluate_run("ema-run", plain_dir, mnist_dir, reference, params, classifier_path=classifier[0])
    assert json.loads((plain_dir / "eval" / "protocol.json").read_text())["generated"]["generator"]["weights"] == \
        "generator.pt"
    assert averaged["fid_domain"] != plain["fid_domain"]
    assert averaged["probe_acc"] == plain["probe_acc"]

"""fid_domain, mode_coverage and mode_kl are logged during training, every evaluate.fid_every epochs."""

import json
import math

import pytest

from pipeline.config import EvaluateParams, Params
from pipeline.evaluate.reference import compute_reference
from pipeline.evaluate.run import DomainFID
from pipeline.models import load_trained
from pipeline.train import train

from tests.evaluate.eval_helpers import make_params


def rows(run_dir, name):
    return [line.split("\t") for line in
            (run_dir / "dvclive" / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()[1:]]


def test_training_logs_the_domain_fid_curve(tmp_path, mnist_dir, classifier):
    classifier_path, _ = classifier
    evaluate = make_params().evaluate.model_dump()
    evaluate.update(fid_every=2, fid_every_samples=300)
    run = {"model": "dcgan", "dataset": "mnist", "epochs": 3, "batch_size": 32, "max_images": 256,
           "ngf": 8, "ndf": 8, "nz": 16, "sample_every": 3, "device": "cpu"}
    params = Params(runs={"tiny": run}, evaluate=EvaluateParams(**evaluate))
    run_dir = train("tiny", params, runs_dir=tmp_path / "runs", datasets_dir=mnist_dir.parent,
                    classifier_dir=classifier_path.parent)
    # Epochs 2 (fid_every) and 3 (the last): DVCLive steps 1 and 2.
    fid = rows(run_dir, "fid_domain")
    assert [step for step, _ in fid] == ["1", "2"]
    assert all(math.isfinite(float(value)) and float(value) > 0 for _, value in fid)
    coverage = [int(float(value)) for _, value in rows(run_dir, "mode_coverage")]
    assert all(0 <= c <= 10 for c in coverage)
    final = json.loads((run_dir / "dvclive" / "metrics.json").read_text())
    assert final["fid_domain"] == float(fid[-1][1])
    # The curve's last point is what evaluate's DomainFID gives against fid_reference's statistics.
    reference = tmp_path / "reference" / "mnist"
    compute_reference("mnist", mnist_dir, reference, params, classifier_path)
    G, _, _ = load_trained(run_dir)
    tracker = DomainFID(reference, classifier_path, "cpu")
    assert tracker.score(G, 300, 16, params.evaluate.seed) == pytest.approx(final["fid_domain"], rel=1e-6)
    assert len(rows(run_dir, "loss_d")) == 3  # the loss curve is untouched

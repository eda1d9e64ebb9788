"""The fid_domain curve: train snapshots G, evaluate measures every snapshot (training never
needs an evaluator, so a new classifier or evaluate param never retrains)."""

import csv
import json

import pytest
import torch

from pipeline.config import EvaluateParams, Params
from pipeline.evaluate.classifier import classify, load_classifier
from pipeline.evaluate.fid import feature_statistics
from pipeline.evaluate.images import generate_uint8
from pipeline.evaluate.reference import compute_reference, load_reference
from pipeline.evaluate.run import evaluate_run
from pipeline.models import build_models
from pipeline.train import train

from tests.evaluate.eval_helpers import make_params


def test_snapshots_become_the_domain_fid_curve(tmp_path, mnist_dir, classifier):
    classifier_path, _ = classifier
    evaluate = make_params(curve_samples=300, probe_per_class=[10]).evaluate.model_dump()
    run = {"model": "dcgan", "dataset": "mnist", "epochs": 3, "batch_size": 32, "max_images": 256,
           "ngf": 8, "ndf": 8, "nz": 16, "sample_every": 3, "snapshot_every": 2, "device": "cpu"}
    params = Params(runs={"tiny": run}, evaluate=EvaluateParams(**evaluate))
    # Training runs with no classifier anywhere in reach.
    run_dir = train("tiny", params, runs_dir=tmp_path / "runs", datasets_dir=mnist_dir.parent)
    snapshots = sorted(p.name for p in (run_dir / "snapshots").iterdir())
    assert snapshots == ["generator_epoch_0002.pt", "generator_epoch_0003.pt"]  # every 2, and the last
    assert not (run_dir / "dvclive" / "plots" / "metrics" / "fid_domain.tsv").exists()
    # The last snapshot is the final G.
    final = torch.load(run_dir / "generator.pt", weights_only=True)
    last = torch.load(run_dir / "snapshots" / snapshots[-1], weights_only=True)
    assert all(torch.equal(final[k], last[k]) for k in final)

    reference = tmp_path / "reference" / "mnist"
    compute_reference("mnist", mnist_dir, reference, params, classifier_path)
    evaluate_run("tiny", run_dir, mnist_dir, reference, params, classifier_path)
    with open(run_dir / "curve.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [int(r["epoch"]) for r in rows] == [2, 3]
    assert all(0 <= int(r["mode_coverage"]) <= 10 for r in rows)

    # The epoch-3 point is the FID of the final G on curve_samples samples against the reference.
    spec = json.loads((run_dir / "model.json").read_text())
    G, _ = build_models("dcgan", image_size=28, channels=1, nz=16, ngf=8, ndf=8)
    G.load_state_dict(final)
    fakes = generate_uint8(G, 300, spec["nz"], params.evaluate.seed, 250)
    features, _ = classify(load_classifier(classifier_path), fakes)
    expected = load_reference(reference).domain.frechet().distance(*feature_statistics(features))
    assert float(rows[-1]["fid_domain"]) == pytest.approx(expected, rel=1e-6)
    assert float(rows[0]["fid_domain"]) != pytest.approx(expected, rel=1e-6)  # epoch 2 is another G


def test_a_run_without_snapshots_gets_an_empty_curve(tmp_path, mnist_dir, classifier):
    classifier_path, _ = classifier
    run = {"model": "gan", "dataset": "mnist", "epochs": 1, "batch_size": 32, "max_images": 64, "nz": 16,
           "device": "cpu"}
    params = Params(runs={"tiny": run}, evaluate=make_params(probe_per_class=[10]).evaluate)
    run_dir = train("tiny", params, runs_dir=tmp_path / "runs", datasets_dir=mnist_dir.parent)
    assert (run_dir / "snapshots").is_dir() and not any((run_dir / "snapshots").iterdir())
    reference = tmp_path / "reference"
    compute_reference("mnist", mnist_dir, reference, params, classifier_path)
    evaluate_run("tiny", run_dir, mnist_dir, reference, params, classifier_path)
    assert (run_dir / "curve.tsv").read_text() == "epoch\tfid_domain\tmode_coverage\tmode_kl\n"

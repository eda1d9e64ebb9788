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
    assert all(float(r["fid_domain_std"]) > 0 for r in rows)
    assert all(r["fid"] == "" and r["fid_std"] == "" for r in rows)  # evaluate.inception: false
    curve = json.loads((run_dir / "eval" / "protocol.json").read_text())["curve"]
    assert curve["samples"] == 300 and curve["best_epoch_fid"] is None  # no Inception FID to rank by


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
    assert (run_dir / "curve.tsv").read_text() == \
        "epoch\tfid\tfid_std\tfid_domain\tfid_domain_std\tmode_coverage\tmode_kl\n"


class TinyFeatures(torch.nn.Module):
    """Stands in for the Inception (the real one needs more than 2,048 samples a point): 12-d
    features, the 2 x 2 mean-pooled RGB image, so a few hundred samples give a full-rank FID."""

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x.float() / 255, 2).flatten(1)


def test_the_curve_carries_the_inception_space_fid_with_its_spread_and_the_best_epoch(tmp_path, mnist_dir):
    from pipeline.datasets import read_dataset
    from pipeline.evaluate.fid import FrechetReference
    from pipeline.evaluate.images import dataset_images
    from pipeline.evaluate.inception import inception_features
    from pipeline.evaluate.run import best_epoch, training_curve

    run = {"model": "dcgan", "dataset": "mnist", "epochs": 3, "batch_size": 32, "max_images": 256,
           "ngf": 8, "ndf": 8, "nz": 16, "sample_every": 3, "snapshot_every": [1, 3], "device": "cpu"}
    params = Params(runs={"tiny": run}, evaluate=make_params(curve_samples=300).evaluate)
    run_dir = train("tiny", params, runs_dir=tmp_path / "runs", datasets_dir=mnist_dir.parent)
    extractor = TinyFeatures()
    dataset = read_dataset(mnist_dir)
    real = inception_features(extractor, dataset_images(dataset, dataset.indices("test")), batch_size=250)
    reference = FrechetReference(*feature_statistics(real), num=len(real))
    spec = json.loads((run_dir / "model.json").read_text())
    rows = training_curve(run_dir, spec, params, torch.device("cpu"), None,
                          (extractor, {"extractor": "tiny-test", "precision": "fp32"}, False, reference))
    assert [r["epoch"] for r in rows] == [1, 3]
    assert all(r["fid"] > 0 and r["fid_std"] > 0 and r["fid_domain"] is None for r in rows)
    # The last point is the final G's FID at curve_samples, through the same extractor.
    G, _ = build_models("dcgan", image_size=28, channels=1, nz=16, ngf=8, ndf=8)
    G.load_state_dict(torch.load(run_dir / "generator.pt", weights_only=True))
    fakes = generate_uint8(G, 300, 16, params.evaluate.seed, 250)
    expected = reference.distance(*feature_statistics(inception_features(extractor, fakes, batch_size=250)))
    assert rows[-1]["fid"] == pytest.approx(expected, rel=1e-6)
    assert best_epoch(rows)["fid"] == min(r["fid"] for r in rows)

"""Our default dcgan-mnist against a plain pytorch/examples-style DCGAN-28, side by side.

For each of S seeds, trains for E epochs (equal for both, on the full MNIST train split):

- ours: `pipeline.train.train("dcgan-mnist", ...)` with params.yaml's run settings, only
  `epochs` and `seed` overridden (plus any `--set key=value`), in a scratch runs folder;
- reference: bench/dcgan28.py's model and plain loop, with the run's batch size, lr, beta1, nz.

Every generator is scored with the project's fid_domain: FID on the 128-d features of the
project's MNIST LeNet (pipeline.evaluate.classifier), generated 10,000 samples against the
10,000 MNIST test images. Each generator is scored on `--sets` independent sets of samples
(other noise seeds): the mean is its score, the std its sampling spread. The table gives
both per seed, the mean +- std over seeds, and whether the gap between the two models is
beyond the seed spread (|mean difference| > 2 standard errors, Welch).

Resume-safe: everything lives in --work (trained runs checkpoint every epoch; scores are
cached per generator), so rerunning the same command after a kill continues where it was.
Not a test: run it by hand (about 2 x S x E epochs of ~1 min each on a 2-core CPU),

    .venv/bin/python bench/dcgan28_compare.py [--seeds 3] [--epochs 3] [--work /tmp/dcgan28]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dcgan28 import G_WIDTHS, train_reference  # noqa: E402  (bench/ is on sys.path as the script's folder)

from pipeline.atomic import write_json_atomic  # noqa: E402
from pipeline.comparisons import compare, seed_estimate  # noqa: E402
from pipeline.config import MnistParams, RunParams, load_params  # noqa: E402
from pipeline.datasets import read_dataset  # noqa: E402
from pipeline.evaluate.classifier import classify, load_classifier, train_mnist_classifier  # noqa: E402
from pipeline.evaluate.fid import feature_statistics, frechet_distance  # noqa: E402
from pipeline.evaluate.images import dataset_images, generate_uint8  # noqa: E402
from pipeline.ingest.mnist import ingest_mnist  # noqa: E402
from pipeline.models import load_trained  # noqa: E402

RUN = "dcgan-mnist"
SHARED_MNIST = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared")) / "data" / "mnist"
NOISE_SEED = 10_000  # sample set j draws its noise from NOISE_SEED + j, the same for every generator


def prepare_data(work: Path, source: str) -> Path:
    dataset = work / "datasets" / "mnist"
    if not (dataset / "meta.json").is_file():
        print(f"ingesting MNIST from {source} into {dataset}", flush=True)
        ingest_mnist(MnistParams(source=source), dataset)
    return dataset


def prepare_classifier(work: Path, dataset: Path, params) -> Path:
    """The project's LeNet: the pipeline's own if `dvc repro` built it, else trained once here."""
    built = REPO / "data" / "evaluators" / "mnist" / "classifier.pt"  # domain_evaluator@mnist
    if built.is_file():
        return built
    out = work / "classifier"
    if not (out / "classifier.pt").is_file():
        print("training the MNIST classifier (evaluate.classifier_* params)", flush=True)
        metrics = train_mnist_classifier(dataset, out, params)
        print(f"classifier test accuracy {metrics['test_accuracy']:.4f}", flush=True)
    return out / "classifier.pt"


def parse_sets(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if not value:
            raise SystemExit(f"--set {pair!r}: expected key=value, e.g. ngf=128")
        out[key] = yaml.safe_load(value)
    return out


def train_ours(params, work: Path, tag: str, dataset: Path, seed: int, epochs: int, overrides: dict):
    from pipeline.train import train  # slow import (DVCLive); only when training is left to do

    # sample_every 1: train() ends by copying the last epoch's grid, so a run resumed from a
    # longer run's checkpoint (--epochs raised step by step) needs a grid for every epoch.
    run = RunParams.model_validate({**params.run(RUN).model_dump(), **overrides, "epochs": epochs, "seed": seed,
                                    "sample_every": 1})
    one = params.model_copy(update={"runs": {RUN: run}})
    runs_dir = work / f"ours-{tag}" / f"seed{seed}"
    # An empty classifier folder: no fid_domain curve during training (we score at the end).
    out = train(RUN, one, runs_dir=runs_dir, datasets_dir=dataset.parent)
    G, _, spec = load_trained(out)
    return G, spec["nz"]


def score(G, nz: int, classifier, real_stats, n: int, sets: int, batch_size: int) -> list[float]:
    scores = []
    for j in range(sets):
        fake = generate_uint8(G, n, nz, seed=NOISE_SEED + j, batch_size=batch_size)
        features, _ = classify(classifier, fake)
        scores.append(frechet_distance(*feature_statistics(features), *real_stats))
    return scores


def cached_score(path: Path, key: dict, make) -> list[float] | None:
    """The cached scores at `path` if made with `key`, else make() (None: skip) and cache them.

    Under an exclusive lock on the run's folder, so two invocations sharing --work (say, the
    default and --set ngf=128 run side by side) never train the same run at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                return saved["fid_domain"]
        if make is None:
            return None
        values = make()
        write_json_atomic(path, {"key": key, "fid_domain": values})
        return values


def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def cell(values: list[float] | None, spread: bool = True) -> str:
    if not values:
        return "-"
    m, sd = mean_std(values)
    return f"{m:.2f} +- {sd:.2f}" if spread else f"{m:.2f}"


def verdict(ours: list[float], ref: list[float]) -> str:
    """The report's verdict (pipeline/comparisons.py): Welch's t-test on the seed means, with
    the t distribution's degrees of freedom (with 3 seeds a t of 2 is far from 95%)."""
    test = compare(seed_estimate(ours), seed_estimate(ref), ("ours", "reference"))
    if test.p is None:
        return f"ours - reference = {test.diff:+.2f}: {test.basis}"
    # Also whether the seeds separate completely: every seed of one model better than every seed of the other.
    apart = max(ours) < min(ref) or max(ref) < min(ours)
    word = ("within the seed spread: no difference shown" if test.p >= 0.05 else
            f"ours {'WORSE' if test.diff > 0 else 'BETTER'} beyond the seed spread")
    return (f"ours - reference = {test.diff:+.2f} (noise sd {test.noise:.2f}, {test.basis}, p = {test.p:.2g}): "
            f"{word}; seeds {'separate completely' if apart else 'overlap'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "dcgan28",
                        help="scratch folder (resume-safe cache)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--mnist-source", default=None,
                        help=f"MNIST IDX folder or 'download' (default: {SHARED_MNIST} if present, else mnist.source)")
    parser.add_argument("--samples", type=int, default=10_000, help="generated images per set")
    parser.add_argument("--sets", type=int, default=5, help="independent sample sets per generator (the spread)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a runs.{RUN} param for ours only, e.g. --set ngf=128 (repeatable)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="train on the first N train images only (a quick check of the script, not a result)")
    parser.add_argument("--skip-reference", action="store_true",
                        help="train and score ours only; reference cells come from --work's cache where present")
    args = parser.parse_args()
    started = time.time()

    params = load_params(args.params)
    run = params.run(RUN)
    overrides = parse_sets(args.overrides)
    if args.max_images:
        overrides["max_images"] = args.max_images
    source = args.mnist_source or (str(SHARED_MNIST) if SHARED_MNIST.is_dir() else params.mnist.source)
    dataset_dir = prepare_data(args.work, source)
    classifier_path = prepare_classifier(args.work, dataset_dir, params)
    classifier = load_classifier(classifier_path)

    dataset = read_dataset(dataset_dir)
    test = dataset_images(dataset, dataset.indices("test"))
    real_features, _ = classify(classifier, test)
    real_stats = feature_statistics(real_features)
    train_images = torch.from_numpy(np.ascontiguousarray(dataset.images[dataset.indices("train")[:args.max_images]]))

    ours_settings = {**run.model_dump(), **overrides}
    # Runs are filed by the settings they train with, so `--set ngf=128` today and a params.yaml
    # saying ngf: 128 tomorrow share one cache.
    trained = {k: v for k, v in ours_settings.items() if k not in ("epochs", "seed", "sample_every")}
    digest = hashlib.sha256(json.dumps(trained, sort_keys=True).encode()).hexdigest()[:8]
    tag = f"ngf{ours_settings['ngf']}-ndf{ours_settings['ndf']}-{digest}"
    score_key = {"epochs": args.epochs, "samples": args.samples, "sets": args.sets,
                 "classifier": hashlib.sha256(classifier_path.read_bytes()).hexdigest()}
    ref_suffix = f"-max{args.max_images}" if args.max_images else ""
    results: dict[str, dict[int, list[float]]] = {"ours": {}, "reference": {}}
    for seed in range(args.seeds):  # interleaved, so a cut-short run still compares like with like
        def make_ours():
            G, nz = train_ours(params, args.work, tag, dataset_dir, seed, args.epochs, overrides)
            return score(G, nz, classifier, real_stats, args.samples, args.sets, params.evaluate.batch_size)

        def make_reference():
            G = train_reference(train_images, args.work / f"reference{ref_suffix}" / f"seed{seed}", seed=seed,
                                epochs=args.epochs, batch_size=run.batch_size, lr=run.lr, beta1=run.beta1,
                                nz=run.nz)
            return score(G, run.nz, classifier, real_stats, args.samples, args.sets, params.evaluate.batch_size)

        ours_key = {**score_key, "settings": trained}
        results["ours"][seed] = cached_score(args.work / f"ours-{tag}" / f"seed{seed}" / "scores.json",
                                             ours_key, make_ours)
        print(f"ours seed {seed}: fid_domain {cell(results['ours'][seed])}", flush=True)
        results["reference"][seed] = cached_score(args.work / f"reference{ref_suffix}" / f"seed{seed}" / "scores.json",
                                                  score_key, None if args.skip_reference else make_reference)
        print(f"reference seed {seed}: fid_domain {cell(results['reference'][seed])}", flush=True)

    ngf, ndf = ours_settings["ngf"], ours_settings["ndf"]
    print()
    split = f"the first {len(train_images):,} MNIST train images" if args.max_images else "the full MNIST train split"
    print(f"fid_domain (lower is better) after {args.epochs} epochs on {split}, "
          f"batch {run.batch_size}, Adam {run.lr:g} / beta1 {run.beta1}; each cell: mean +- std over "
          f"{args.sets} sets of {args.samples:,} samples vs the 10,000 test images")
    print(f"ours: dcgan-mnist (pipeline.train, ngf {ngf}: G {ngf * 2}x7x7 -> {ngf}x14x14, ndf {ndf}"
          f"{', ' + ', '.join(f'{k}={v}' for k, v in overrides.items()) if overrides else ''}); "
          f"reference: bench/dcgan28.py (G {G_WIDTHS[0]}x7x7 -> {G_WIDTHS[1]}x14x14, D 64 -> 128)")
    print(f"{'seed':<24}{'ours':>18}{'reference':>18}")
    for seed in range(args.seeds):
        print(f"{seed:<24}{cell(results['ours'][seed]):>18}{cell(results['reference'][seed]):>18}")
    # A model's score for a seed: the mean over its sample sets. Missing cells (--skip-reference
    # before the reference ran) are left out.
    per_seed = {k: [float(np.mean(v)) for v in r.values() if v is not None] for k, r in results.items()}
    print(f"{'mean +- std over seeds':<24}{cell(per_seed['ours']):>18}{cell(per_seed['reference']):>18}")
    sampling = {k: [mean_std(v)[1] for v in r.values() if v is not None] for k, r in results.items()}
    print(f"{'mean sampling spread':<24}{cell(sampling['ours'], spread=False):>18}"
          f"{cell(sampling['reference'], spread=False):>18}")
    if min(len(v) for v in per_seed.values()) > 1:
        print(verdict(per_seed["ours"], per_seed["reference"]))
    write_json_atomic(args.work / f"results-{tag}-e{args.epochs}.json",
                      {"epochs": args.epochs, "overrides": overrides, "ours_settings": ours_settings,
                       "fid_domain": {k: {str(s): v for s, v in r.items()} for k, r in results.items()}})
    print(f"wall time {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()

"""Does bf16 + channels_last training on the CPU give generators as good as fp32? The evidence
behind `precision: auto` and `channels_last: auto` on CPUs with AMX / AVX512-BF16
(pipeline/train.py: Speed.resolve; issue "Twice as fast on this CPU").

Two arms, equal in everything but the training arithmetic:

- fp32: `precision: fp32`, `channels_last: false` (what `auto` gave on every CPU before);
- bf16: `precision: bf16`, `channels_last: true` (what `auto` now gives on such a CPU).

For each model (`dcgan-mnist` 3 epochs, `gan-mnist` 10 epochs, params.yaml's settings
otherwise) and each training seed (default 5 per arm), a fresh run is trained on the full real
MNIST train split with the project's own loop (pipeline.train.train) and scored:

- FID on Inception pool3 features: 10,000 samples (evaluate.seed's noise, eval-mode
  BatchNorm, uint8 as evaluate draws them) against the 10,000 test images, both through ONE
  extractor, the compiled bf16 Inception (`inception_precision: bf16-compiled`): ~4x faster than the standard fp32 network and fine for a relative comparison, but
  its numbers are not the standard FID and are not comparable with docs/results;
- fid_domain: FID on the project's MNIST LeNet features, same samples and test images.

Sampling G and the LeNet run in fp32 for both arms (the evaluation never follows the
training's precision); the Inception is the one bf16 extractor above, the same for both arms. Per model and metric it prints each arm's mean and seed
standard deviation, the difference bf16 - fp32 with its 95% interval (Welch), and the verdict of
pipeline/comparisons.py (Welch t over seeds; Holm over the four comparisons shown beside).
The rule for bf16 to become the CPU default, per model and metric:
  1. the difference is not beyond noise (Welch p >= 0.05, uncorrected: the stricter choice when
     the claim is "no harm"), and
  2. the bf16 mean is not worse than the fp32 mean by more than one fp32 seed std.

Resume-safe and parallel: each run's scores are cached in --work under a lock, so a killed
bench continues, and two shards can share the cores (`--shard 0/2` and `--shard 1/2` in two
processes with OMP_NUM_THREADS=1 each; then one plain call prints the table from the cache).
Not a test; about 2 h on a 2-core CPU with two shards:

    .venv/bin/python bench/bf16_quality.py [--seeds 5] [--work /tmp/bf16-quality] [--shard I/N]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.atomic import write_json_atomic  # noqa: E402
from pipeline.comparisons import compare, holm, seed_estimate  # noqa: E402
from pipeline.config import MnistParams, load_params  # noqa: E402
from pipeline.datasets import read_dataset  # noqa: E402
from pipeline.evaluate.classifier import classify, load_classifier, train_mnist_classifier  # noqa: E402
from pipeline.evaluate.fid import FrechetReference, feature_statistics  # noqa: E402
from pipeline.evaluate.images import dataset_images, generate_uint8  # noqa: E402
from pipeline.evaluate.inception import extractor_identity, load_inception, remembered_features  # noqa: E402
from pipeline.ingest.mnist import ingest_mnist  # noqa: E402
from pipeline.models import load_trained  # noqa: E402

SHARED = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared"))
ARMS = {"fp32": {"precision": "fp32", "channels_last": False},
        "bf16": {"precision": "bf16", "channels_last": True}}
EPOCHS = {"dcgan-mnist": 3, "gan-mnist": 10}
METRICS = ("fid_bf16_inception", "fid_domain")
SAMPLES = 10_000
INCEPTION = dict(precision="bf16", compile=True)  # one extractor for both arms (see the docstring)


def prepare(work: Path, params) -> tuple[Path, Path]:
    """(dataset folder, classifier file): real MNIST ingested and the LeNet trained, once."""
    dataset, classifier = work / "datasets" / "mnist", work / "classifier"
    with locked(work / "prepare.lock"):  # one shard prepares, the other waits and reuses
        if not (dataset / "meta.json").is_file():
            source = SHARED / "data" / "mnist"
            print(f"ingesting MNIST from {source}", flush=True)
            ingest_mnist(MnistParams(source=str(source) if source.is_dir() else params.mnist.source), dataset)
        if not (classifier / "classifier.pt").is_file():
            print("training the MNIST classifier (evaluate.classifier_* params)", flush=True)
            train_mnist_classifier(dataset, classifier, params)
    return dataset, classifier / "classifier.pt"


class locked:
    """An exclusive lock on a file, so two shards never do the same work at once."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def __enter__(self):
        self.file = open(self.path, "w")
        fcntl.flock(self.file, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        self.file.close()


class Scorer:
    """The two feature spaces with the test images' statistics, built lazily once per process."""

    def __init__(self, dataset_dir: Path, classifier_path: Path, batch_size: int):
        self.batch_size = batch_size
        self.classifier = load_classifier(classifier_path)
        self.inception, source = load_inception("auto", antialias=False)
        self.identity = extractor_identity(source, antialias=False, device="cpu", **INCEPTION)
        test = dataset_images(read_dataset(dataset_dir), read_dataset(dataset_dir).indices("test"))
        self.real = {"fid_bf16_inception": FrechetReference(*feature_statistics(self.features(test, "test"))),
                     "fid_domain": FrechetReference(*feature_statistics(classify(self.classifier, test)[0]))}

    def features(self, images: torch.Tensor, desc: str) -> np.ndarray:
        return remembered_features(self.inception, self.identity, images, batch_size=self.batch_size,
                                   device="cpu", desc=f"inception {desc}", compile=INCEPTION["compile"])

    def __call__(self, run_dir: Path, seed: int) -> dict:
        G, _, spec = load_trained(run_dir)
        fakes = generate_uint8(G, SAMPLES, spec["nz"], seed, self.batch_size)  # fp32, eval-mode BatchNorm
        spaces = {"fid_bf16_inception": self.features(fakes, run_dir.name),
                  "fid_domain": classify(self.classifier, fakes)[0]}
        # The sampling spread only in the 128-d space: ten 2048-d bootstrap draws cost a minute
        # a run, and the rule needs the seed spread, which holds the sampling spread.
        out = {"fid_bf16_inception": self.real["fid_bf16_inception"].distance(
            *feature_statistics(spaces["fid_bf16_inception"]))}
        out["fid_domain"], out["fid_domain_std"] = self.real["fid_domain"].with_spread(
            spaces["fid_domain"], draws=10, seed=seed)
        return out


def train_run(params, model: str, arm: str, seed: int, work: Path, dataset: Path,
              max_images: int | None) -> tuple[Path, dict]:
    from pipeline.train import train  # slow import (DVCLive); only when a run is left to train

    settings = {**params.run(model).model_dump(), **ARMS[arm], "epochs": EPOCHS[model], "seed": seed,
                "snapshot_every": None, "max_images": max_images}
    run = type(params.run(model)).model_validate(settings)
    name = f"{model}-{arm}-s{seed}"
    started = time.perf_counter()
    run_dir = train(name, params.model_copy(update={"runs": {name: run}}), runs_dir=work / "runs",
                    datasets_dir=dataset.parent)
    record = json.loads((run_dir / "train.json").read_text()) if (run_dir / "train.json").is_file() else {}
    return run_dir, {"train_seconds": round(time.perf_counter() - started, 1), "record": record,
                     "settings": {k: settings[k] for k in ("precision", "channels_last", "epochs", "seed")}}


def welch_interval(a: list[float], b: list[float]) -> tuple[float, float]:
    """95% interval of mean(a) - mean(b), Welch-Satterthwaite degrees of freedom."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return 0.0, 0.0
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * se
    diff = statistics.mean(a) - statistics.mean(b)
    return diff - half, diff + half


def table(results: dict, seeds: int, models: list[str]) -> tuple[str, bool]:
    """The markdown table of every model x metric and whether bf16 passes the rule everywhere."""
    rows, tests = [], []
    for model in models:
        for metric in METRICS:
            arms = {arm: [results[f"{model}-{arm}-s{s}"][metric] for s in range(seeds)
                          if f"{model}-{arm}-s{s}" in results] for arm in ARMS}
            if min(len(v) for v in arms.values()) < 2:
                continue
            test = compare(seed_estimate(arms["bf16"]), seed_estimate(arms["fp32"]), ("bf16", "fp32"))
            low, high = welch_interval(arms["bf16"], arms["fp32"])
            fp32_sd = statistics.stdev(arms["fp32"])
            within = test.p is not None and test.p >= 0.05
            not_worse = test.diff <= fp32_sd
            tests.append(test.p if test.p is not None else 1.0)
            rows.append((model, metric, arms, test, (low, high), fp32_sd, within and not_worse))
    adjusted = holm(tests)
    lines = ["| model (epochs) | metric | fp32 mean ± sd (n) | bf16 mean ± sd (n) | bf16 − fp32 [95% CI] "
             "| Welch p | beyond noise (Holm) | rule |",
             "|---|---|---|---|---|---|---|---|"]
    for (model, metric, arms, test, (low, high), fp32_sd, ok), beyond in zip(rows, adjusted):
        cells = [f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f} ({len(v)})" for v in arms.values()]
        lines.append(f"| {model} ({EPOCHS[model]}) | {metric} | {cells[0]} | {cells[1]} | {test.diff:+.2f} "
                     f"[{low:+.2f}, {high:+.2f}] | {'–' if test.p is None else f'{test.p:.2f}'} | {'yes' if beyond else 'no'} | "
                     f"{'pass' if ok else 'FAIL'} (diff {test.diff:+.2f} vs fp32 sd {fp32_sd:.2f}) |")
    complete = len(rows) == len(models) * len(METRICS)
    return "\n".join(lines), complete and all(row[-1] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="training seeds per arm")
    parser.add_argument("--work", type=Path, default=Path("bf16-quality-work").resolve(),
                        help="scratch folder, the resume cache (default: ./bf16-quality-work)")
    parser.add_argument("--shard", default="0/1", help="I/N: train and score every N-th run, from the I-th")
    parser.add_argument("--models", nargs="+", choices=list(EPOCHS), default=list(EPOCHS))
    parser.add_argument("--max-images", type=int, default=None,
                        help="train on the first N images only: a check of the script, not a result")
    parser.add_argument("--table-only", action="store_true", help="print the table of what the cache holds")
    args = parser.parse_args()
    index, count = map(int, args.shard.split("/"))
    params = load_params(REPO / "params.yaml")
    work = args.work
    # Arms interleaved, their order flipped every seed, so each shard gets both arms and a
    # cut-short bench still compares like with like.
    jobs = [(m, arm, s) for m in args.models for s in range(args.seeds)
            for arm in (list(ARMS) if s % 2 == 0 else list(ARMS)[::-1])]
    scores_dir = work / "scores"
    if not args.table_only:
        dataset, classifier = prepare(work, params)
        scorer = None
        for m, arm, s in jobs[index::count]:
            name = f"{m}-{arm}-s{s}"
            # A --max-images check files its scores apart: a full run never reuses them.
            path = scores_dir / f"{name}{f'-max{args.max_images}' if args.max_images else ''}.json"
            with locked(scores_dir / f"{name}.lock"):
                if path.is_file():
                    continue
                print(f"== {name}", flush=True)
                run_dir, info = train_run(params, m, arm, s, work, dataset, args.max_images)
                if scorer is None:
                    with locked(work / "scorer.lock"):  # the other shard then reads the test features from the memory
                        scorer = Scorer(dataset, classifier, params.evaluate.batch_size)
                scores = scorer(run_dir, params.evaluate.seed)
                write_json_atomic(path, {**scores, **info, "inception": scorer.identity})
                print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()), flush=True)
    suffix = f"-max{args.max_images}" if args.max_images else ""
    results = {p.stem.removesuffix(suffix): json.loads(p.read_text()) for p in sorted(scores_dir.glob(f"*{suffix}.json"))
               if suffix or "-max" not in p.stem}
    text, passes = table(results, args.seeds, args.models)
    print()
    print(f"FID on compiled-bf16 Inception features (not the standard fp32 FID) and fid_domain, "
          f"{SAMPLES:,} samples vs the 10,000 MNIST test images; sd over training seeds")
    print(text)
    print(f"\nbf16 + channels_last {'PASSES' if passes else 'does NOT pass'} the rule for every model and metric")


if __name__ == "__main__":
    main()

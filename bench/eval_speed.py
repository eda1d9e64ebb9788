"""Benchmark: how long evaluate@dcgan-mnist takes, now and at a baseline revision.

    .venv/bin/python bench/eval_speed.py [--baseline REV] [--device cpu] [--num-samples 10000]

Times the real stage functions, in a fresh process per source tree, on the full real MNIST
(../shared/data/mnist) and a DCGAN-28 (ngf = ndf = 64) with random weights:
  - fid_reference@mnist (classifier features of the 10k test images, and whatever else the
    tree's reference computes: the real-data floor here);
  - evaluate@dcgan-mnist with the params.yaml defaults but `inception: false` (no weights here):
    `--num-samples` generated images, fid_domain and its spread, KID, precision/recall, mode
    coverage, the fid_domain curve over 20 G snapshots (as a 200-epoch run with
    snapshot_every 10 leaves; a tree whose training drew the curve ignores them), and the
    linear probe at 10/100/all for D, random D and pixels.
The classifier is trained for one epoch on 10k images first (not timed: it is its own stage).
`--baseline REV` times the same at a git revision (a temporary worktree), so both figures come
from one machine state; run it on an otherwise idle machine.
Inception throughput has its own benchmark: bench/inception_speed.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared"))

# Runs inside the tree being timed (its own `pipeline` on PYTHONPATH); only API that the
# baseline revisions share: ingest_mnist, train_mnist_classifier, compute_reference, evaluate_run.
STAGE_SCRIPT = r"""
import json, sys, tempfile, time
from pathlib import Path
import torch
from pipeline.config import EvaluateParams, MnistParams, Params
from pipeline.evaluate.classifier import train_mnist_classifier
from pipeline.evaluate.reference import compute_reference
from pipeline.evaluate.run import evaluate_run
from pipeline.ingest.mnist import ingest_mnist
from pipeline.models import build_models

mnist, device, num_samples = sys.argv[1], sys.argv[2], int(sys.argv[3])
params = Params(runs={}, evaluate=EvaluateParams(device=device, num_samples=num_samples, num_real=10_000,
                                                 inception=False))
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    ingest_mnist(MnistParams(source=mnist), tmp / "mnist")
    train_mnist_classifier(tmp / "mnist", tmp / "classifier", params, limit_train=10_000, min_accuracy=0.0)
    classifier = tmp / "classifier" / "classifier.pt"
    torch.manual_seed(0)
    G, D = build_models("dcgan", image_size=28, channels=1, nz=100)
    run = tmp / "runs" / "dcgan-mnist"
    (run / "snapshots").mkdir(parents=True)
    torch.save(G.state_dict(), run / "generator.pt")
    torch.save(D.state_dict(), run / "discriminator.pt")
    for epoch in range(10, 201, 10):
        torch.save(G.state_dict(), run / "snapshots" / f"generator_epoch_{epoch:04d}.pt")
    spec = {"model": "dcgan", "dataset": "mnist", "image_size": 28, "channels": 1, "nz": 100, "ngf": 64, "ndf": 64}
    (run / "model.json").write_text(json.dumps(spec))
    started = time.perf_counter()
    compute_reference("mnist", tmp / "mnist", tmp / "ref", params, classifier_path=classifier)
    reference_s = time.perf_counter() - started
    started = time.perf_counter()
    metrics = evaluate_run("dcgan-mnist", run, tmp / "mnist", tmp / "ref", params, classifier_path=classifier)
    evaluate_s = time.perf_counter() - started
print("RESULT " + json.dumps({"reference_s": reference_s, "evaluate_s": evaluate_s,
                              "metrics": sorted(k for k, v in metrics.items() if v is not None)}))
"""


def time_stage(tree: Path, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "TQDM_DISABLE": "1"}
    out = subprocess.run([sys.executable, "-c", STAGE_SCRIPT, str(SHARED / "data" / "mnist"), args.device,
                          str(args.num_samples)], cwd=tree, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"timing in {tree} failed:\n{out.stderr[-3000:]}")
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="a git revision to time the same way (e.g. one before a change)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-samples", type=int, default=10_000)
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}, {args.num_samples} generated images, device {args.device}",
          flush=True)
    trees = [("this tree", REPO, None)]
    tmp = None
    if args.baseline:
        tmp = tempfile.mkdtemp(prefix="eval-speed-baseline-")
        subprocess.run(["git", "worktree", "add", "--detach", "-q", tmp, args.baseline], cwd=REPO, check=True)
        trees.append((f"baseline {args.baseline}", Path(tmp), None))
    try:
        results = {}
        for label, tree, _ in trees:
            results[label] = time_stage(tree, args)
            r = results[label]
            print(f"{label}: fid_reference@mnist {r['reference_s']:.1f} s, evaluate@dcgan-mnist {r['evaluate_s']:.1f} s "
                  f"({len(r['metrics'])} metrics)", flush=True)
        if args.baseline:
            now, base = results["this tree"], results[f"baseline {args.baseline}"]
            print(f"evaluate@dcgan-mnist: {now['evaluate_s'] / base['evaluate_s']:.2f}x the baseline; "
                  f"reference + evaluate: {(now['evaluate_s'] + now['reference_s']) / (base['evaluate_s'] + base['reference_s']):.2f}x")
    finally:
        if tmp:
            subprocess.run(["git", "worktree", "remove", "--force", tmp], cwd=REPO, check=False)


if __name__ == "__main__":
    main()

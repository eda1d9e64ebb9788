"""Which `evaluate.sample_mode` to default to: fid_domain of trained MNIST runs with G's
BatchNorm in eval mode (running statistics) and in train mode (batch statistics).

    .venv/bin/python bench/sample_mode.py REPO_COPY [RUN ...]

REPO_COPY is a repository (or a `python -m pipeline results` copy) whose runs were trained and
whose fid_reference@mnist and domain_evaluator@mnist exist; RUN defaults to every run there on
MNIST. Prints fid_domain ± its bootstrap spread, mode coverage and KL for both modes, with
evaluate's sample count and seed from REPO_COPY's params.yaml; train mode draws G in the run's
own training batch (model.json), as evaluate does (images.sample_batch_size).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.config import load_params
from pipeline.evaluate.classifier import NUM_CLASSES, classify, load_classifier
from pipeline.evaluate.coverage import mode_coverage
from pipeline.evaluate.images import generate_uint8, sample_batch_size
from pipeline.evaluate.reference import load_reference
from pipeline.models import load_trained


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    repo = Path(sys.argv[1])
    params = load_params(repo / "params.yaml")
    p = params.evaluate
    names = sys.argv[2:] or [n for n, r in params.runs.items() if r.dataset == "mnist"]
    reference = load_reference(repo / "data" / "reference" / "mnist").domain
    real = reference.frechet()
    classifier = load_classifier(repo / "data" / "evaluators" / "mnist" / "classifier.pt")
    print(f"{p.samples} samples, seed {p.seed}; fid_domain ± bootstrap std (draws {p.fid_bootstrap})")
    for name in names:
        G, _, spec = load_trained(repo / "runs" / name)
        cells = []
        for mode in ("eval", "train"):
            batch = sample_batch_size(p.model_copy(update={"sample_mode": mode}), spec)
            fakes = generate_uint8(G, p.samples, spec["nz"], p.seed, batch, mode=mode)
            features, predicted = classify(classifier, fakes, batch_size=p.batch_size)
            fid, std = real.with_spread(features, draws=p.fid_bootstrap, seed=p.seed)
            cov = mode_coverage(predicted, NUM_CLASSES, p.coverage_min_share)
            cells.append(f"{mode} (batch {batch}): {fid:7.2f} ± {std:4.2f} (classes {cov['mode_coverage']}, KL {cov['mode_kl']:.3f})")
        print(f"{name:>16}  " + "   ".join(cells), flush=True)


if __name__ == "__main__":
    main()

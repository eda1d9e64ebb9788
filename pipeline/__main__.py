"""CLI: one subcommand per stage. Each parses, validates params, and calls one function.

    python -m pipeline ingest-mnist
    python -m pipeline ingest-celeba
    python -m pipeline crop-faces
    python -m pipeline faces-eval ../shared/data/anime-dev --detector all
    python -m pipeline domain-evaluator mnist
    python -m pipeline fid-reference mnist
    python -m pipeline train gan-mnist
    python -m pipeline evaluate gan-mnist
    python -m pipeline sample gan-mnist --out samples/gan-mnist --real samples/mnist-test
    python -m pipeline report
    python -m pipeline compare [REV ...]
    python -m pipeline smoke
    python -m pipeline results
    python -m pipeline verify-dataset data/datasets/celeba
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config import (DATASETS_DIR, EVALUATORS_DIR, PARAMS_FILE, REFERENCE_DIR, REPORTS_DIR, RUNS_DIR,
                             MissingInputError, ParamsError, load_params)
from pipeline.datasets import DatasetError


def cmd_ingest_mnist(args: argparse.Namespace) -> None:
    from pipeline.ingest.mnist import ingest_mnist

    params = load_params(args.params)
    out = ingest_mnist(params.mnist, DATASETS_DIR / "mnist")
    print(f"wrote {out}")


def cmd_ingest_celeba(args: argparse.Namespace) -> None:
    from pipeline.ingest.celeba import ingest_celeba

    params = load_params(args.params)
    out = ingest_celeba(params.celeba, DATASETS_DIR / "celeba")
    print(f"wrote {out}")


def cmd_train(args: argparse.Namespace) -> None:
    from pipeline.train import train

    params = load_params(args.params)
    params.run(args.run)  # an unknown run name fails here, before any work
    out = train(args.run, params)
    print(f"wrote {out}")


def classifier_for(dataset: str) -> Path | None:
    """The MNIST classifier for datasets that have domain features, else None."""
    from pipeline.evaluate.reference import DOMAIN_DATASETS

    return EVALUATORS_DIR / dataset / "classifier.pt" if dataset in DOMAIN_DATASETS else None


def cmd_domain_evaluator(args: argparse.Namespace) -> None:
    from pipeline.evaluate.classifier import train_mnist_classifier, write_no_evaluator

    out = EVALUATORS_DIR / args.dataset
    if classifier_for(args.dataset) is None:
        write_no_evaluator(args.dataset, out)
        print(f"wrote {out}: {args.dataset} has no domain classifier")
        return
    metrics = train_mnist_classifier(DATASETS_DIR / args.dataset, out, load_params(args.params))
    print(f"wrote {out}: test accuracy {metrics['test_accuracy']:.4f}")


def cmd_fid_reference(args: argparse.Namespace) -> None:
    from pipeline.evaluate.reference import compute_reference

    params = load_params(args.params)
    compute_reference(args.dataset, DATASETS_DIR / args.dataset, REFERENCE_DIR / args.dataset, params,
                      classifier_for(args.dataset))
    print(f"wrote {REFERENCE_DIR / args.dataset}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    import json

    from pipeline.evaluate.run import evaluate_run
    from pipeline.models import read_model_spec

    params = load_params(args.params)
    params.run(args.run)  # an unknown run is a params error, before anything is read
    # The dataset the run was trained on, from its own record (model.json, a dep of the stage):
    # the stage tracks no runs.* key, and a new runs.<run>.dataset retrains first anyway.
    dataset = read_model_spec(RUNS_DIR / args.run)["dataset"]
    metrics = evaluate_run(args.run, RUNS_DIR / args.run, DATASETS_DIR / dataset, REFERENCE_DIR / dataset,
                           params, classifier_for(dataset))
    print(json.dumps(metrics, indent=2))


def cmd_sample(args: argparse.Namespace) -> None:
    from pipeline.evaluate.export import generated_images, real_images, write_pngs

    params = load_params(args.params)
    run = params.run(args.run)
    count = write_pngs(generated_images(RUNS_DIR / args.run, params, args.num), args.out, desc=f"{args.run} samples")
    print(f"wrote {count} generated images of {args.run} to {args.out}")
    if args.real is not None:
        count = write_pngs(real_images(run.dataset, DATASETS_DIR / run.dataset, params, args.num), args.real, desc="real images")
        print(f"wrote {count} real reference images of {run.dataset} to {args.real}")


def cmd_report(args: argparse.Namespace) -> None:
    from pipeline.report import build_report

    print(f"wrote {build_report(load_params(args.params), RUNS_DIR, REPORTS_DIR, leave_out=args.leave_out)}")


def cmd_compare(args: argparse.Namespace) -> None:
    from pipeline.report import compare_text

    try:
        print(compare_text(load_params(args.params), RUNS_DIR, args.revisions), end="")
    except ValueError as exc:  # an unknown revision or an unreadable params.yaml there
        raise ParamsError(str(exc)) from None


def cmd_crop_faces(args: argparse.Namespace) -> None:
    from pipeline.faces import crop

    crop.main(args)


def cmd_faces_eval(args: argparse.Namespace) -> None:
    from pipeline.faces import detector_eval

    detector_eval.main(args)


def cmd_results(args: argparse.Namespace) -> None:
    from pipeline.results import DOCS, results

    results(workdir=args.workdir, out=args.out or DOCS, only=args.only)


def cmd_smoke(args: argparse.Namespace) -> None:
    from pipeline.smoke import smoke

    smoke(workdir=args.workdir)


def cmd_verify_dataset(args: argparse.Namespace) -> None:
    from pipeline.datasets import read_dataset

    for folder in args.folders:
        # verify=True re-hashes every array, whatever the verification record says.
        dataset = read_dataset(folder, verify=True)
        print(f"{folder}: ok ({len(dataset)} images, {', '.join(sorted(dataset.meta['sha256']))} match meta.json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="params file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("ingest-mnist", help="MNIST IDX files -> data/datasets/mnist").set_defaults(func=cmd_ingest_mnist)
    sub.add_parser("ingest-celeba", help="CelebA (download, torchvision or Kaggle layout) -> data/datasets/celeba"
                   ).set_defaults(func=cmd_ingest_celeba)

    p = sub.add_parser("train", help="train one run of params.yaml's `runs` -> runs/<run>/")
    p.add_argument("run")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("domain-evaluator", help="a dataset's domain feature extractor (MNIST: the LeNet behind "
                       "fid_domain; none for the face sets) -> data/evaluators/<dataset>")
    p.add_argument("dataset", choices=["mnist", "celeba", "anime"])
    p.set_defaults(func=cmd_domain_evaluator)

    p = sub.add_parser("fid-reference", help="real-image feature statistics of a dataset -> data/reference/<dataset>")
    p.add_argument("dataset", choices=["mnist", "celeba", "anime"])
    p.set_defaults(func=cmd_fid_reference)

    p = sub.add_parser("evaluate", help="FID, KID, precision/recall, mode coverage, linear probe -> runs/<run>/metrics.json")
    p.add_argument("run")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sample", help="the exact images evaluate scores, as PNGs, for checking with other FID tools")
    p.add_argument("run")
    p.add_argument("--out", type=Path, required=True, help="folder for the generated images (replaced whole)")
    p.add_argument("--num", type=int, default=None, help="the first N of them (default: all evaluate scores)")
    p.add_argument("--real", type=Path, default=None, help="also write the real reference images to this folder")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("report", help="one page comparing every run -> reports/index.md")
    p.add_argument("--leave-out", nargs="+", default=[], metavar="RUN",
                   help="runs to show as not made yet (`results` passes those whose outputs DVC finds stale)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="the report's tables in the terminal: the workspace, or git revisions / "
                       "DVC experiments side by side")
    p.add_argument("revisions", nargs="*", metavar="REV", help="git revisions or DVC experiment names")
    p.set_defaults(func=cmd_compare)

    from pipeline.faces import crop, detector_eval  # light imports: argparse wiring only

    p = sub.add_parser("crop-faces", help="crawled illustrations -> data/datasets/anime (face crops)")
    crop.add_arguments(p)
    p.set_defaults(func=cmd_crop_faces)

    p = sub.add_parser("faces-eval", help="a detector's recall, extra detections and speed on a folder with faces.json")
    detector_eval.add_arguments(p)
    p.set_defaults(func=cmd_faces_eval)

    p = sub.add_parser("results", help="README's Results: `dvc repro` of params.results.yaml in a copy -> docs/results/")
    p.add_argument("--workdir", type=Path, default=None, help="folder for the copy (default: a new temp dir)")
    p.add_argument("--only", nargs="+", metavar="PATTERN", default=None,
                   help="train and evaluate only the runs whose names match (shell patterns, e.g. '*-s?'); the page "
                        "shows the others as not trained yet (a long profile, committed in steps); runs archived "
                        "in <out>/runs whose code and params are unchanged are taken from there")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the page and its runs (default: docs/results; replaced whole, its runs/ read first)")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("smoke", help="real `dvc repro` of a small profile in a temporary copy of the repo")
    p.add_argument("--workdir", type=Path, default=None,
                   help="folder for the copy (<workdir>/repo) and its fixtures (default: a new temp dir)")
    p.set_defaults(func=cmd_smoke)

    p = sub.add_parser("verify-dataset", help="re-hash every array of dataset folders against their meta.json")
    p.add_argument("folders", nargs="+", type=Path)
    p.set_defaults(func=cmd_verify_dataset)
    return parser


# Errors that carry a complete, one-line explanation for the user: no traceback for them.
# A plain FileNotFoundError is not among them: where the code checks a path the user gave (or
# an earlier stage makes) it raises MissingInputError; any other one is a bug and keeps its traceback.
def _user_errors() -> tuple[type[BaseException], ...]:
    from pipeline.evaluate.classifier import ClassifierAccuracyError
    from pipeline.evaluate.inception import InceptionWeightsError
    from pipeline.evaluate.reference import ReferenceError
    from pipeline.ingest.celeba_layout import CelebaError
    from pipeline.ingest.mnist import MnistError
    from pipeline.train import TrainingDiverged

    return (ParamsError, MissingInputError, DatasetError, MnistError, CelebaError, TrainingDiverged,
            ClassifierAccuracyError, InceptionWeightsError, ReferenceError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except _user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CLI: one subcommand per stage. Each parses, validates params, and calls one function.

    python -m pipeline ingest-mnist
    python -m pipeline ingest-celeba
    python -m pipeline crop-faces
    python -m pipeline faces-eval ../shared/data/anime-dev --detector all
    python -m pipeline train gan-mnist
    python -m pipeline smoke
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config import DATASETS_DIR, PARAMS_FILE, RUNS_DIR, ParamsError, load_params
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


def cmd_crop_faces(args: argparse.Namespace) -> None:
    from pipeline.faces import crop

    crop.main(args)


def cmd_faces_eval(args: argparse.Namespace) -> None:
    from pipeline.faces import evaluate

    evaluate.main(args)


def cmd_smoke(args: argparse.Namespace) -> None:
    from pipeline.smoke import smoke

    smoke(workdir=args.workdir)


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

    from pipeline.faces import crop, evaluate as faces_evaluate  # light imports: argparse wiring only

    p = sub.add_parser("crop-faces", help="crawled illustrations -> data/datasets/anime (face crops)")
    crop.add_arguments(p)
    p.set_defaults(func=cmd_crop_faces)

    p = sub.add_parser("faces-eval", help="a detector's recall, extra detections and speed on a folder with faces.json")
    faces_evaluate.add_arguments(p)
    p.set_defaults(func=cmd_faces_eval)

    p = sub.add_parser("smoke", help="real `dvc repro` of a small profile in a temporary copy of the repo")
    p.add_argument("--workdir", type=Path, default=None,
                   help="folder for the copy (<workdir>/repo) and its fixtures (default: a new temp dir)")
    p.set_defaults(func=cmd_smoke)
    return parser


# Errors that carry a complete, one-line explanation for the user: no traceback for them.
def _user_errors() -> tuple[type[BaseException], ...]:
    from pipeline.ingest.mnist import MnistError
    from pipeline.train import TrainingDiverged

    return (ParamsError, DatasetError, MnistError, TrainingDiverged, FileNotFoundError)


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

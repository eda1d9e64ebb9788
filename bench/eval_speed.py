"""Benchmark: how long evaluation takes for one run, and Inception feature throughput.

    .venv/bin/python bench/eval_speed.py [--device cpu] [--num-samples 10000] [--inception-images 200]

Times, on real MNIST from ../shared/data/mnist and a DCGAN (ngf = ndf = 64) with random weights:
  - the reference statistics (MNIST classifier features of 10k test images),
  - fid_domain + KID + precision/recall + mode coverage of `--num-samples` generated images,
  - the linear probe with the default settings (10 and 100 per class, and all capped at 10k,
    C chosen on 2k held-out images) for D, a random D and pixels,
  - the standard Inception feature extraction (images/s) on 28x28 digits, with a weights file of
    the right architecture and random values (the real one cannot be downloaded here; the
    arithmetic, and so the speed, is the same).
The classifier is trained for one epoch on 10k images first (not timed: it is its own stage).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import EvaluateParams, MnistParams, Params  # noqa: E402
from pipeline.datasets import read_dataset  # noqa: E402
from pipeline.device import resolve_device  # noqa: E402
from pipeline.evaluate.classifier import NUM_CLASSES, classify, load_classifier, train_mnist_classifier  # noqa: E402
from pipeline.evaluate.coverage import mode_coverage  # noqa: E402
from pipeline.evaluate.fid import feature_statistics, frechet_distance, kid, precision_recall  # noqa: E402
from pipeline.evaluate.images import dataset_images, generate_uint8  # noqa: E402
from pipeline.evaluate.inception import inception_features, load_inception  # noqa: E402
from pipeline.evaluate.probe import discriminator_features, pixel_features, run_probe  # noqa: E402
from pipeline.evaluate.reference import compute_reference, load_reference  # noqa: E402
from pipeline.ingest.mnist import ingest_mnist  # noqa: E402
from pipeline.models import build_models  # noqa: E402


def random_inception_weights(path: Path) -> Path:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, strict=True: None), \
            mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", return_value={}):
        torch.save(FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict(), path)
    return path


class Clock:
    def __init__(self):
        self.rows: list[tuple[str, float]] = []

    def __call__(self, label: str, fn):
        started = time.perf_counter()
        out = fn()
        self.rows.append((label, time.perf_counter() - started))
        print(f"  {label}: {self.rows[-1][1]:.1f} s", flush=True)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--inception-images", type=int, default=200)
    args = parser.parse_args()
    device = resolve_device(args.device)
    params = Params(runs={}, evaluate=EvaluateParams(device=str(device), num_samples=args.num_samples,
                                                     classifier_epochs=1, inception=False))
    p = params.evaluate
    clock = Clock()
    print(f"device {device}, torch threads {torch.get_num_threads()}, {args.num_samples} generated images")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ingest_mnist(MnistParams(source=str(REPO.parent / "shared" / "data" / "mnist")), tmp / "mnist")
        dataset = read_dataset(tmp / "mnist")
        train_mnist_classifier(tmp / "mnist", tmp / "classifier", params, limit_train=10_000, min_accuracy=0.0)
        clf_path = tmp / "classifier" / "classifier.pt"
        clock("reference (10k real, classifier features)",
              lambda: compute_reference("mnist", tmp / "mnist", tmp / "ref", params, classifier_path=clf_path))
        ref = load_reference(tmp / "ref").domain

        torch.manual_seed(0)
        G, D = build_models("dcgan", image_size=28, channels=1, nz=100)
        G, D = G.to(device).eval(), D.to(device).eval()
        classifier = load_classifier(clf_path, device)
        fakes = clock("generate", lambda: generate_uint8(G, p.num_samples, 100, p.seed, p.batch_size, device))
        feats, predicted = clock("classifier features", lambda: classify(classifier, fakes, batch_size=p.batch_size,
                                                                         device=device))
        clock("fid_domain", lambda: frechet_distance(*feature_statistics(feats), ref.mu, ref.sigma))
        clock("kid (100 subsets of 1000)", lambda: kid(feats, ref.features, subset_size=p.kid_subset_size,
                                                        subsets=p.kid_subsets))
        clock("precision/recall (k=3)", lambda: precision_recall(feats, ref.features, k=p.pr_k))
        clock("mode coverage", lambda: mode_coverage(predicted, NUM_CLASSES))
        torch.manual_seed(1)
        _, random_d = build_models("dcgan", image_size=28, channels=1, nz=100)
        random_d = random_d.to(device).eval()
        d_fn = lambda net: (lambda images: discriminator_features(net, images, image_size=28,  # noqa: E731
                                                                   batch_size=p.batch_size, device=device))
        metrics, _ = clock("linear probe (D, random D, pixels; 10/100/all)",
                           lambda: run_probe(dataset, params, {"": d_fn(D), "_random_d": d_fn(random_d),
                                                               "_pixels": pixel_features}))
        print("  probe accuracies (random-weight D):",
              {k: round(v, 3) for k, v in metrics.items() if not k[-1].isdigit() and not k.endswith("all")})
        domain_total = sum(t for label, t in clock.rows[1:])
        print(f"fid_domain + KID + P/R + coverage + probe for one run: {domain_total:.1f} s")

        model, _ = load_inception(str(random_inception_weights(tmp / "inception.pth")), antialias=False, device=device)
        images = dataset_images(dataset, dataset.indices("test")[: args.inception_images])
        inception_features(model, images[:50], batch_size=50, device=device)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        inception_features(model, images, batch_size=p.batch_size, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        print(f"Inception feature extraction: {len(images) / seconds:.1f} images/s "
              f"({len(images)} images at 299x299, batch {p.batch_size})")


if __name__ == "__main__":
    main()

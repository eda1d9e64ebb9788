"""The MNIST classifier behind fid_domain, KID, precision/recall and mode coverage.

Inception features describe ImageNet photos, not 28x28 digits, and the Inception weights may be
unavailable offline. A small LeNet-style network trained on the real MNIST train split gives
features that know what a digit is; its penultimate layer (128-d) is the feature space of the
domain metrics, and its predictions count the digit classes a generator covers.
The stage refuses to write a classifier below `evaluate.classifier_min_accuracy` on the test
split (99 % by default): the domain metrics are only as good as this network.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pipeline.config import MissingInputError, Params
from pipeline.datasets import Dataset, read_dataset, sha256_file, staged_dir, write_json_atomic
from pipeline.device import resolve_device
from pipeline.evaluate.images import dataset_images, resize_square, to_unit

NUM_CLASSES = 10
IMAGE_SIZE = 28
FEATURE_DIM = 128
WEIGHTS_FILE = "classifier.pt"
METRICS_FILE = "metrics.json"


class ClassifierAccuracyError(RuntimeError):
    """The trained classifier misses the accuracy the domain metrics need."""


class LeNet(nn.Module):
    """LeNet-5 in modern dress (BatchNorm, ReLU, max-pool, dropout): ~99.2 % on MNIST in a few epochs.

    BatchNorm makes one epoch enough for ~97 % (the quick tests rely on it); in eval mode it uses
    running statistics, so features never depend on what else is in the batch.
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 14 x 14
            nn.Conv2d(32, 64, 5, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),             # 64 x 5 x 5
            nn.Flatten(),
            nn.Linear(64 * 5 * 5, FEATURE_DIM), nn.ReLU(),                # 128: the feature space
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """uint8 B x 1 x H x W -> float in [-1, 1] at 28 x 28 (a generator may use 32 x 32)."""
        if images.shape[1] != 1:
            raise ValueError(f"the MNIST classifier takes 1-channel images, got {images.shape[1]} channels")
        return resize_square(to_unit(images), IMAGE_SIZE)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def load_classifier(path: Path | str, device: torch.device | str = "cpu") -> LeNet:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: not found; train it first (dvc repro domain_evaluator@mnist)")
    model = LeNet()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(device).eval()


@torch.no_grad()
def classify(model: LeNet, images: torch.Tensor, *, batch_size: int = 500,
             device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(float32 N x 128 penultimate features, int64 N predicted classes) of uint8 images."""
    model.eval()
    features, predictions = [], []
    for batch in images.split(batch_size):
        h = model.features(model.prepare(batch.to(device)))
        features.append(h.float().cpu())
        predictions.append(model.head(h).argmax(1).cpu())
    if not features:
        return np.zeros((0, FEATURE_DIM), np.float32), np.zeros(0, np.int64)
    return torch.cat(features).numpy(), torch.cat(predictions).numpy()


def _split(dataset: Dataset, split: str, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    index = dataset.indices(split)[:limit]
    if dataset.labels is None:
        raise ValueError(f"{dataset.path}: no labels.npy; the classifier needs MNIST's labels")
    labels = torch.from_numpy(np.asarray(dataset.labels[index], dtype=np.int64))
    return dataset_images(dataset, index), labels


def train_mnist_classifier(dataset_dir: Path | str, out_dir: Path | str, params: Params, *,
                           limit_train: int | None = None, min_accuracy: float | None = None) -> dict:
    """Train the LeNet on MNIST's train split, test it, write `classifier.pt` + `metrics.json`.

    `limit_train` and `min_accuracy` override the params for quick tests only; the stage uses
    the whole train split and `evaluate.classifier_min_accuracy`. Raises ClassifierAccuracyError
    (and writes nothing) when the test accuracy is below the bar.
    """
    p = params.evaluate
    min_accuracy = p.classifier_min_accuracy if min_accuracy is None else min_accuracy
    device = resolve_device(p.device)
    dataset = read_dataset(dataset_dir)
    train_x, train_y = _split(dataset, "train", limit_train)
    test_x, test_y = _split(dataset, "test", None)
    if len(train_x) == 0 or len(test_x) == 0:
        raise ValueError(f"{dataset.path}: the classifier needs a train and a test split")

    torch.manual_seed(p.seed)
    model = LeNet().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=p.classifier_lr)
    order_rng = torch.Generator().manual_seed(p.seed)
    started = time.time()
    for epoch in range(p.classifier_epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=order_rng)
        bar = tqdm(order.split(p.classifier_batch_size), desc=f"classifier epoch {epoch + 1}/{p.classifier_epochs}",
                   unit="batch", leave=False)
        for batch in bar:
            x = LeNet.prepare(train_x[batch].to(device))
            loss = F.cross_entropy(model(x), train_y[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    _, predicted = classify(model, test_x, device=device)
    accuracy = float((predicted == test_y.numpy()).mean())
    metrics = {
        "test_accuracy": accuracy,
        "train_images": len(train_x),
        "test_images": len(test_x),
        "epochs": p.classifier_epochs,
        "train_seconds": round(time.time() - started, 1),
        "min_accuracy": min_accuracy,
        "dataset_sha256": dataset.meta.get("sha256", {}).get("images"),
    }
    if accuracy < min_accuracy:
        raise ClassifierAccuracyError(
            f"MNIST classifier reached {accuracy:.4f} test accuracy, below evaluate.classifier_min_accuracy "
            f"= {min_accuracy}; the domain metrics would not be trustworthy. Raise evaluate.classifier_epochs "
            f"(now {p.classifier_epochs}) or check {dataset.path}.")

    # Written into a temporary folder and renamed, so a half-trained classifier never appears.
    with staged_dir(out_dir) as tmp:
        torch.save(model.cpu().state_dict(), tmp / WEIGHTS_FILE)
        metrics["sha256"] = sha256_file(tmp / WEIGHTS_FILE)
        write_json_atomic(tmp / METRICS_FILE, metrics)
    return metrics


NO_EVALUATOR_FILE = "evaluator.json"


def write_no_evaluator(dataset_name: str, out_dir: Path | str) -> dict:
    """domain_evaluator@<dataset> for a dataset without a domain classifier (CelebA, anime).

    The folder still exists, so every run's stages can depend on `data/evaluators/<dataset>`:
    a face run's evaluation then depends on this note, never on MNIST or the LeNet."""
    note = {"dataset": dataset_name, "classifier": None,
            "why": "no offline feature extractor is meaningful for this dataset (docs/evaluation.md): "
                   "fid_domain and the *_domain measures are null; fid/kid/precision/recall use Inception"}
    with staged_dir(out_dir) as tmp:
        write_json_atomic(tmp / NO_EVALUATOR_FILE, note)
    return note

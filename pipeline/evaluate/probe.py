"""Linear probe: how useful is the frozen discriminator as a feature extractor?

The DCGAN paper's test (Radford et al. 2015, section 5.1): take every conv block of D,
max-pool each map to a 4 x 4 grid, flatten, concatenate, and fit a regularised linear
classifier on top. For the MLP GAN the "blocks" are its hidden layers, used as they are.
Two controls are always reported beside it, because a probe number alone says little: the
same architecture with random weights (how much comes from the architecture alone) and raw
pixels (what a linear classifier gets without any network).

Protocol, fixed so that runs compare: features standardised on the probe's train images;
scikit-learn's L2 LogisticRegression; C chosen from `evaluate.probe_c_grid` by accuracy on a
held-out part of the train split (`probe_val_size` images, never used for fitting); accuracy on
the test split. Each setting of `evaluate.probe_per_class` draws n labelled train images per
class ("all": every train image, capped at `probe_max_train`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn
from tqdm import tqdm

from pipeline.config import Params
from pipeline.datasets import Dataset
from pipeline.evaluate.images import dataset_images, resize_square, to_unit

POOL_GRID = 4  # the paper's 4 x 4 max-pooled grids
FeatureFn = Callable[[torch.Tensor], np.ndarray]  # uint8 N x C x H x W -> float32 N x d


BN_RECALIBRATION_IMAGES = 2000


@torch.no_grad()
def recalibrate_batchnorm(discriminator: nn.Module, images: torch.Tensor, *, image_size: int,
                          batch_size: int = 250, device: torch.device | str = "cpu") -> None:
    """Re-estimate D's BatchNorm statistics on real images before using it as a feature extractor.

    The running statistics saved with D come from training, where two of every three
    BatchNorm updates per step see generated images (the D update's fake batch and the G
    update); normalising real images by them would measure the generator as much as D. So the
    statistics are reset and averaged (momentum None) over real train images; the weights are
    untouched. D without BatchNorm (the MLP GAN) is left as it is."""
    norms = [m for m in discriminator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over all batches below
    discriminator.train()
    for batch in images.split(batch_size):
        discriminator(resize_square(to_unit(batch.to(device)), image_size))
    discriminator.eval()


@torch.no_grad()
def discriminator_features(discriminator: nn.Module, images: torch.Tensor, *, image_size: int,
                           batch_size: int = 250, device: torch.device | str = "cpu") -> np.ndarray:
    """Every block of D, max-pooled to 4 x 4 (conv) or as is (MLP hidden layers), concatenated."""
    discriminator.eval()
    out = []
    for batch in images.split(batch_size):
        x = resize_square(to_unit(batch.to(device)), image_size)
        parts = []
        for h in discriminator.features(x):
            if h.ndim == 4:
                h = F.adaptive_max_pool2d(h, POOL_GRID)
            parts.append(h.flatten(1).float().cpu())
        out.append(torch.cat(parts, dim=1))
    return torch.cat(out).numpy()


def pixel_features(images: torch.Tensor) -> np.ndarray:
    return to_unit(images).flatten(1).numpy()


def probe_tasks(dataset: Dataset, params: Params) -> list[tuple[str, np.ndarray]]:
    """(task name, int labels with -1 = unknown) for each thing the probe predicts.

    MNIST: the digit. CelebA: each of `celeba.probe_attributes` (binary; the probe accuracy is
    their mean). Anime: the hair colour labels, where -1 marks an unknown colour.
    """
    if dataset.attrs is not None:
        names = list(dataset.meta.get("attr_names", []))
        tasks = []
        for name in params.celeba.probe_attributes:
            if name not in names:
                raise ValueError(f"params.yaml: celeba.probe_attributes: {name!r} is not an attribute of "
                                 f"{dataset.path} (known: {', '.join(names)})")
            tasks.append((name, (np.asarray(dataset.attrs[:, names.index(name)]) > 0).astype(np.int64)))
        return tasks
    if dataset.labels is not None:
        return [("label", np.asarray(dataset.labels, dtype=np.int64))]
    raise ValueError(f"{dataset.path}: no labels.npy or attrs.npy, nothing for the linear probe to predict")


def setting_name(setting: int | str) -> str:
    return "all" if setting == "all" else f"n{setting}"


def headline_setting(settings: list[int | str]) -> int | str:
    """The setting reported as plain `probe_acc`: "all" when present, else the largest n."""
    return "all" if "all" in settings else max(settings)


@dataclass
class ProbeSplit:
    """Indices of one task: a C-selection set, a test set, and train indices per setting."""
    val: np.ndarray
    test: np.ndarray
    train: dict[str, np.ndarray]


def split_task(dataset: Dataset, labels: np.ndarray, params: Params) -> ProbeSplit:
    p = params.evaluate
    rng = np.random.default_rng(p.seed)
    known = labels >= 0
    train = dataset.indices("train")
    train = rng.permutation(train[known[train]])
    # A small dataset (a fresh anime crawl) holds out half its train images to choose C,
    # rather than failing; the size used is in details.json (len of val).
    val_size = min(p.probe_val_size, len(train) // 2)
    if val_size < 1:
        raise ValueError(f"{dataset.path}: {len(train)} labelled train images, too few for a linear probe")
    val, pool = np.sort(train[:val_size]), train[val_size:]
    test = dataset.indices("test")
    test = test[known[test]]
    if len(test) > p.probe_max_test:
        test = np.sort(rng.choice(test, p.probe_max_test, replace=False))
    if len(test) == 0:
        raise ValueError(f"{dataset.path}: no labelled test images for the linear probe")
    chosen = {}
    for setting in p.probe_per_class:
        if setting == "all":
            chosen["all"] = np.sort(pool[: p.probe_max_train])
            continue
        per_class = []
        for value in np.unique(labels[pool]):
            members = pool[labels[pool] == value]  # pool is shuffled: the first n are a random draw
            per_class.append(members[:setting])
        chosen[setting_name(setting)] = np.sort(np.concatenate(per_class))
    return ProbeSplit(val=val, test=test, train=chosen)


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
              test_x: np.ndarray, test_y: np.ndarray, c_grid: list[float], seed: int = 0) -> tuple[float, float]:
    """(test accuracy, chosen C): standardise, fit an L2 logistic regression per C, keep the best on val."""
    scaler = StandardScaler().fit(train_x)
    train_x, val_x, test_x = (scaler.transform(a) for a in (train_x, val_x, test_x))
    # One model walked along the C path from the strongest regularisation, each fit starting from
    # the last solution (warm_start): the same optima, about half the L-BFGS iterations.
    model = LogisticRegression(max_iter=1000, random_state=seed, warm_start=True)
    best: tuple[float, float, float] | None = None  # (val accuracy, C, test accuracy)
    for c in sorted(c_grid):  # ascending: on a tie the stronger regularisation wins
        model.set_params(C=c).fit(train_x, train_y)
        score = model.score(val_x, val_y)
        if best is None or score > best[0]:
            best = (score, c, model.score(test_x, test_y))  # test is read, never used to choose
    assert best is not None
    return float(best[2]), best[1]


def run_probe(dataset: Dataset, params: Params, feature_fns: dict[str, FeatureFn], *,
              batch_size: int = 1000) -> tuple[dict[str, float], dict]:
    """Probe every feature extractor in `feature_fns` ({"": D, "_random_d": ..., "_pixels": ...}).

    Returns (flat metrics, details). Metric names are `probe_acc<suffix>_<setting>` for every
    setting and `probe_acc<suffix>` for the headline setting; with several tasks (CelebA
    attributes) each number is the mean accuracy over the tasks.
    """
    p = params.evaluate
    tasks = [(name, labels, split_task(dataset, labels, params)) for name, labels in probe_tasks(dataset, params)]
    needed = np.unique(np.concatenate([np.concatenate([s.val, s.test, *s.train.values()]) for _, _, s in tasks]))
    headline = setting_name(headline_setting(p.probe_per_class))
    metrics: dict[str, float] = {}
    details: dict = {"headline_setting": headline, "tasks": {}}
    for suffix, fn in feature_fns.items():
        # Features of every image any task needs, extracted once per extractor.
        feats = np.concatenate([fn(dataset_images(dataset, chunk)) for chunk in
                                tqdm(np.array_split(needed, max(1, len(needed) // batch_size)),
                                     desc=f"probe features{suffix or ' (D)'}", unit="chunk", leave=False)])
        rows = lambda idx: feats[np.searchsorted(needed, idx)]  # noqa: E731 - needed is sorted
        per_setting: dict[str, list[float]] = {}
        for name, labels, split in tasks:
            for setting, train in split.train.items():
                acc, c = fit_probe(rows(train), labels[train], rows(split.val), labels[split.val],
                                   rows(split.test), labels[split.test], p.probe_c_grid, p.seed)
                per_setting.setdefault(setting, []).append(acc)
                details["tasks"].setdefault(f"probe_acc{suffix}", {}).setdefault(name, {})[setting] = {
                    "accuracy": acc, "C": c, "train_images": len(train), "feature_dim": feats.shape[1]}
        for setting, accs in per_setting.items():
            metrics[f"probe_acc{suffix}_{setting}"] = float(np.mean(accs))
        metrics[f"probe_acc{suffix}"] = metrics[f"probe_acc{suffix}_{headline}"]
    details["test_images"] = {name: len(split.test) for name, _, split in tasks}
    details["val_images"] = {name: len(split.val) for name, _, split in tasks}
    return metrics, details

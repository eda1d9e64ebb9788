"""Linear probe: how useful is the frozen discriminator as a feature extractor?

The DCGAN paper's test (Radford et al. 2015, section 5.1): take every conv block of D,
max-pool each map to a 4 x 4 grid, flatten, concatenate, and fit a regularised linear
classifier on top. For the MLP GAN the "blocks" are its hidden layers, used as they are.
Two controls are always reported beside it, because a probe number alone says little: the
same architecture with random weights (how much comes from the architecture alone) and raw
pixels (what a linear classifier gets without any network).

Protocol, fixed so that runs compare:
- Labels. Each setting of `evaluate.probe_per_class` draws n labelled train images per class
  (a seeded draw); "all" is every labelled train image outside the held-out part below, capped
  at `probe_max_train`. The test set is at most `probe_max_test` labelled test images, shared by
  every setting and task. details.json lists every index used (`labels_used`).
- Model. Features standardised on the images being fitted; scikit-learn's L2 LogisticRegression.
- C, from `evaluate.probe_c_grid`, is chosen from train labels only; the test labels never reach
  the choice (`select_and_fit` is not even given them):
  - n per class: stratified k-fold cross-validation inside those n labels per class, with
    k = min(`probe_cv_folds`, n) (fewer when a small crawl has a class with fewer than n images),
    then one refit on all of them. A setting may use only its own labels: choosing C on a
    larger labelled set would let "n10" profit from thousands of labels it claims not to have.
    Where a class has a single labelled image nothing can be cross-validated and C is fixed to
    the grid's smallest value (the strongest regularisation, the safe side with one example).
  - "all": a held-out part of the train split (`probe_val_size` images, never fitted; half the
    labelled train images on a small crawl). This setting has every train label, so holding some
    out uses no label it lacks, and it keeps the probe's cost where it was: 5-fold CV would
    fit five times on ~10k images per C, the dominant cost of the stage.
  Ties go to the smaller C (stronger regularisation).
- Score. Plain accuracy for MNIST digits, whose ten classes are balanced by construction (9-11%
  each). Everywhere else balanced accuracy (the mean of the per-class recalls, sklearn's
  balanced_accuracy_score): CelebA attributes (`celeba.probe_attributes`, binary and unbalanced,
  e.g. Black_Hair ~24% positive; averaged over the attributes) and the anime hair colours (a
  crawl's tags are far from uniform), so always answering the majority class scores 1 / classes
  rather than its share; the majority-class plain accuracy is reported beside it as
  `probe_majority_acc`, and the plain accuracy of every probe is in details.json. The same score
  chooses C.
- Sampling error. A 95% percentile-bootstrap interval over the test images
  (`probe_bootstrap` resamples, seeded by `evaluate.seed`); with several tasks the test images
  are resampled jointly and each resample's score is the mean over the tasks.
  `probe_acc<suffix>_ci95` is the half-width of the headline setting's interval; details.json
  has low/high for every setting.
- Controls, paired. D and its controls are scored on the same test images, so their
  difference is judged on the same resamples: `probe_vs<suffix>` = probe_acc - probe_acc<suffix>
  (headline setting) with `probe_vs<suffix>_ci95`, the half-width of the 95% percentile
  interval of the per-resample differences (low/high in details.json). Treating the two as
  independent would count the test set's shared difficulty twice and hide real gains.
- Convergence. L-BFGS fits that stop at max_iter raise sklearn's ConvergenceWarning; these are
  caught and counted per setting (`not_converged` of `fits` in details.json, and one summary
  line on stderr), never silenced and never printed once per fit.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import nn
from torch.optim.swa_utils import update_bn
from tqdm import tqdm

from pipeline.config import Params
from pipeline.datasets import Dataset
from pipeline.evaluate.images import dataset_images, resize_square, to_unit

POOL_GRID = 4  # the paper's 4 x 4 max-pooled grids
# Datasets (meta.json "source") scored with plain accuracy: classes balanced by construction.
PLAIN_ACCURACY_SOURCES = ("mnist",)
MAX_ITER = 1000  # L-BFGS iterations per fit
FeatureFn = Callable[[torch.Tensor], np.ndarray]  # uint8 N x C x H x W -> float32 N x d


@torch.no_grad()
def recalibrate_batchnorm(discriminator: nn.Module, images: torch.Tensor, *, image_size: int,
                          batch_size: int, device: torch.device | str = "cpu") -> None:
    """Re-estimate D's BatchNorm statistics on real images before using it as a feature extractor.

    The running statistics saved with D come from training, where two of every three
    BatchNorm updates per step see generated images (the D update's fake batch and the G
    update); normalising real images by them would measure the generator as much as D. So the
    statistics are reset and averaged (momentum None) over real train images; the weights are
    untouched. D without BatchNorm (the MLP GAN) is left as it is. torch's update_bn does the
    reset and the cumulative average (momentum None), then restores each layer's momentum.
    `batch_size` is part of the result: the average is over per-batch variances
    (evaluate.probe_bn_batch_size)."""
    update_bn((resize_square(to_unit(batch.to(device)), image_size) for batch in images.split(batch_size)),
              discriminator)
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
    """Image indices of the probe: one test set for every task and setting, the "all" setting's
    held-out C-selection set and train images (shared by the tasks), and the n-per-class draws
    (one per task: each CelebA attribute draws its own n positives and n negatives)."""
    test: np.ndarray
    val: np.ndarray  # empty when "all" is not a setting
    all: np.ndarray | None
    per_class: dict[str, dict[str, np.ndarray]]  # setting -> task -> indices

    def train(self, setting: str, task: str) -> np.ndarray:
        return self.all if setting == "all" else self.per_class[setting][task]


def split_probe(dataset: Dataset, tasks: list[tuple[str, np.ndarray]], params: Params) -> ProbeSplit:
    """Seeded draw of every index the probe uses; only images labelled for every task are used."""
    p = params.evaluate
    rng = np.random.default_rng(p.seed)
    known = np.logical_and.reduce([labels >= 0 for _, labels in tasks])
    train = dataset.indices("train")
    train = rng.permutation(train[known[train]])  # shuffled: any prefix is a random draw
    test = dataset.indices("test")
    test = test[known[test]]
    if len(test) > p.probe_max_test:
        test = np.sort(rng.choice(test, p.probe_max_test, replace=False))
    if len(test) == 0:
        raise ValueError(f"{dataset.path}: no labelled test images for the linear probe")
    if len(train) < 2:
        raise ValueError(f"{dataset.path}: {len(train)} labelled train images, too few for a linear probe")
    val, everything = np.zeros(0, np.int64), None
    if "all" in p.probe_per_class:
        # A small dataset (a fresh anime crawl) holds out half its train images to choose C,
        # rather than failing; the size used is in details.json.
        val_size = min(p.probe_val_size, len(train) // 2)
        val, everything = np.sort(train[:val_size]), np.sort(train[val_size:][: p.probe_max_train])
    per_class: dict[str, dict[str, np.ndarray]] = {}
    for setting in p.probe_per_class:
        if setting == "all":
            continue
        for name, labels in tasks:
            # Drawn from every labelled train image, the held-out set of "all" included: for the
            # n-settings it is only more images to draw from, never labels to choose C with.
            draw = [train[labels[train] == value][:setting] for value in np.unique(labels[train])]
            per_class.setdefault(setting_name(setting), {})[name] = np.sort(np.concatenate(draw))
    return ProbeSplit(test=test, val=val, all=everything, per_class=per_class)


Score = Callable[[np.ndarray, np.ndarray], float]  # (true labels, predictions) -> score


@dataclass
class ProbeFit:
    """One probe: its test predictions and how C was chosen (never from test labels)."""
    predictions: np.ndarray
    c: float
    selection: str  # "5-fold CV", "held-out (2000 images)" or "fixed (...)"
    scores: dict[float, float]  # selection score per C (mean over folds for CV)
    fits: int = 0
    not_converged: int = 0


class _FitCounter:
    """Fits L-BFGS models, counting those that stop at max_iter (sklearn's ConvergenceWarning)."""

    def __init__(self):
        self.fits = 0
        self.not_converged = 0

    def fit(self, model: LogisticRegression, x: np.ndarray, y: np.ndarray) -> LogisticRegression:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(x, y)
        self.fits += 1
        self.not_converged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        for w in caught:  # anything else is not ours to swallow
            if not issubclass(w.category, ConvergenceWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return model


def _c_path(counter: _FitCounter, x: np.ndarray, y: np.ndarray, c_grid: list[float], seed: int):
    """Yield (C, fitted model) along the grid, ascending: one model walked from the strongest
    regularisation, each fit starting from the last solution (warm_start): the same optima,
    about half the L-BFGS iterations."""
    model = LogisticRegression(max_iter=MAX_ITER, random_state=seed, warm_start=True)
    for c in sorted(c_grid):
        yield c, counter.fit(model.set_params(C=c), x, y)


def _standardised(train_x: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Standardised on `train_x`, then, with fewer images than features (the n-per-class
    settings), written in an orthonormal basis of the span of the standardised train rows.

    The second step is only for speed: an L2-regularised linear model's weights lie in that
    span (representer theorem: at the optimum w = -C X^T r, whatever the unpenalised intercept),
    and an orthonormal change of basis changes neither the loss, nor the penalty, nor the
    gradient's norm that L-BFGS stops on. So the optimum and its predictions are the same, at a
    cost per iteration of n rather than d columns (80 rather than 3,072 for a CV fold of 10
    MNIST digits per class). The solver stops within its tolerance of that optimum, by another
    path in float32: on 100 digits per class, CV scores moved by up to 0.004.
    """
    scaler = StandardScaler().fit(train_x)
    arrays = [scaler.transform(a) for a in (train_x, *others)]
    n, d = arrays[0].shape
    if n >= d:
        return arrays
    _, singular, vt = np.linalg.svd(arrays[0].astype(np.float64), full_matrices=False)
    basis = vt[singular > singular[0] * max(n, d) * np.finfo(np.float32).eps].T.astype(arrays[0].dtype)
    return [a @ basis for a in arrays]


def _best(scores: dict[float, float]) -> float:
    return min(scores, key=lambda c: (-scores[c], c))  # the highest score; on a tie the smaller C


def select_and_fit(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, c_grid: list[float], *,
                   score: Score, folds: int, val: tuple[np.ndarray, np.ndarray] | None = None,
                   seed: int = 0) -> ProbeFit:
    """Choose C from the train labels only, fit, and predict the test features.

    With `val` = (features, labels), C is chosen on that held-out set and the model fitted on
    `train` with it predicts the test set. Without, stratified k-fold CV inside `train` with
    k = min(folds, smallest class count) chooses C and a final fit on all of `train` predicts.

    The fits run single-threaded: at these sizes BLAS and OpenMP threads mostly wait on each
    other, and on a busy 2-core machine they spin (fitting 10k MNIST D features along the C grid:
    6 s CPU with one thread, 44 s with two, measured under load).
    """
    with threadpool_limits(1):
        return _select_and_fit(train_x, train_y, test_x, c_grid, score=score, folds=folds, val=val, seed=seed)


def _select_and_fit(train_x, train_y, test_x, c_grid, *, score, folds, val, seed) -> ProbeFit:
    counter = _FitCounter()
    if val is not None:
        train_x, val_x, test_x = _standardised(train_x, val[0], test_x)
        scores, predictions = {}, {}
        for c, model in _c_path(counter, train_x, train_y, c_grid, seed):
            scores[c] = score(val[1], model.predict(val_x))
            predictions[c] = model.predict(test_x)
        c = _best(scores)
        return ProbeFit(predictions[c], c, f"held-out ({len(val[1])} images)", scores,
                        counter.fits, counter.not_converged)
    k = min(folds, int(np.bincount(np.unique(train_y, return_inverse=True)[1]).min()))
    if k < 2:
        c, selection, scores = min(c_grid), "fixed (a class has one labelled image: nothing to cross-validate)", {}
    else:
        per_fold: dict[float, list[float]] = {c: [] for c in c_grid}
        for fit_idx, val_idx in StratifiedKFold(k, shuffle=True, random_state=seed).split(train_x, train_y):
            fold_x, fold_val_x = _standardised(train_x[fit_idx], train_x[val_idx])
            for c, model in _c_path(counter, fold_x, train_y[fit_idx], c_grid, seed):
                per_fold[c].append(score(train_y[val_idx], model.predict(fold_val_x)))
        scores = {c: float(np.mean(v)) for c, v in per_fold.items()}
        c, selection = _best(scores), f"{k}-fold CV"
    train_x, test_x = _standardised(train_x, test_x)
    model = counter.fit(LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed), train_x, train_y)
    return ProbeFit(model.predict(test_x), c, selection, scores, counter.fits, counter.not_converged)


def accuracy(y: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.mean(y == predictions))


def balanced_accuracy(y: np.ndarray, predictions: np.ndarray) -> float:
    return float(balanced_accuracy_score(y, predictions))


def bootstrap_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """resamples x n: how often each test image appears in each bootstrap resample.

    Scores of a resample are then weighted sums (one matrix product for every resample), and
    the same weights serve every task, setting and extractor: resampling is joint."""
    draws = np.random.default_rng(seed).integers(0, n, (resamples, n))
    rows = np.arange(resamples)[:, None] * n
    return np.bincount((rows + draws).ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float32)


def resampled_scores(weights: np.ndarray, y: np.ndarray, predictions: np.ndarray, *, balanced: bool) -> np.ndarray:
    """The score on each bootstrap resample (accuracy, or the mean recall over the classes the
    resample contains, as balanced_accuracy_score does)."""
    correct = (y == predictions).astype(np.float32)
    if not balanced:
        return weights @ correct / weights.sum(axis=1)
    members = np.stack([(y == value).astype(np.float32) for value in np.unique(y)], axis=1)
    hits, totals = weights @ (members * correct[:, None]), weights @ members
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(np.where(totals > 0, hits / totals, np.nan), axis=1)


def interval(samples: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def majority_accuracy(train_y: np.ndarray, test_y: np.ndarray) -> float:
    """Plain test accuracy of always answering the train labels' most common class."""
    return accuracy(test_y, np.full_like(test_y, np.bincount(train_y).argmax()))


def labels_used(split: ProbeSplit) -> dict:
    """Every image index whose label the probe reads, as compact lists (details.json)."""
    train: dict = {"all": None if split.all is None else split.all.tolist()}
    train.update({s: {task: idx.tolist() for task, idx in per_task.items()} for s, per_task in split.per_class.items()})
    return {"test": split.test.tolist(), "val": split.val.tolist(), "train": train}


def run_probe(dataset: Dataset, params: Params, feature_fns: dict[str, FeatureFn], *,
              batch_size: int = 1000) -> tuple[dict[str, float], dict]:
    """Probe every feature extractor in `feature_fns` ({"": D, "_random_d": ..., "_pixels": ...}).

    Returns (flat metrics, details). Metric names: `probe_acc<suffix>_<setting>` for every
    setting, `probe_acc<suffix>` for the headline setting and `probe_acc<suffix>_ci95` for the
    half-width of its 95% interval; `probe_vs<suffix>` (+ `_ci95`) for each control, the paired
    difference; with balanced accuracy also `probe_majority_acc`. With
    several tasks (CelebA attributes) each number is the mean score over the tasks.
    """
    p = params.evaluate
    tasks = probe_tasks(dataset, params)
    split = split_probe(dataset, tasks, params)
    balanced = dataset.attrs is not None or dataset.meta.get("source") not in PLAIN_ACCURACY_SOURCES
    headline = setting_name(headline_setting(p.probe_per_class))
    weights = bootstrap_weights(len(split.test), p.probe_bootstrap, p.seed)
    metrics: dict[str, float] = {}
    details: dict = {
        "headline_setting": headline, "score": "balanced_accuracy" if balanced else "accuracy",
        "c_grid": sorted(p.probe_c_grid), "cv_folds": p.probe_cv_folds,
        "bootstrap": {"resamples": p.probe_bootstrap, "seed": p.seed, "interval": "percentile 95%",
                      "resampled": "test images, jointly for every task"},
        "test_images": len(split.test), "val_images": len(split.val), "labels_used": labels_used(split),
        "tasks": {}, "settings": {},
    }
    if balanced:
        train = dataset.indices("train")
        details["majority_acc"] = {name: majority_accuracy(labels[train][labels[train] >= 0], labels[split.test])
                                   for name, labels in tasks}
        metrics["probe_majority_acc"] = float(np.mean(list(details["majority_acc"].values())))
    parts = [split.test, split.val, *([split.all] if split.all is not None else [])]
    needed = np.unique(np.concatenate(parts + [i for per_task in split.per_class.values() for i in per_task.values()]))
    headline_resamples: dict[str, np.ndarray] = {}
    for suffix, fn in feature_fns.items():
        # Features of every image any task needs, extracted once per extractor.
        feats = np.concatenate([fn(dataset_images(dataset, chunk)) for chunk in
                                tqdm(np.array_split(needed, max(1, len(needed) // batch_size)),
                                     desc=f"probe features{suffix or ' (D)'}", unit="chunk", leave=False)])
        rows = lambda idx: feats[np.searchsorted(needed, idx)]  # noqa: E731 - needed is sorted
        for setting in [setting_name(s) for s in p.probe_per_class]:
            key = f"probe_acc{suffix}_{setting}"
            per_task, details["settings"][key], resamples = _probe_setting(setting, tasks, split, rows, weights,
                                                                           params, balanced=balanced)
            if setting == headline:
                headline_resamples[suffix] = resamples
            metrics[key] = details["settings"][key]["score"]
            for name, result in per_task.items():
                details["tasks"].setdefault(f"probe_acc{suffix}", {}).setdefault(name, {})[setting] = result
        metrics[f"probe_acc{suffix}"] = metrics[f"probe_acc{suffix}_{headline}"]
        top = details["settings"][f"probe_acc{suffix}_{headline}"]
        metrics[f"probe_acc{suffix}_ci95"] = (top["ci95_high"] - top["ci95_low"]) / 2
    for suffix in (s for s in headline_resamples if s and "" in headline_resamples):
        low, high = interval(headline_resamples[""] - headline_resamples[suffix])
        metrics[f"probe_vs{suffix}"] = metrics["probe_acc"] - metrics[f"probe_acc{suffix}"]
        metrics[f"probe_vs{suffix}_ci95"] = (high - low) / 2
        # The difference on every resample: the report combines a seed group's runs resample by
        # resample (the same seeded resamples of the same test images), so the test-set noise
        # the seeds share enters the group's error (report.shared_test_noise).
        details.setdefault("paired", {})[f"probe_vs{suffix}"] = {
            "difference": metrics[f"probe_vs{suffix}"], "ci95_low": low, "ci95_high": high, "setting": headline,
            "resamples": [round(float(v), 6) for v in headline_resamples[""] - headline_resamples[suffix]]}
    details["fits"] = sum(s["fits"] for s in details["settings"].values())
    details["not_converged"] = sum(s["not_converged"] for s in details["settings"].values())
    if details["not_converged"]:
        print(f"linear probe: {details['not_converged']} of {details['fits']} logistic-regression fits stopped "
              f"at max_iter={MAX_ITER} before converging (counted per setting in details.json)", file=sys.stderr)
    return metrics, details


def _probe_setting(setting: str, tasks: list[tuple[str, np.ndarray]], split: ProbeSplit,
                   rows: Callable[[np.ndarray], np.ndarray], weights: np.ndarray, params: Params, *,
                   balanced: bool) -> tuple[dict[str, dict], dict, np.ndarray]:
    """One setting of one extractor: ({task: its result}, the result averaged over the tasks,
    the score on each bootstrap resample)."""
    p = params.evaluate
    score = balanced_accuracy if balanced else accuracy
    per_task, resampled = {}, []
    for name, labels in tasks:
        train = split.train(setting, name)
        val = (rows(split.val), labels[split.val]) if setting == "all" else None
        fit = select_and_fit(rows(train), labels[train], rows(split.test), p.probe_c_grid, score=score,
                             folds=p.probe_cv_folds, val=val, seed=p.seed)
        test_y = labels[split.test]  # read only now, after the fit: never used to choose
        resampled.append(resampled_scores(weights, test_y, fit.predictions, balanced=balanced))
        low, high = interval(resampled[-1])
        per_task[name] = {
            "score": score(test_y, fit.predictions), "accuracy": accuracy(test_y, fit.predictions),
            "ci95_low": low, "ci95_high": high, "C": fit.c, "selection": fit.selection,
            "selection_scores": {str(c): s for c, s in fit.scores.items()}, "train_images": len(train),
            "feature_dim": int(rows(train[:1]).shape[1]), "fits": fit.fits, "not_converged": fit.not_converged}
    joint = np.mean(resampled, axis=0)  # joint resamples: the mean over tasks per resample
    low, high = interval(joint)
    mean = lambda key: float(np.mean([r[key] for r in per_task.values()]))  # noqa: E731
    total = lambda key: int(sum(r[key] for r in per_task.values()))  # noqa: E731
    return per_task, {"score": mean("score"), "accuracy": mean("accuracy"), "ci95_low": low, "ci95_high": high,
                      "fits": total("fits"), "not_converged": total("not_converged")}, joint

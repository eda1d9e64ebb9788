"""The probe's protocol: C never comes from the test set, scores and intervals say what they measure."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

from pipeline.config import CelebaParams
from pipeline.datasets import SPLITS, read_dataset, write_dataset
from pipeline.evaluate import probe
from pipeline.evaluate.probe import bootstrap_weights, pixel_features, resampled_scores, run_probe
from tests.evaluate.eval_helpers import make_params

C_GRID = [1e-4, 1e-2, 1.0, 100.0]


def weak_signal_images(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """8 x 8 grayscale images: noise, with a faint class-dependent shift in a few pixels, so that
    the regularisation strength changes what the probe predicts."""
    x = rng.normal(128, 40, size=(len(labels), 64))
    x[:, :6] += 12 * (2 * labels[:, None] - 1)
    return np.clip(x, 0, 255).astype(np.uint8).reshape(-1, 8, 8, 1)


def write_probe_set(path, images, labels, n_train):
    split = np.full(len(labels), SPLITS["test"], dtype=np.uint8)
    split[:n_train] = SPLITS["train"]
    return read_dataset(write_dataset(path, images, split, labels=labels, source="unit"))


def predictions_with(c: float, dataset, train: list[int], test: list[int]) -> np.ndarray:
    """What a probe fitted on `train` with this C answers on `test` (sklearn directly, not our code)."""
    x = pixel_features(torch_images(dataset, np.arange(len(dataset))))
    scaler = StandardScaler().fit(x[train])
    model = LogisticRegression(C=c, max_iter=5000).fit(scaler.transform(x[train]), dataset.labels[train])
    return model.predict(scaler.transform(x[test]))


def torch_images(dataset, idx):
    from pipeline.evaluate.images import dataset_images

    return dataset_images(dataset, idx)


@pytest.mark.parametrize("setting", ["n20", "all"])
def test_c_is_never_chosen_on_the_test_set(tmp_path, setting):
    """Test labels made to favour another C must not change the choice, nor any selection score.

    The trap: the second dataset's test labels are exactly what a probe with another C (C_test)
    predicts, so choosing C by test accuracy would pick C_test (test accuracy ~1). A probe that
    chooses from train labels only picks the same C as on the original labels, with the same
    selection scores, and scores clearly below 1 on the trap."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.tile([0, 1], 100), rng.integers(0, 2, 400)]  # 200 train, 400 test
    images = weak_signal_images(rng, labels)
    params = make_params(probe_per_class=[20, "all"], probe_val_size=60, probe_c_grid=C_GRID)
    honest = write_probe_set(tmp_path / "honest", images, labels, 200)
    _, details = run_probe(honest, params, {"_pixels": pixel_features})
    chosen = details["tasks"]["probe_acc_pixels"]["label"][setting]
    used = details["labels_used"]
    train = used["train"]["all"] if setting == "all" else used["train"][setting]["label"]
    test = used["test"]

    # The C whose test predictions differ most from the chosen C's becomes the test set's favourite.
    ours = predictions_with(chosen["C"], honest, train, test)
    others = {c: predictions_with(c, honest, train, test) for c in C_GRID if c != chosen["C"]}
    c_test = max(others, key=lambda c: np.mean(others[c] != ours))
    assert np.mean(others[c_test] != ours) > 0.1  # the trap is armed: the two Cs disagree on >10% of test

    trapped_labels = labels.copy()
    trapped_labels[test] = others[c_test]
    trapped = write_probe_set(tmp_path / "trapped", images, trapped_labels, 200)
    metrics, trapped_details = run_probe(trapped, params, {"_pixels": pixel_features})
    again = trapped_details["tasks"]["probe_acc_pixels"]["label"][setting]
    assert again["C"] == chosen["C"] != c_test
    assert again["selection_scores"] == chosen["selection_scores"]  # test labels never reach the choice
    assert metrics[f"probe_acc_pixels_{setting}"] < 0.9  # c_test would have scored ~1 here


def test_attribute_probe_reports_balanced_accuracy_and_the_majority_baseline(tmp_path):
    """Unbalanced binary attributes with no signal: always answering "no" is 80% accurate, but
    the probe's number (balanced accuracy) stays at chance, and the baseline is said beside it."""
    rng = np.random.default_rng(1)
    n_train, n_test = 600, 400
    attrs = (rng.random((n_train + n_test, 2)) < [0.2, 0.3]).astype(np.int8)  # ~20% and ~30% positive
    split = np.r_[np.full(n_train, SPLITS["train"]), np.full(n_test, SPLITS["test"])].astype(np.uint8)
    images = rng.integers(0, 256, (n_train + n_test, 6, 6, 1), dtype=np.uint8)  # knows nothing
    dataset = read_dataset(write_dataset(tmp_path / "faces", images, split, attrs=attrs, source="unit",
                                         meta={"attr_names": ["Rare", "Less_rare"]}))
    params = make_params(probe_per_class=[10, "all"], probe_val_size=200, probe_c_grid=[1e-4, 1e-2])
    params = params.model_copy(update={"celeba": CelebaParams(probe_attributes=["Rare", "Less_rare"])})
    metrics, details = run_probe(dataset, params, {"_pixels": pixel_features})

    test = np.asarray(details["labels_used"]["test"])
    majority = np.mean([np.mean(attrs[test, a] == 0) for a in range(2)])  # "no" is the majority of both
    assert metrics["probe_majority_acc"] == pytest.approx(majority) and majority > 0.7
    assert details["score"] == "balanced_accuracy"
    assert 0.4 < metrics["probe_acc_pixels_all"] < 0.6  # chance, although plain accuracy is far higher
    assert details["settings"]["probe_acc_pixels_all"]["accuracy"] > 0.65
    # Each attribute draws its own 10 positives and 10 negatives.
    for a, name in enumerate(["Rare", "Less_rare"]):
        drawn = details["labels_used"]["train"]["n10"][name]
        assert np.bincount(attrs[drawn, a], minlength=2).tolist() == [10, 10]
        per_task = details["tasks"]["probe_acc_pixels"][name]["all"]
        assert per_task["ci95_low"] <= per_task["score"] <= per_task["ci95_high"]
    setting = details["settings"]["probe_acc_pixels_all"]
    assert setting["ci95_low"] <= metrics["probe_acc_pixels_all"] <= setting["ci95_high"]


def test_resampled_scores_are_the_scores_of_the_resampled_test_sets():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 50)
    predictions = np.where(rng.random(50) < 0.7, y, rng.integers(0, 3, 50))
    weights = bootstrap_weights(50, 20, seed=5)
    assert (weights.sum(axis=1) == 50).all()  # each resample has as many images as the test set
    assert np.array_equal(weights, bootstrap_weights(50, 20, seed=5))
    balanced = resampled_scores(weights, y, predictions, balanced=True)
    plain = resampled_scores(weights, y, predictions, balanced=False)
    for row in range(20):
        idx = np.repeat(np.arange(50), weights[row].astype(int))  # the resample, image by image
        assert balanced[row] == pytest.approx(balanced_accuracy_score(y[idx], predictions[idx]), abs=1e-6)
        assert plain[row] == pytest.approx(np.mean(y[idx] == predictions[idx]), abs=1e-6)


def test_convergence_warnings_are_counted_not_printed_per_fit(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(3)
    labels = np.r_[np.tile([0, 1], 50), rng.integers(0, 2, 100)]
    dataset = write_probe_set(tmp_path / "slow", weak_signal_images(rng, labels), labels, 100)
    monkeypatch.setattr(probe, "MAX_ITER", 1)  # no L-BFGS fit converges in one iteration
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, details = run_probe(dataset, make_params(probe_per_class=[10], probe_c_grid=C_GRID),
                               {"_pixels": pixel_features})
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    n10 = details["tasks"]["probe_acc_pixels"]["label"]["n10"]
    assert n10["fits"] == 5 * len(C_GRID) + 1  # 5 folds x 4 Cs, then the refit
    assert n10["not_converged"] == n10["fits"] == details["not_converged"]
    err = capsys.readouterr().err
    assert err.count("stopped at max_iter") == 1 and f"{n10['fits']} of {n10['fits']}" in err

"""The linear probe: D features as the paper takes them, and controls with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.datasets import read_dataset
from pipeline.evaluate.images import dataset_images
from pipeline.evaluate.probe import (accuracy, discriminator_features, pixel_features, run_probe, select_and_fit,
                                     split_probe)
from pipeline.models import build_models
from tests.evaluate.eval_helpers import make_params


def test_dcgan_features_are_every_conv_block_max_pooled_to_4x4():
    torch.manual_seed(0)
    _, D = build_models("dcgan", image_size=28, channels=1, nz=8, ngf=8, ndf=8)
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    features = discriminator_features(D, images, image_size=28, batch_size=2)
    # 8 x 14 x 14 -> 8 x 4 x 4 and 16 x 7 x 7 -> 16 x 4 x 4, concatenated.
    assert features.shape == (5, 8 * 16 + 16 * 16)
    # The first block's part is the max over each cell of its map.
    first = D.features(images.float() / 127.5 - 1)[0]
    expected = torch.nn.functional.adaptive_max_pool2d(first, 4).flatten(1)
    np.testing.assert_allclose(features[:, :128], expected.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_mlp_features_are_the_hidden_layers_unpooled():
    _, D = build_models("gan", image_size=28, channels=1, nz=8)
    features = discriminator_features(D, torch.zeros(3, 1, 28, 28, dtype=torch.uint8), image_size=28)
    assert features.shape == (3, 1024 + 512 + 256)


def test_split_draws_n_per_class_and_keeps_sets_apart(mnist_dir):
    dataset = read_dataset(mnist_dir)
    params = make_params(probe_per_class=[10, 100, "all"])
    tasks = [("label", np.asarray(dataset.labels))]
    split = split_probe(dataset, tasks, params)
    for setting, n in (("n10", 10), ("n100", 100)):
        counts = np.bincount(dataset.labels[split.train(setting, "label")], minlength=10)
        assert (counts == n).all()
    assert len(split.all) == params.evaluate.probe_max_train
    assert len(split.val) == params.evaluate.probe_val_size and len(split.test) == params.evaluate.probe_max_test
    train_ids = set(np.concatenate([split.all, *split.per_class["n10"].values(),
                                    *split.per_class["n100"].values()]).tolist())
    assert not set(split.all.tolist()) & set(split.val.tolist())  # "all" never fits its C-selection images
    assert not (train_ids | set(split.val.tolist())) & set(split.test.tolist())
    assert set(split.test.tolist()) <= set(dataset.indices("test").tolist())
    again = split_probe(dataset, tasks, params)  # seeded: the same draw every time
    assert np.array_equal(again.all, split.all) and np.array_equal(again.test, split.test)
    assert all(np.array_equal(again.per_class[k]["label"], split.per_class[k]["label"]) for k in split.per_class)


def test_probe_on_random_features_is_near_chance(mnist_dir):
    dataset = read_dataset(mnist_dir)
    labels = np.asarray(dataset.labels)
    split = split_probe(dataset, [("label", labels)], make_params())
    rng = np.random.default_rng(0)
    noise = lambda idx: rng.normal(size=(len(idx), 64))  # noqa: E731 - features that know nothing
    fit = select_and_fit(noise(split.all), labels[split.all], noise(split.test), [0.01, 0.1], score=accuracy,
                         folds=5, val=(noise(split.val), labels[split.val]))
    assert accuracy(labels[split.test], fit.predictions) < 0.2  # ten classes: chance is ~0.1


def test_probe_on_pixels_is_in_the_known_mnist_range(mnist_dir):
    # Logistic regression on raw MNIST pixels with 100 labelled images per class: ~0.85-0.88.
    params = make_params(probe_per_class=[100])
    metrics, details = run_probe(read_dataset(mnist_dir), params, {"_pixels": pixel_features})
    assert 0.80 <= metrics["probe_acc_pixels_n100"] <= 0.92
    assert metrics["probe_acc_pixels"] == metrics["probe_acc_pixels_n100"]  # the headline setting
    chosen = details["tasks"]["probe_acc_pixels"]["label"]["n100"]
    assert chosen["C"] in params.evaluate.probe_c_grid and chosen["train_images"] == 1000
    assert chosen["selection"] == "5-fold CV" and len(chosen["selection_scores"]) == len(params.evaluate.probe_c_grid)
    assert chosen["selection_scores"][str(chosen["C"])] == max(chosen["selection_scores"].values())
    # 600 test images at ~0.87: binomial standard error ~0.014, so a 95% half-width of ~0.027.
    setting = details["settings"]["probe_acc_pixels_n100"]
    assert setting["ci95_low"] < metrics["probe_acc_pixels"] < setting["ci95_high"]
    assert 0.015 < metrics["probe_acc_pixels_ci95"] < 0.04
    assert metrics["probe_acc_pixels_ci95"] == pytest.approx((setting["ci95_high"] - setting["ci95_low"]) / 2)
    # Every label used is listed: the 1,000 train images and the 600 test images; no held-out set.
    used = details["labels_used"]
    assert len(used["train"]["n100"]["label"]) == 1000 and len(used["test"]) == 600 and used["val"] == []
    assert "probe_majority_acc" not in metrics and details["score"] == "accuracy"


def test_pixel_features_are_the_images_in_unit_range():
    images = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    np.testing.assert_allclose(pixel_features(images), [[-1.0, 1.0]])


def test_probe_without_labels_is_a_clear_error(tmp_path):
    from pipeline.datasets import write_dataset
    from pipeline.evaluate.probe import probe_tasks

    path = write_dataset(tmp_path / "unlabelled", np.zeros((4, 8, 8, 1), np.uint8), np.zeros(4), source="test")
    with pytest.raises(ValueError, match="nothing for the linear probe"):
        probe_tasks(read_dataset(path), make_params())


def test_dataset_images_are_nchw_uint8(mnist_dir):
    dataset = read_dataset(mnist_dir)
    images = dataset_images(dataset, np.array([3, 1]))
    assert images.shape == (2, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(images[0, 0], torch.from_numpy(np.array(dataset.images[1, :, :, 0])))


def test_small_dataset_holds_out_half_of_its_train_images(tmp_path):
    """A fresh anime crawl has tens of crops: "all" chooses C on half of them instead of failing,
    and the n-settings cross-validate inside the few they have."""
    from pipeline.datasets import SPLITS, write_dataset

    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(4), 10)  # 40 images, 4 hair colours
    split = np.full(40, SPLITS["train"], dtype=np.uint8)
    split[-8:] = SPLITS["test"]
    out = write_dataset(tmp_path / "anime", rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8), split,
                        labels=labels, source="unit")
    params = make_params(probe_per_class=[10, "all"], probe_val_size=300)
    task = split_probe(read_dataset(out), [("label", labels)], params)
    assert len(task.val) == 16  # half of the 32 train images
    assert not set(task.val.tolist()) & set(task.all.tolist())
    assert len(task.all) == 16 and len(task.test) == 8
    assert len(task.per_class["n10"]["label"]) == 32  # 8 per colour is all there is
    _, details = run_probe(read_dataset(out), params, {"_pixels": pixel_features})
    probes = details["tasks"]["probe_acc_pixels"]["label"]
    assert probes["n10"]["selection"] == "5-fold CV" and probes["all"]["selection"] == "held-out (16 images)"


def test_one_image_of_a_class_fixes_c_instead_of_cross_validating():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), np.array([0, 0, 0, 1, 1, 1, 2])  # class 2: one labelled image
    fit = select_and_fit(x, y, rng.normal(size=(3, 5)), [1.0, 0.01, 0.1], score=accuracy, folds=5)
    assert fit.c == 0.01 and fit.selection.startswith("fixed") and fit.scores == {} and fit.fits == 1


def test_batchnorm_recalibration_uses_real_statistics_and_keeps_the_weights(mnist_dir):
    from pipeline.evaluate.images import dataset_images
    from pipeline.evaluate.probe import recalibrate_batchnorm

    torch.manual_seed(0)
    _, D = build_models("dcgan", image_size=28, channels=1, nz=8, ndf=8)
    norm = next(m for m in D.modules() if isinstance(m, torch.nn.BatchNorm2d))
    norm.running_mean.fill_(5.0)  # as if set by generated batches
    weights = {k: v.clone() for k, v in D.state_dict().items() if "running" not in k and "num_batches" not in k}
    images = dataset_images(read_dataset(mnist_dir), np.arange(500))
    recalibrate_batchnorm(D, images, image_size=28, batch_size=100)
    # The running mean is now the mean of the layer's input over the real images.
    captured = []
    hook = norm.register_forward_hook(lambda module, inp, out: captured.append(inp[0]))
    with torch.no_grad():
        D(images.float() / 127.5 - 1)
    hook.remove()
    torch.testing.assert_close(norm.running_mean, captured[0].mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not D.training
    assert all(torch.equal(v, D.state_dict()[k]) for k, v in weights.items())


def test_batchnorm_recalibration_depends_on_its_batch_size_so_that_key_is_tracked(mnist_dir):
    """update_bn averages per-batch variances, so the recalibration batch changes D's features:
    it is evaluate.probe_bn_batch_size (tracked), never the speed-only evaluate.batch_size."""
    from pipeline.config import EvaluateParams, speed_only
    from pipeline.evaluate.images import dataset_images
    from pipeline.evaluate.probe import discriminator_features, recalibrate_batchnorm

    images = dataset_images(read_dataset(mnist_dir), np.arange(300))
    features = []
    for batch_size in (7, 250):
        torch.manual_seed(0)
        _, D = build_models("dcgan", image_size=28, channels=1, nz=8, ndf=8)
        recalibrate_batchnorm(D, images, image_size=28, batch_size=batch_size)
        features.append(discriminator_features(D, images[:50], image_size=28))
    assert np.abs(features[0] - features[1]).max() > 1e-3
    assert not speed_only(EvaluateParams.model_fields["probe_bn_batch_size"])
    assert speed_only(EvaluateParams.model_fields["batch_size"])


def test_anime_hair_colour_probe_is_balanced_accuracy_beside_its_majority_baseline(tmp_path):
    """Hair colours of a crawl are unbalanced: answering the common colour would look good on plain
    accuracy, so the anime probe reports balanced accuracy (chance = 1 / colours) and the baseline."""
    from pipeline.datasets import SPLITS, write_dataset

    rng = np.random.default_rng(1)
    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)  # 70% one colour
    split = np.full(100, SPLITS["train"], dtype=np.uint8)
    split[rng.choice(100, 30, replace=False)] = SPLITS["test"]
    out = write_dataset(tmp_path / "anime", rng.integers(0, 256, (100, 8, 8, 3), dtype=np.uint8), split,
                        labels=labels, source="anime")
    metrics, details = run_probe(read_dataset(out), make_params(probe_per_class=[5]), {"_pixels": pixel_features})
    test = split == SPLITS["test"]
    assert details["score"] == "balanced_accuracy"
    assert metrics["probe_majority_acc"] == pytest.approx(np.mean(labels[test] == 0))
    chosen = details["tasks"]["probe_acc_pixels"]["label"]["n5"]
    assert metrics["probe_acc_pixels"] == pytest.approx(chosen["score"])
    assert chosen["score"] != chosen["accuracy"]  # balanced, not plain

"""The linear probe: D features as the paper takes them, and controls with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.datasets import read_dataset
from pipeline.evaluate.images import dataset_images
from pipeline.evaluate.probe import discriminator_features, fit_probe, pixel_features, run_probe, split_task
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
    split = split_task(dataset, np.asarray(dataset.labels), params)
    for setting, n in (("n10", 10), ("n100", 100)):
        counts = np.bincount(dataset.labels[split.train[setting]], minlength=10)
        assert (counts == n).all()
    assert len(split.train["all"]) == params.evaluate.probe_max_train
    assert len(split.val) == params.evaluate.probe_val_size and len(split.test) == params.evaluate.probe_max_test
    train_ids = set(np.concatenate(list(split.train.values())).tolist())
    assert not train_ids & set(split.val.tolist())
    assert not (train_ids | set(split.val.tolist())) & set(split.test.tolist())
    assert set(split.test.tolist()) <= set(dataset.indices("test").tolist())
    again = split_task(dataset, np.asarray(dataset.labels), params)  # seeded: the same draw every time
    assert all(np.array_equal(again.train[k], split.train[k]) for k in split.train)


def test_probe_on_random_features_is_near_chance(mnist_dir):
    dataset = read_dataset(mnist_dir)
    labels = np.asarray(dataset.labels)
    split = split_task(dataset, labels, make_params())
    rng = np.random.default_rng(0)
    noise = lambda idx: rng.normal(size=(len(idx), 64))  # noqa: E731 - features that know nothing
    train = split.train["all"]
    accuracy, _ = fit_probe(noise(train), labels[train], noise(split.val), labels[split.val],
                            noise(split.test), labels[split.test], [0.01, 0.1])
    assert accuracy < 0.2  # ten classes: chance is ~0.1


def test_probe_on_pixels_is_in_the_known_mnist_range(mnist_dir):
    # Logistic regression on raw MNIST pixels with 100 labelled images per class: ~0.85-0.88.
    params = make_params(probe_per_class=[100])
    metrics, details = run_probe(read_dataset(mnist_dir), params, {"_pixels": pixel_features})
    assert 0.80 <= metrics["probe_acc_pixels_n100"] <= 0.92
    assert metrics["probe_acc_pixels"] == metrics["probe_acc_pixels_n100"]  # the headline setting
    chosen = details["tasks"]["probe_acc_pixels"]["label"]["n100"]
    assert chosen["C"] in params.evaluate.probe_c_grid and chosen["train_images"] == 1000


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
    """A fresh anime crawl has tens of crops: C is chosen on half of them instead of failing."""
    from pipeline.datasets import SPLITS, write_dataset

    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(4), 10)  # 40 images, 4 hair colours
    split = np.full(40, SPLITS["train"], dtype=np.uint8)
    split[-8:] = SPLITS["test"]
    out = write_dataset(tmp_path / "anime", rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8), split,
                        labels=labels, source="unit")
    task = split_task(read_dataset(out), labels, make_params(probe_per_class=[10, "all"], probe_val_size=300))
    assert len(task.val) == 16  # half of the 32 train images
    assert not set(task.val.tolist()) & set(task.train["all"].tolist())
    assert len(task.train["all"]) == 16 and len(task.test) == 8


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

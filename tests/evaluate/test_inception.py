"""The standard-Inception path, offline: a local weights file of the right architecture.

The weights are random (conftest.inception_weights), so these tests prove loading and
preprocessing, not the FID number. "download" is tested through a file:// URL into a temporary
torch hub cache: nothing is fetched from the network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.datasets import sha256_file
from pipeline.evaluate import inception
from pipeline.evaluate.inception import (FEATURE_DIM, WEIGHTS_NAME, InceptionWeightsError, inception_features,
                                         load_inception)


@pytest.fixture(scope="module")
def digits(mnist_dir) -> torch.Tensor:
    from pipeline.datasets import read_dataset
    from pipeline.evaluate.images import dataset_images

    dataset = read_dataset(mnist_dir)
    return dataset_images(dataset, dataset.indices("test")[:4])


@pytest.fixture(scope="module")
def plain(inception_weights, digits) -> tuple[torch.nn.Module, str, np.ndarray]:
    """(model, weights sha256, features of `digits`) with the TF1-compatible resize."""
    model, sha = load_inception(str(inception_weights), antialias=False)
    return model, sha, inception_features(model, digits, batch_size=3)


def test_the_model_holds_the_weights_file_and_says_its_hash(inception_weights, plain):
    """Every tensor of the loaded extractor is the file's: the file is used, not ignored or
    replaced by a download, and the returned sha256 is that file's."""
    model, sha, _ = plain
    assert sha == sha256_file(inception_weights)
    stored = torch.load(inception_weights, map_location="cpu", weights_only=True)
    loaded = model.state_dict()
    assert set(stored) <= set(loaded)
    assert all(torch.equal(loaded[name], value) for name, value in stored.items())


def test_features_do_not_depend_on_the_batch_and_gray_is_its_rgb_copy(digits, plain):
    """An image's features are its own: the same alone, in any batch, in any order (a network
    left in training mode normalises by the batch; a wrong concatenation reorders rows), and a
    grayscale digit reads as the gray RGB image a viewer shows."""
    model, _, batched = plain  # the four digits in batches of 3 + 1
    assert batched.shape == (4, FEATURE_DIM) and np.isfinite(batched).all()
    assert batched.std(axis=0).max() > 0  # different digits, different features
    alone = np.concatenate([inception_features(model, digits[i:i + 1], batch_size=1) for i in (3, 2, 1, 0)])[::-1]
    np.testing.assert_allclose(batched, alone, rtol=1e-4, atol=1e-5)
    rgb = inception_features(model, digits.expand(-1, 3, -1, -1).contiguous(), batch_size=4)
    np.testing.assert_allclose(batched, rgb, rtol=1e-4, atol=1e-5)


def test_antialias_switch_is_honoured(inception_weights, digits, plain):
    smooth, _ = load_inception(str(inception_weights), antialias=True)
    b = inception_features(smooth, digits[:2], batch_size=2)
    assert not np.allclose(plain[2][:2], b)  # TF1-compatible resize vs torch's antialiased bilinear


def test_missing_weights_file_says_how_to_provide_it(tmp_path):
    with pytest.raises(InceptionWeightsError) as error:
        load_inception(str(tmp_path / "nope.pth"), antialias=False)
    message = str(error.value)
    assert "evaluate.inception_weights" in message and "evaluate.inception: false" in message
    assert "weights-inception-2015-12-05" in message


def test_a_file_of_another_network_is_refused(tmp_path):
    wrong = tmp_path / "lenet.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), wrong)
    with pytest.raises(InceptionWeightsError, match="not the Inception v3 FID weights"):
        load_inception(str(wrong), antialias=False)
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(InceptionWeightsError, match="not a PyTorch state dict"):
        load_inception(str(garbage), antialias=False)


def test_images_must_be_uint8(plain):
    model = plain[0]
    with pytest.raises(ValueError, match="uint8"):
        inception_features(model, torch.zeros(1, 3, 8, 8), batch_size=1)


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache of our own (TORCH_HOME), so the user's cache is never touched."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert Path(torch.hub.get_dir()) == tmp_path / "torch" / "hub"
    return Path(torch.hub.get_dir()) / "checkpoints"


def serve(monkeypatch, path: Path, sha256: str | None = None) -> None:
    """Point the download URL at a local file (urllib reads file:// URLs); optionally claim its hash."""
    monkeypatch.setattr(inception, "WEIGHTS_URL", path.resolve().as_uri())
    if sha256 is not None:
        monkeypatch.setattr(inception, "WEIGHTS_SHA256", sha256)


def test_download_is_checked_then_cached_then_loaded(hub, monkeypatch, inception_weights):
    sha = sha256_file(inception_weights)
    serve(monkeypatch, inception_weights, sha)  # as if this file were the published one
    model, returned = load_inception("download", antialias=False)
    assert returned == sha and sha256_file(hub / WEIGHTS_NAME) == sha
    # A second run reads the cache: the "server" is gone, the cached file is checked and used.
    serve(monkeypatch, hub.parent / "gone.pth")
    assert load_inception("download", antialias=False)[1] == sha


def test_a_download_with_the_wrong_hash_is_refused_and_not_cached(hub, monkeypatch, inception_weights):
    serve(monkeypatch, inception_weights)  # a real weights file, but not the published one
    with pytest.raises(InceptionWeightsError, match="not the published file.*invalid hash value"):
        load_inception("download", antialias=False)
    assert not list(hub.iterdir())  # no copy, no .partial left behind


def test_a_cached_file_with_the_wrong_hash_is_refused_before_anything_reads_it(hub, monkeypatch, inception_weights,
                                                                               tmp_path):
    """A file under the published name that is not the published file: one clear line, and it is
    never unpickled. Here a well-formed Inception state dict (it would load fine) and a pickle
    that runs code when loaded (it would leave a marker file)."""
    hub.mkdir(parents=True)
    serve(monkeypatch, tmp_path / "no-server.pth")  # were anything downloaded, it would fail differently
    shutil.copy(inception_weights, hub / WEIGHTS_NAME)
    with pytest.raises(InceptionWeightsError) as error:
        load_inception("download", antialias=False)
    message = str(error.value)
    assert "\n" not in message and WEIGHTS_NAME in message and inception.WEIGHTS_SHA256 in message
    assert f"sha256 {sha256_file(inception_weights)} is not the published" in message

    marker = tmp_path / "unpickled"
    torch.save(RunsCode(marker), hub / WEIGHTS_NAME)
    with pytest.raises(InceptionWeightsError, match="is not the published"):
        load_inception("download", antialias=False)
    assert not marker.exists()


class RunsCode:
    """Unpickling this creates a file: what a hostile weights file could do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)

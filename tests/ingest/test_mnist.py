import gzip
import shutil

import numpy as np
import pytest

from pipeline.config import MnistParams
from pipeline.datasets import read_dataset
from pipeline.ingest.mnist import FILES, MnistError, ingest_mnist, parse_idx, read_idx


def test_real_files_parse_with_official_checks(mnist_source):
    images = read_idx(mnist_source / "train-images-idx3-ubyte.gz")
    labels = read_idx(mnist_source / "train-labels-idx1-ubyte.gz")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first labels
    assert np.bincount(labels).tolist()[1] == 6742  # official count of ones in the train set
    assert images.max() == 255 and images.min() == 0


def test_ingest_writes_the_full_dataset(tmp_path, mnist_source):
    out = ingest_mnist(MnistParams(source=str(mnist_source)), tmp_path / "mnist")
    ds = read_dataset(out)
    assert ds.images.shape == (70000, 28, 28, 1)
    assert ds.meta["counts"] == {"train": 60000, "test": 10000}
    assert len(ds.indices("test")) == 10000
    assert ds.labels[ds.indices("test")][:3].tolist() == [7, 2, 1]
    assert ds.meta["params"]["source"] == str(mnist_source)


def test_uncompressed_folder_and_limits(tmp_path, mnist_source):
    folder = tmp_path / "raw"
    folder.mkdir()
    for name in FILES:
        with gzip.open(mnist_source / f"{name}.gz") as src, open(folder / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    ds = read_dataset(ingest_mnist(MnistParams(source=str(folder), limit_train=100, limit_test=20), tmp_path / "out"))
    assert ds.meta["counts"] == {"train": 100, "test": 20}
    full = read_idx(mnist_source / "t10k-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(ds.images[ds.indices("test"), ..., 0], full[:20])


def copy_folder(src, dst):
    dst.mkdir()
    for name in FILES:
        shutil.copy(src / f"{name}.gz", dst / f"{name}.gz")
    return dst


def test_truncated_file_is_named(tmp_path, mnist_source):
    folder = copy_folder(mnist_source, tmp_path / "raw")
    target = folder / "t10k-labels-idx1-ubyte.gz"
    data = gzip.decompress(target.read_bytes())
    target.write_bytes(gzip.compress(data[:-100]))
    with pytest.raises(MnistError, match=r"t10k-labels-idx1-ubyte\.gz: .*truncated"):
        ingest_mnist(MnistParams(source=str(folder)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cut_gzip_stream_is_named(tmp_path, mnist_source):
    folder = copy_folder(mnist_source, tmp_path / "raw")
    target = folder / "train-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(MnistError, match=r"train-labels-idx1-ubyte\.gz: cannot be read"):
        ingest_mnist(MnistParams(source=str(folder)), tmp_path / "out")


def test_altered_pixel_fails_the_md5(tmp_path, mnist_source):
    folder = copy_folder(mnist_source, tmp_path / "raw")
    target = folder / "t10k-images-idx3-ubyte.gz"
    data = bytearray(gzip.decompress(target.read_bytes()))
    data[5000] ^= 0x01
    target.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(MnistError, match="MD5 .* not the official"):
        read_idx(target)


def test_foreign_files(tmp_path, mnist_source):
    with pytest.raises(MnistError, match="bad magic"):
        parse_idx(b"\x89PNG\r\n\x1a\n" + bytes(100), "x.png")
    # Labels where images are expected: a valid IDX file, but the wrong one.
    folder = copy_folder(mnist_source, tmp_path / "raw")
    shutil.copy(folder / "train-labels-idx1-ubyte.gz", folder / "train-images-idx3-ubyte.gz")
    with pytest.raises(MnistError, match=r"train-images-idx3-ubyte\.gz: header says \(60000,\), expected"):
        ingest_mnist(MnistParams(source=str(folder)), tmp_path / "out")


def test_missing_file_and_missing_folder(tmp_path, mnist_source):
    folder = copy_folder(mnist_source, tmp_path / "raw")
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(MnistError, match="neither t10k-images-idx3-ubyte nor t10k-images-idx3-ubyte.gz"):
        ingest_mnist(MnistParams(source=str(folder)), tmp_path / "out")
    with pytest.raises(MnistError, match="mnist.source: .* is not a folder"):
        ingest_mnist(MnistParams(source=str(tmp_path / "nowhere")), tmp_path / "out")


@pytest.fixture
def mirrors_down(monkeypatch):
    """torchvision's MNIST mirrors replaced by a local port nobody listens on (offline, fast)."""
    import socket

    from torchvision.datasets import MNIST

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Closed again: connections to it are refused.
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{port}/mnist/", f"http://127.0.0.1:{port}/other/"])
    return port


def test_failed_download_says_how_to_use_local_files(tmp_path, mirrors_down):
    with pytest.raises(MnistError) as error:
        ingest_mnist(MnistParams(source="download"), tmp_path / "out")
    message = str(error.value)
    assert "\n" not in message  # one line, though torchvision's own message spans several
    assert message.startswith("mnist.source is 'download', and the MNIST download failed")
    assert f"127.0.0.1:{mirrors_down}" in message  # what was tried
    assert "set mnist.source: /path/to/that/folder in params.yaml" in message
    assert all(f"{name}.gz" in message for name in FILES)
    assert not (tmp_path / "out").exists()


def test_failed_download_is_one_line_from_the_cli(tmp_path, mirrors_down, monkeypatch, capsys):
    from pipeline.__main__ import main

    (tmp_path / "params.yaml").write_text("mnist: {source: download}\nruns: {g: {model: gan, dataset: mnist}}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["ingest-mnist"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: mnist.source is 'download'")
    assert not (tmp_path / "data" / "datasets" / "mnist").exists()

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import datasets
from pipeline.datasets import (SPLITS, DatasetError, DatasetWriter, read_dataset, verified_record_path,
                               write_dataset)


def sample(n=10, size=8, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    split = np.array([SPLITS["train"]] * (n - 3) + [SPLITS["test"]] * 3, dtype=np.uint8)
    return images, split, rng.integers(0, 10, n)


def leftovers(folder):
    """What a folder holds besides datasets' verification records (which reads may write)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".verified.json"))


def test_round_trip_is_memory_mapped_and_complete(tmp_path):
    images, split, labels = sample()
    out = write_dataset(tmp_path / "ds", images, split, labels=labels, source="unit", meta={"params": {"a": 1}})
    ds = read_dataset(out)
    assert isinstance(ds.images, np.memmap)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.labels.dtype == np.int64
    assert ds.attrs is None
    assert ds.meta["counts"] == {"train": 7, "test": 3}
    assert ds.meta["params"] == {"a": 1} and ds.meta["source"] == "unit"
    assert ds.meta["image_shape"] == [8, 8, 3]
    assert set(ds.meta["sha256"]) == {"images", "split", "labels"}
    np.testing.assert_array_equal(ds.indices("test"), [7, 8, 9])
    assert (ds.image_size, ds.channels, len(ds)) == (8, 3, 10)


def test_grayscale_without_channel_axis_gets_one(tmp_path):
    images, split, _ = sample(channels=1)
    ds = read_dataset(write_dataset(tmp_path / "ds", images[..., 0], split, source="unit"))
    assert ds.images.shape == (10, 8, 8, 1)


def test_altered_array_is_detected(tmp_path):
    images, split, labels = sample()
    out = write_dataset(tmp_path / "ds", images, split, labels=labels, source="unit")
    raw = bytearray((out / "labels.npy").read_bytes())
    raw[-1] ^= 0xFF
    (out / "labels.npy").write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"labels\.npy: sha256 does not match"):
        read_dataset(out)
    read_dataset(out, verify=False)  # an explicit opt-out still opens it


def test_truncated_and_missing_files(tmp_path):
    images, split, _ = sample()
    out = write_dataset(tmp_path / "ds", images, split, source="unit")
    data = (out / "images.npy").read_bytes()
    (out / "images.npy").write_bytes(data[:-5])
    with pytest.raises(DatasetError, match=r"images\.npy"):
        read_dataset(out)
    (out / "images.npy").unlink()
    with pytest.raises(DatasetError, match=r"images\.npy: missing"):
        read_dataset(out)
    with pytest.raises(DatasetError, match="meta.json: not found"):
        read_dataset(tmp_path / "nothing")


def test_failed_write_leaves_nothing_and_keeps_the_old_version(tmp_path):
    images, split, _ = sample()
    out = write_dataset(tmp_path / "ds", images, split, source="old")
    with pytest.raises(RuntimeError):
        with DatasetWriter(out, 4, (8, 8, 3), source="new") as writer:
            writer.images[:2] = 1
            raise RuntimeError("killed")
    assert read_dataset(out).meta["source"] == "old"
    assert leftovers(tmp_path) == ["ds"]  # no temporary folder left


def test_rewrite_replaces_atomically(tmp_path):
    images, split, _ = sample()
    write_dataset(tmp_path / "ds", images, split, source="old")
    write_dataset(tmp_path / "ds", images[:5], split[:5], source="new")
    ds = read_dataset(tmp_path / "ds")
    assert (ds.meta["source"], len(ds)) == ("new", 5)
    assert leftovers(tmp_path) == ["ds"]


def test_mismatched_lengths_and_dtypes_are_refused(tmp_path):
    images, split, labels = sample()
    with pytest.raises(ValueError, match="labels has 9 rows, images has 10"):
        write_dataset(tmp_path / "ds", images, split, labels=labels[:9], source="unit")
    assert not (tmp_path / "ds").exists()
    with pytest.raises(ValueError, match="uint8"):
        write_dataset(tmp_path / "ds", images.astype(np.float32), split, source="unit")


def test_leftovers_of_killed_writers_are_removed_on_the_next_write(tmp_path):
    images, split, _ = sample()
    (tmp_path / ".ds.tmp-abc123").mkdir()  # a writer killed mid-write
    (tmp_path / ".ds.tmp-abc123" / "images.npy").write_bytes(b"half")
    (tmp_path / ".ds.old-999").mkdir()  # killed between moving the old version aside and renaming
    write_dataset(tmp_path / "ds", images, split, source="new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


# --- opening is cheap: an array is hashed once per content change


@pytest.fixture
def hashed(monkeypatch):
    """The names of the files read_dataset hashes. Files count as settled at once (no racy
    window), so a write made right after a check is caught by its identity alone."""
    names = []
    real = datasets.sha256_file

    def counting(path, *args, **kwargs):
        names.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "sha256_file", counting)
    monkeypatch.setattr(datasets, "RACY_NS", 0)
    return names


def written(tmp_path, hashed):
    images, split, labels = sample()
    out = write_dataset(tmp_path / "ds", images, split, labels=labels, source="unit")
    hashed.clear()  # the writer's own hashes
    return out


def flip_last_byte(file: Path) -> None:
    raw = bytearray(file.read_bytes())
    raw[-1] ^= 0xFF
    with open(file, "r+b") as handle:  # in place: same inode, same size
        handle.write(bytes(raw))


def test_an_unchanged_dataset_is_hashed_once(tmp_path, hashed):
    out = written(tmp_path, hashed)
    read_dataset(out)
    assert sorted(hashed) == ["images.npy", "labels.npy", "split.npy"]
    assert verified_record_path(out).is_file() and not (out / verified_record_path(out).name).exists()
    hashed.clear()
    np.testing.assert_array_equal(read_dataset(out).labels, sample()[2])
    assert hashed == []  # the cheap path: nothing changed since the check
    read_dataset(out, verify=True)  # the full check on request
    assert sorted(hashed) == ["images.npy", "labels.npy", "split.npy"]
    hashed.clear()
    read_dataset(out, verify=False)
    assert hashed == []


def test_changed_content_with_the_same_size_is_caught(tmp_path, hashed):
    out = written(tmp_path, hashed)
    read_dataset(out)
    file = out / "labels.npy"
    before = file.stat()
    flip_last_byte(file)
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns - 1_000_000_000))  # a new mtime (in the past: not "racy")
    hashed.clear()
    with pytest.raises(DatasetError, match=r"labels\.npy: sha256 does not match"):
        read_dataset(out)
    assert hashed == ["labels.npy"]  # only the changed array is hashed


def test_changed_content_with_its_mtime_set_back_is_caught(tmp_path, hashed):
    out = written(tmp_path, hashed)
    read_dataset(out)
    file = out / "images.npy"
    before = file.stat()
    time.sleep(0.05)  # past the filesystem's clock tick, so the change gets a new ctime
    flip_last_byte(file)
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))  # size and mtime as recorded
    assert (file.stat().st_size, file.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with pytest.raises(DatasetError, match=r"images\.npy: sha256 does not match"):
        read_dataset(out)


def test_a_replaced_file_is_hashed_again(tmp_path, hashed):
    out = written(tmp_path, hashed)
    read_dataset(out)
    file = out / "split.npy"
    before = file.stat()
    shutil.copy2(file, tmp_path / "copy.npy")
    flip_last_byte(tmp_path / "copy.npy")
    os.utime(tmp_path / "copy.npy", ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(tmp_path / "copy.npy", file)  # same size and mtime, another inode
    hashed.clear()
    with pytest.raises(DatasetError, match=r"split\.npy: sha256 does not match"):
        read_dataset(out)
    assert hashed == ["split.npy"]


def test_a_damaged_record_means_hashing_again(tmp_path, hashed):
    out = written(tmp_path, hashed)
    read_dataset(out)
    verified_record_path(out).write_text("{not json")
    hashed.clear()
    read_dataset(out)
    assert sorted(hashed) == ["images.npy", "labels.npy", "split.npy"]
    hashed.clear()
    read_dataset(out)  # the record was rewritten
    assert hashed == []


def test_files_changed_just_now_are_not_trusted(tmp_path, hashed, monkeypatch):
    # A file whose mtime/ctime is within the filesystem's clock tick of the check could be
    # written again without either changing: such files are hashed at every open.
    monkeypatch.setattr(datasets, "RACY_NS", 10**18)
    out = written(tmp_path, hashed)
    read_dataset(out)
    read_dataset(out)
    assert sorted(hashed) == ["images.npy", "images.npy", "labels.npy", "labels.npy", "split.npy", "split.npy"]

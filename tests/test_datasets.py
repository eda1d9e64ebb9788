import numpy as np
import pytest

from pipeline.datasets import SPLITS, DatasetError, DatasetWriter, read_dataset, write_dataset


def sample(n=10, size=8, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    split = np.array([SPLITS["train"]] * (n - 3) + [SPLITS["test"]] * 3, dtype=np.uint8)
    return images, split, rng.integers(0, 10, n)


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary folder left


def test_rewrite_replaces_atomically(tmp_path):
    images, split, _ = sample()
    write_dataset(tmp_path / "ds", images, split, source="old")
    write_dataset(tmp_path / "ds", images[:5], split[:5], source="new")
    ds = read_dataset(tmp_path / "ds")
    assert (ds.meta["source"], len(ds)) == ("new", 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


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

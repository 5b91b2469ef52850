"""The prepared image file (models/prepared.py): what an upload becomes and workers train from.
Pixels and labels come back exactly, train and val parts stay apart, a file without a val part
is split by the job's seed as the built-in digits are, and a half-written file never appears."""

from __future__ import annotations

import numpy as np
import pytest

from models.prepared import MAGIC, PreparedWriter, load_prepared, read_header


def write(path, images, labels, splits, classes=("a", "b", "c")):
    writer = PreparedWriter(path, *images.shape[1:], list(classes))
    for x, y, split in zip(images, labels, splits):
        writer.add(split, x, int(y))
    return writer.finish()


def test_pixels_and_labels_come_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 3, 5, 4), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2, 2])
    splits = ["train"] * 5 + ["val"] * 2
    header = write(tmp_path / "d", images, labels, splits)
    assert (header.train, header.val, header.classes) == (5, 2, ["a", "b", "c"])
    data = load_prepared(tmp_path / "d")
    assert (data.channels, data.height, data.width, data.num_classes) == (3, 5, 4, 3)
    assert np.array_equal(np.round(data.x_train.numpy() * 255), images[:5])
    assert np.array_equal(np.round(data.x_val.numpy() * 255), images[5:])
    assert data.y_train.tolist() == [0, 1, 2, 0, 1] and data.y_val.tolist() == [2, 2]
    with open(tmp_path / "d", "rb") as fh:
        again, offset = read_header(fh)
    assert again == header and offset % 64 == 0
    assert (tmp_path / "d").stat().st_size == offset + 7 * (3 * 5 * 4 + 8)
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary file left behind


def test_without_a_val_part_the_seed_splits_it(tmp_path):
    images = np.arange(20 * 4, dtype=np.uint8).reshape(20, 1, 2, 2)
    write(tmp_path / "d", images, np.arange(20) % 3, ["train"] * 20)
    first, same, other = (load_prepared(tmp_path / "d", seed=s) for s in (1, 1, 2))
    assert (len(first.y_train), len(first.y_val)) == (16, 4)
    assert first.y_val.tolist() == same.y_val.tolist()
    assert first.x_val.tolist() != other.x_val.tolist()


def test_refusals(tmp_path):
    writer = PreparedWriter(tmp_path / "d", 1, 2, 2, ["a", "b"])
    with pytest.raises(ValueError, match="expected"):
        writer.add("train", np.zeros((1, 3, 3), np.uint8), 0)
    with pytest.raises(ValueError, match="outside 0..1"):
        writer.add("train", np.zeros((1, 2, 2), np.uint8), 2)
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not ours")
    with pytest.raises(ValueError, match="not a prepared"), open(tmp_path / "junk", "rb") as fh:
        read_header(fh)
    assert MAGIC.endswith(b"\n")

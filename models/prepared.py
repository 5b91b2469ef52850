"""An uploaded image dataset, prepared once when it is uploaded: the file workers cache and
train from (format "trainyard-images-v1").

Whatever the upload was (class folders in a zip or tar, MNIST IDX files, CIFAR-10 batches, an
.npz), the API converts it to this one layout, so a worker never parses archives or decodes
images, and loading is a memory map:

    b"TYIMG1\\n"                      7 bytes
    header length                    4 bytes, little-endian unsigned
    header                           UTF-8 JSON: kind, channels, height, width, classes (names,
                                     index = label), train, val (counts), then padding to a
                                     multiple of 64 bytes
    x_train  uint8 (train, C, H, W)
    y_train  int64 little-endian (train,)
    x_val    uint8 (val, C, H, W)     val may be 0: the job's seed then splits train
    y_val    int64 (val,)

Pure numpy (and torch to hand tensors over): importable on a GPU box with torch alone.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # pragma: no cover
    from models.data import ImageData

MAGIC = b"TYIMG1\n"
ALIGN = 64


@dataclass(frozen=True)
class PreparedHeader:
    channels: int
    height: int
    width: int
    classes: list[str]  # label i is classes[i]
    train: int
    val: int

    @property
    def image_bytes(self) -> int:
        return self.channels * self.height * self.width


class PreparedWriter:
    """Writes a prepared file image by image, in bounded memory: pixels and labels go to
    temporary files beside `path` and are joined by `finish()`, which writes `path`
    atomically (a reader never sees half a file)."""

    def __init__(self, path: Path, channels: int, height: int, width: int,
                 classes: list[str]) -> None:
        self.path = Path(path)
        self.shape = (channels, height, width)
        self.classes = list(classes)
        self._dir = Path(tempfile.mkdtemp(prefix=".prepared-", dir=self.path.parent))
        self._files = {name: open(self._dir / name, "wb")
                       for name in ("x_train", "y_train", "x_val", "y_val")}
        self.counts = {"train": 0, "val": 0}

    def add(self, split: str, pixels, label: int) -> None:
        """One image: `pixels` uint8 (C, H, W) in this writer's shape; `split` train or val."""
        import numpy as np

        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        if pixels.shape != self.shape:
            raise ValueError(f"image of shape {pixels.shape}, expected {self.shape}")
        if not 0 <= label < len(self.classes):
            raise ValueError(f"label {label} outside 0..{len(self.classes) - 1}")
        self._files[f"x_{split}"].write(pixels.tobytes())
        self._files[f"y_{split}"].write(struct.pack("<q", label))
        self.counts[split] += 1

    def finish(self) -> PreparedHeader:
        for fh in self._files.values():
            fh.close()
        c, h, w = self.shape
        header = PreparedHeader(c, h, w, self.classes, self.counts["train"], self.counts["val"])
        text = json.dumps({"kind": "images", "channels": c, "height": h, "width": w,
                           "classes": self.classes, "train": header.train,
                           "val": header.val}).encode("utf-8")
        start = len(MAGIC) + 4 + len(text)
        text += b" " * (-start % ALIGN)
        tmp = self._dir / "joined"
        with open(tmp, "wb") as out:
            out.write(MAGIC + struct.pack("<I", len(text)) + text)
            for name in ("x_train", "y_train", "x_val", "y_val"):
                with open(self._dir / name, "rb") as part:
                    shutil.copyfileobj(part, out, 1024 * 1024)
        os.replace(tmp, self.path)
        shutil.rmtree(self._dir, ignore_errors=True)
        return header

    def abort(self) -> None:
        for fh in self._files.values():
            fh.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def read_header(fh: BinaryIO) -> tuple[PreparedHeader, int]:
    """The header of an open prepared file, and the offset where its arrays start."""
    if fh.read(len(MAGIC)) != MAGIC:
        raise ValueError("not a prepared trainyard image dataset")
    (length,) = struct.unpack("<I", fh.read(4))
    meta = json.loads(fh.read(length).decode("utf-8"))
    header = PreparedHeader(meta["channels"], meta["height"], meta["width"], meta["classes"],
                            meta["train"], meta["val"])
    return header, len(MAGIC) + 4 + length


def load_prepared(path: Path, seed: int = 0, val_fraction: float = 0.2) -> ImageData:
    """The prepared file as ImageData (float32 in [0, 1]). Without a validation part of its
    own, the seed splits the training part, as the built-in digits are split."""
    import numpy as np
    import torch

    from models.data import _image_data, _split

    with open(path, "rb") as fh:
        header, offset = read_header(fh)
    c, h, w = header.channels, header.height, header.width
    parts = {}
    for name, count in (("train", header.train), ("val", header.val)):
        x = np.memmap(path, np.uint8, "r", offset, (count, c, h, w)) if count else \
            np.zeros((0, c, h, w), np.uint8)
        offset += count * header.image_bytes
        y = np.memmap(path, "<i8", "r", offset, (count,)) if count else np.zeros(0, np.int64)
        offset += count * 8
        parts[name] = (torch.from_numpy(np.asarray(x, dtype=np.float32) / 255.0),
                       torch.from_numpy(np.array(y, dtype=np.int64)))  # a copy: writable
    (x, y), (xv, yv) = parts["train"], parts["val"]
    if header.val == 0:
        tr, va = _split(len(y), val_fraction, seed)
        x, y, xv, yv = x[tr], y[tr], x[va], y[va]
    return _image_data(x, y, xv, yv, len(header.classes))

"""The dataset catalogue: the built-in datasets found on this machine plus the versions of
users' uploads. GET /datasets lists it; POST /jobs looks the job's dataset up in it (`name`:
the newest version, `name@2`: that one)."""

from __future__ import annotations

import io
import re
from collections import OrderedDict

from api.schemas import ClassSamples, DatasetOut
from core.settings import Settings
from db.store import DatasetRecord, Store
from db.store.datasets import CHUNK_BYTES
from db.store.records import summary_image_shape
from models.data import IMAGE_DATASETS, TEXT_DATASETS, builtin_datasets
from models.prepared import read_header

# Matched whole (fullmatch): with match() and "$", a name ending in "\n" would pass.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
REF_PATTERN = re.compile(r"(?P<name>[a-z0-9][a-z0-9_-]{0,63})(?:@(?P<version>[1-9][0-9]{0,8}))?")
# Names taken by the built-in datasets even on machines where their files are absent, so that
# dropping MNIST files into the data directory later can never shadow a user's upload.
RESERVED_NAMES = frozenset(IMAGE_DATASETS + TEXT_DATASETS)
# GET .../samples shows at most this many images in all (per_class shrinks for many classes).
MAX_SAMPLE_IMAGES = 512


def builtin(settings: Settings) -> list[DatasetOut]:
    """The built-in datasets whose files are on this machine."""
    return [DatasetOut.from_builtin(d) for d in builtin_datasets(settings.resolved_data_dir)]


def is_builtin_name(name: str, settings: Settings) -> bool:
    """Whether `name` is a built-in dataset's, here or on any machine: no upload may take it."""
    return name in RESERVED_NAMES | {d.name for d in builtin(settings)}


def available_datasets(settings: Settings, store: Store, owner: str | None) -> list[DatasetOut]:
    """The built-in datasets and the uploads of `owner` (None: everyone's, for admins)."""
    return builtin(settings) + [DatasetOut.from_upload(r) for r in store.list_datasets(owner)]


def parse_ref(ref: str) -> tuple[str, int | None] | None:
    """`name` -> (name, None); `name@2` -> (name, 2); None when no upload can be named so."""
    match = REF_PATTERN.fullmatch(ref)
    if match is None:
        return None
    version = match.group("version")
    return match.group("name"), int(version) if version else None


def find_dataset(name: str, settings: Settings, store: Store, owner: str) -> DatasetOut | None:
    """A built-in dataset present on this machine, else the owner's upload (`name`: its
    newest version; `name@2`: that version), else None. Another user's upload is None too:
    callers answer as for a name that does not exist."""
    for dataset in builtin(settings):
        if dataset.name == name:
            return dataset
    parsed = parse_ref(name)
    if parsed is None:  # no upload can have it: spare the database the query
        return None
    record = store.get_dataset(parsed[0], owner, parsed[1])
    return DatasetOut.from_upload(record) if record is not None else None


def image_shape(found: DatasetOut) -> tuple[int, int, int, int] | None:
    """(channels, height, width, classes) of an uploaded image dataset, from its summary, for
    the size check of a job before it is queued; None for anything else."""
    if found.source != "uploaded":
        return None
    return summary_image_shape(found.kind, found.summary)


class ChunkedFile:
    """A stored version read as a file of byte ranges: only the chunks that cover a range
    are fetched (each by its own query), the last few kept, so a look at a 200 MB dataset reads
    its header, its labels and the few images shown."""

    def __init__(self, store: Store, record: DatasetRecord, keep: int = 4) -> None:
        self.store, self.record, self.keep = store, record, keep
        self._chunks: OrderedDict[int, bytes] = OrderedDict()

    def _chunk(self, seq: int) -> bytes:
        if seq in self._chunks:
            self._chunks.move_to_end(seq)
            return self._chunks[seq]
        data = self.store.get_dataset_chunk(self.record.id, seq)
        if data is None:
            raise ValueError(f"dataset {self.record.ref}: its stored bytes end early")
        self._chunks[seq] = data
        while len(self._chunks) > self.keep:
            self._chunks.popitem(last=False)
        return data

    def read(self, offset: int, n: int) -> bytes:
        out = bytearray()
        while n > 0:
            seq, start = divmod(offset, CHUNK_BYTES)
            piece = self._chunk(seq)[start:start + n]
            if not piece:
                raise ValueError(f"dataset {self.record.ref}: read past its end")
            out += piece
            offset += len(piece)
            n -= len(piece)
        return bytes(out)


def image_samples(store: Store, record: DatasetRecord, per_class: int,
                  max_images: int = MAX_SAMPLE_IMAGES) -> list[ClassSamples]:
    """The first `per_class` images of each class of a prepared image file (training part
    first, then validation), as C x H x W floats in [0, 1]; fewer per class when there are so
    many classes that more than `max_images` would be shown."""
    import numpy as np

    reader = ChunkedFile(store, record)
    head = io.BytesIO(reader.read(0, min(record.size, CHUNK_BYTES)))
    header, offset = read_header(head)
    per_class = max(1, min(per_class, max_images // max(1, len(header.classes))))
    k = len(header.classes)
    counts = np.zeros(k, np.int64)
    picked: list[list[bytes]] = [[] for _ in header.classes]
    for count in (header.train, header.val):
        labels_at = offset + count * header.image_bytes
        labels = np.frombuffer(reader.read(labels_at, count * 8), "<i8") if count else \
            np.zeros(0, np.int64)
        counts += np.bincount(labels, minlength=k)[:k]
        # each class's first indexes: a stable sort groups them, in file order
        order = np.argsort(labels, kind="stable")
        starts = np.searchsorted(labels[order], np.arange(k))
        for label in range(k):
            need = per_class - len(picked[label])
            for i in order[starts[label]:starts[label] + min(need, int(counts[label]))]:
                if labels[i] != label:
                    break
                picked[label].append(reader.read(offset + int(i) * header.image_bytes,
                                                 header.image_bytes))
        offset = labels_at + count * 8
    shape = (header.channels, header.height, header.width)
    return [ClassSamples(
        name=name, label=label, count=int(counts[label]),
        images=[(np.frombuffer(raw, np.uint8).reshape(shape) / 255.0).round(4).tolist()
                for raw in picked[label]])
        for label, name in enumerate(header.classes)]

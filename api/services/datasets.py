"""The dataset catalogue: the built-in datasets found on this machine plus the text corpora
users uploaded. GET /datasets lists it; POST /jobs looks the job's dataset up in it."""

from __future__ import annotations

import re

from api.schemas import DatasetOut
from core.settings import Settings
from db.store import Store
from models.data import IMAGE_DATASETS, TEXT_DATASETS, builtin_datasets

# Matched whole (fullmatch): with match() and "$", a name ending in "\n" would pass.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# Names taken by the built-in datasets even on machines where their files are absent, so that
# dropping MNIST files into the data directory later can never shadow a user's upload.
RESERVED_NAMES = frozenset(IMAGE_DATASETS + TEXT_DATASETS)


def builtin(settings: Settings) -> list[DatasetOut]:
    """The built-in datasets whose files are on this machine."""
    return [DatasetOut.from_builtin(d) for d in builtin_datasets(settings.resolved_data_dir)]


def is_builtin_name(name: str, settings: Settings) -> bool:
    """Whether `name` is a built-in dataset's, here or on any machine: no upload may take it."""
    return name in RESERVED_NAMES | {d.name for d in builtin(settings)}


def available_datasets(settings: Settings, store: Store, owner: str | None) -> list[DatasetOut]:
    """The built-in datasets and the uploads of `owner` (None: everyone's, for admins)."""
    return builtin(settings) + [DatasetOut.from_upload(r) for r in store.list_datasets(owner)]


def find_dataset(name: str, settings: Settings, store: Store, owner: str) -> DatasetOut | None:
    """A built-in dataset present on this machine, else the owner's upload, else None."""
    for dataset in builtin(settings):
        if dataset.name == name:
            return dataset
    if not NAME_PATTERN.fullmatch(name):  # no upload can have it: spare the database the query
        return None
    record = store.get_dataset(name, owner)
    return DatasetOut.from_upload(record) if record is not None else None

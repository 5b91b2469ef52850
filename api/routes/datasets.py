"""/datasets: the built-in datasets found on this machine plus text uploaded by users."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, UploadFile

from api.auth import PrincipalDep
from api.deps import SettingsDep, StoreDep, invalid
from api.schemas import UNPARSABLE_BODY, DatasetOut, ErrorOut, check_storable
from db.store import Conflict
from models.data import IMAGE_DATASETS, TEXT_DATASETS, builtin_datasets, validate_text_upload
from core.settings import Settings

router = APIRouter(prefix="/datasets", tags=["datasets"])

# Matched whole (fullmatch): with match() and "$", a name ending in "\n" would pass.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# Names taken by the built-in datasets even on machines where their files are absent, so that
# dropping MNIST files into the data directory later can never shadow a user's upload.
RESERVED_NAMES = frozenset(IMAGE_DATASETS + TEXT_DATASETS)
CHUNK = 1024 * 1024


def _builtin(settings: Settings) -> list[DatasetOut]:
    return [
        DatasetOut(
            name=d["name"],
            kind=d["kind"],
            source="builtin",
            size_bytes=d.get("size_bytes"),
            examples=d.get("examples"),
            description=d.get("description", ""),
        )
        for d in builtin_datasets(settings.resolved_data_dir)
    ]


def _uploaded_out(record: Any) -> DatasetOut:
    return DatasetOut(
        name=record.name,
        kind=record.kind,
        source="uploaded",
        size_bytes=record.size,
        description=record.description or "",
        owner=record.owner,
    )


def available_datasets(settings: Settings, store: Any, owner: str | None) -> list[DatasetOut]:
    """The built-in datasets and the uploads of `owner` (None: everyone's, for admins)."""
    return _builtin(settings) + [_uploaded_out(r) for r in store.list_datasets(owner)]


def find_dataset(name: str, settings: Settings, store: Any, owner: str) -> DatasetOut | None:
    """A built-in dataset present on this machine, else the owner's upload, else None."""
    for dataset in _builtin(settings):
        if dataset.name == name:
            return dataset
    if not NAME_PATTERN.fullmatch(name):  # no upload can have it: spare the database the query
        return None
    record = store.get_dataset(name, owner)
    return _uploaded_out(record) if record is not None else None


@router.get("", response_model=list[DatasetOut], summary="Datasets jobs can train on")
def list_datasets(settings: SettingsDep, store: StoreDep,
                  principal: PrincipalDep) -> list[DatasetOut]:
    return available_datasets(settings, store, principal.owner_filter)


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    responses={
        **UNPARSABLE_BODY,
        409: {"model": ErrorOut, "description": "The name is taken."},
        413: {"model": ErrorOut, "description": "The file is larger than the upload limit."},
    },
    summary="Upload a text corpus for the RNN language model",
)
def upload_dataset(
    settings: SettingsDep,
    store: StoreDep,
    principal: PrincipalDep,
    name: Annotated[
        str, Form(description="^[a-z0-9][a-z0-9_-]{0,63}$", examples=["shakespeare-small"])
    ],
    file: Annotated[UploadFile, File(description="UTF-8 text.")],
    kind: Annotated[str, Form(description="Only 'text' for now.")] = "text",
    description: Annotated[str, Form(max_length=500)] = "",
) -> DatasetOut:
    if not NAME_PATTERN.fullmatch(name):
        raise invalid(
            ("body", "name"),
            "name must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit",
        )
    try:
        check_storable(description)
    except ValueError as exc:
        raise invalid(("body", "description"), str(exc)) from exc
    if kind != "text":
        raise invalid(("body", "kind"), "only kind 'text' can be uploaded for now")
    builtin_names = RESERVED_NAMES | {d.name for d in _builtin(settings)}
    if name in builtin_names:
        raise HTTPException(status_code=409, detail=f"{name!r} is the name of a built-in dataset")

    limit = settings.max_upload_bytes
    raw = bytearray()
    while chunk := file.file.read(CHUNK):
        raw += chunk
        if len(raw) > limit:
            raise HTTPException(
                status_code=413, detail=f"the file is larger than the upload limit of {limit} bytes"
            )
    try:
        text = validate_text_upload(bytes(raw))
    except ValueError as exc:
        raise invalid(("body", "file"), str(exc)) from exc
    nul = raw.find(b"\x00")
    if nul != -1:
        # Valid UTF-8, but no text column of Postgres can hold it (the sampled texts of a
        # model trained on it would not store): refuse it here, where the user can fix it.
        raise invalid(("body", "file"),
                      f"the text contains a NUL byte (0x00) at byte offset {nul}; "
                      "remove NUL bytes and upload it again")

    try:
        record = store.add_dataset(
            name=name, kind="text", data=text.encode("utf-8"), description=description,
            owner=principal.owner,
        )
    except Conflict as exc:
        raise HTTPException(status_code=409, detail=f"a dataset named {name!r} exists") from exc
    return _uploaded_out(record)

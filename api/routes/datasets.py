"""/datasets: the built-in datasets found on this machine plus text uploaded by users."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from api.deps import PrincipalDep, SettingsDep, StoreDep
from api.errors import (
    DATASET_NAME_TAKEN,
    UNPARSABLE_BODY,
    UPLOAD_TOO_LARGE,
    conflict,
    invalid,
    too_large,
)
from api.schemas import DatasetOut, check_storable
from api.services.datasets import NAME_PATTERN, available_datasets, is_builtin_name
from db.store import Conflict
from models.data import validate_text_upload

router = APIRouter(prefix="/datasets", tags=["datasets"])

CHUNK = 1024 * 1024


@router.get("", response_model=list[DatasetOut], summary="Datasets jobs can train on")
def list_datasets(settings: SettingsDep, store: StoreDep,
                  principal: PrincipalDep) -> list[DatasetOut]:
    return available_datasets(settings, store, principal.owner_filter)


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    responses={**UNPARSABLE_BODY, **DATASET_NAME_TAKEN, **UPLOAD_TOO_LARGE},
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
    if is_builtin_name(name, settings):
        raise conflict(f"{name!r} is the name of a built-in dataset")

    limit = settings.max_upload_bytes
    raw = bytearray()
    while chunk := file.file.read(CHUNK):
        raw += chunk
        if len(raw) > limit:
            raise too_large(f"the file is larger than the upload limit of {limit} bytes")
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
        raise conflict(f"a dataset named {name!r} exists") from exc
    return DatasetOut.from_upload(record)

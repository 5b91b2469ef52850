"""/datasets: the built-in datasets found on this machine plus the versions of users' uploads
(images or text), prepared once at upload (ingest/) and stored in chunks (db/store/datasets.py).

Another user's upload is answered as one that does not exist (404), everywhere. An admin may
name the owner (`?owner=`) to look at, or delete, someone else's."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from api.deps import PrincipalDep, SettingsDep, StoreDep
from api.errors import (
    UNPARSABLE_BODY,
    UPLOAD_TOO_LARGE,
    answer,
    conflict,
    invalid,
    not_found,
    too_large,
)
from api.schemas import (
    DatasetDetail,
    DatasetOut,
    DatasetSamples,
    DatasetVersionOut,
    check_storable,
)
from api.security import Principal
from api.services.datasets import (
    NAME_PATTERN,
    available_datasets,
    builtin,
    image_samples,
    is_builtin_name,
)
from core.settings import Settings
from db.store import Conflict, DatasetQuotaExceeded, DatasetRecord, NotFound, Store
from ingest import IngestError, IngestLimits, ingest

log = logging.getLogger(__name__)

router = APIRouter(prefix="/datasets", tags=["datasets"])

COPY_CHUNK = 1024 * 1024
DATASET_NOT_FOUND = answer(404, "No such dataset or version (or it is another user's).")
QUOTA_ENV = "TRAINYARD_DATASET_QUOTA_BYTES"
OwnerQuery = Annotated[str | None, Query(
    max_length=100, description="Admins: whose upload (default: the caller's).")]


def _owner(principal: Principal, owner: str | None) -> str:
    """Whose uploads the request is about: the caller's, or for an admin the one named. A
    user naming another owner is answered as for a dataset that does not exist."""
    if owner is None or owner == principal.owner or principal.is_admin:
        return owner or principal.owner
    raise not_found("dataset not found")


def _version_or_404(store: Store, name: str, owner: str, version: int) -> DatasetRecord:
    record = store.get_dataset(name, owner, version) if NAME_PATTERN.fullmatch(name) else None
    if record is None:
        raise not_found(f"dataset {name}@{version} not found")
    return record


def ingest_limits(settings: Settings) -> IngestLimits:
    return IngestLimits(max_members=settings.ingest_max_members,
                        max_total_uncompressed_bytes=settings.ingest_max_uncompressed_bytes,
                        max_ratio=settings.ingest_max_ratio,
                        max_image_pixels=settings.max_image_pixels)


@router.get("", response_model=list[DatasetOut], summary="Datasets jobs can train on")
def list_datasets(settings: SettingsDep, store: StoreDep,
                  principal: PrincipalDep) -> list[DatasetOut]:
    """The built-in datasets and every version of the caller's uploads (an admin's: everyone's)."""
    return available_datasets(settings, store, principal.owner_filter)


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    responses={**UNPARSABLE_BODY, **answer(409, "The name is a built-in dataset's."),
               **UPLOAD_TOO_LARGE, **answer(413, f"Over the upload limit, or over the "
                                                 f"user's dataset quota ({QUOTA_ENV}).")},
    summary="Upload a dataset (images or text): the name's next version",
)
def upload_dataset(
    settings: SettingsDep,
    store: StoreDep,
    principal: PrincipalDep,
    name: Annotated[
        str, Form(description="^[a-z0-9][a-z0-9_-]{0,63}$", examples=["shakespeare-small"])
    ],
    file: Annotated[UploadFile, File(description=(
        "Images: a zip or tar of class folders (train/ and val/ optional), MNIST IDX files, "
        "CIFAR-10's binary batches, or an .npz (x, y); text: UTF-8 text or an archive of "
        ".txt files."))],
    kind: Annotated[str | None, Form(description="images or text; detected when omitted.")]
    = None,
    channels: Annotated[int | None, Form(ge=1, le=4)] = None,
    height: Annotated[int | None, Form(ge=1, le=4096)] = None,
    width: Annotated[int | None, Form(ge=1, le=4096)] = None,
    description: Annotated[str, Form(max_length=500)] = "",
) -> DatasetOut:
    # A sync route: FastAPI runs it in its threadpool, so the CPU-heavy ingest does not hold
    # up the event loop.
    if not NAME_PATTERN.fullmatch(name):
        raise invalid(
            ("body", "name"),
            "name must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit",
        )
    try:
        check_storable(description)
    except ValueError as exc:
        raise invalid(("body", "description"), str(exc)) from exc
    if kind not in (None, "", "images", "text"):
        raise invalid(("body", "kind"), "kind must be images or text (or omitted: detected)")
    if is_builtin_name(name, settings):
        raise conflict(f"{name!r} is the name of a built-in dataset")

    scratch = settings.home / "uploads"
    scratch.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="upload-", dir=scratch))
    try:
        source = _copy_upload(file, workdir, settings.max_upload_bytes)
        try:
            ingested = ingest(source, file.filename or "upload", kind=kind or None,
                              channels=channels, height=height, width=width,
                              limits=ingest_limits(settings), workdir=workdir)
        except IngestError as exc:
            raise invalid(("body", exc.field), exc.message) from exc
        source.unlink()  # the prepared file is what is kept: free the disk early
        with open(ingested.path, "rb") as prepared:
            record = store.add_dataset_version(
                principal.owner, name, ingested.kind, prepared, ingested.size,
                ingested.sha256, ingested.summary, description,
                quota_bytes=settings.dataset_quota_bytes)
    except DatasetQuotaExceeded as exc:
        raise too_large(
            f"storing {exc.adding} more bytes would exceed your dataset quota of {exc.limit} "
            f"bytes ({QUOTA_ENV}); you store {exc.stored} bytes: delete versions you no "
            "longer need (DELETE /datasets/{name}/versions/{v})") from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log.info("dataset %s stored by %s: %s, %s bytes", record.ref, record.owner, record.kind,
             record.size)
    return DatasetOut.from_upload(record)


def _copy_upload(file: UploadFile, workdir: Path, limit: int) -> Path:
    """The upload as a file of its own (Starlette spools it to an unnamed temporary file past
    1 MB; ingest reads a path), copied a chunk at a time and cut off past `limit`."""
    path = workdir / "upload"
    copied = 0
    with open(path, "wb") as out:
        while chunk := file.file.read(COPY_CHUNK):
            copied += len(chunk)
            if copied > limit:
                raise too_large(f"the file is larger than the upload limit of {limit} bytes")
            out.write(chunk)
    return path


@router.get("/{name}", response_model=DatasetDetail, responses={**DATASET_NOT_FOUND},
            summary="A dataset: its versions, each with the jobs that used it")
def get_dataset(name: str, settings: SettingsDep, store: StoreDep, principal: PrincipalDep,
                owner: OwnerQuery = None) -> DatasetDetail:
    for found in builtin(settings):
        if found.name == name:
            return DatasetDetail(name=name, kind=found.kind, source="builtin", builtin=found)
    who = _owner(principal, owner)
    records = store.list_datasets(who, name) if NAME_PATTERN.fullmatch(name) else []
    if not records:
        raise not_found(f"dataset {name} not found")
    versions = [DatasetVersionOut(**DatasetOut.from_upload(r).model_dump(),
                                  jobs=store.jobs_using_dataset(who, name, r.version))
                for r in records]
    return DatasetDetail(name=name, kind=records[-1].kind, source="uploaded", owner=who,
                         versions=versions)


@router.get("/{name}/versions/{version}/samples", response_model=DatasetSamples,
            responses={**DATASET_NOT_FOUND},
            summary="A look inside a version: images of each class, or the text's start")
def dataset_samples(
    name: str, version: int, store: StoreDep, principal: PrincipalDep,
    per_class: Annotated[int, Query(ge=1, le=32)] = 8, owner: OwnerQuery = None,
) -> DatasetSamples:
    record = _version_or_404(store, name, _owner(principal, owner), version)
    summary = record.summary or {}
    if record.kind == "text":
        vocab = summary.get("vocab")
        return DatasetSamples(ref=record.ref, kind="text", sample=summary.get("sample", ""),
                              vocab=vocab if isinstance(vocab, dict) else None)
    return DatasetSamples(ref=record.ref, kind="images",
                          classes=image_samples(store, record, per_class))


@router.delete("/{name}/versions/{version}", status_code=204,
               responses={**DATASET_NOT_FOUND,
                          **answer(409, "Jobs used this version (their ids are named); an "
                                        "admin may force.")},
               summary="Delete a version of an upload")
def delete_dataset_version(
    name: str, version: int, store: StoreDep, principal: PrincipalDep,
    force: Annotated[bool, Query(description="Admins: delete even though jobs used it (they "
                                             "keep their dataset_version and sha256); "
                                             "ignored for other users.")] = False,
    owner: OwnerQuery = None,
) -> Response:
    who = _owner(principal, owner)
    _version_or_404(store, name, who, version)
    force = force and principal.is_admin  # a user's force is ignored: the 409 says who may
    try:
        store.delete_dataset_version(who, name, version, force=force)
    except NotFound as exc:  # deleted meanwhile
        raise not_found(f"dataset {name}@{version} not found") from exc
    except Conflict as exc:
        raise conflict(f"{exc}; delete or keep those jobs first (an admin may force: "
                       "?force=true)") from exc
    log.info("dataset %s@%s of %s deleted by %s%s", name, version, who, principal.owner,
             " (forced)" if force else "")
    return Response(status_code=204)

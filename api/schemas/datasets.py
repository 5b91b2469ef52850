"""Datasets: the built-in ones and the versions of users' uploads (GET/POST /datasets,
GET /datasets/{name}, its samples)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, Field

from api.schemas.common import DatasetKind
from db.store import DatasetRecord


class DatasetOut(BaseModel):
    name: str
    kind: DatasetKind
    source: Literal["builtin", "uploaded"]
    size_bytes: int | None = Field(
        default=None, description="Uploads: bytes of the stored (prepared) file, what the "
        "quota counts.")
    examples: int | None = None
    description: str = ""
    owner: str | None = Field(
        default=None, description="Who uploaded it (uploads only); jobs train on their own user's."
    )
    version: int | None = Field(
        default=None, description="Uploads: 1 for the first upload of the name, one more for "
        "each later one; null for built-in datasets.")
    ref: str = Field(description="How a job names exactly this: `name@2` for an upload's "
                     "version, the name for a built-in dataset.")
    sha256: str | None = Field(
        default=None, description="Uploads: SHA-256 of the stored file, what jobs record.")
    summary: dict[str, Any] | None = Field(
        default=None, description="Uploads: what it holds (images: format, channels, height, "
        "width, classes with their counts; text: characters, vocabulary sizes, a sample).")
    created_at: datetime | None = None

    @classmethod
    def from_builtin(cls, info: dict[str, Any]) -> Self:
        """A built-in dataset, from what models.data.builtin_datasets says of it."""
        return cls(name=info["name"], kind=info["kind"], source="builtin",
                   size_bytes=info.get("size_bytes"), examples=info.get("examples"),
                   description=info.get("description", ""), ref=info["name"])

    @classmethod
    def from_upload(cls, record: DatasetRecord) -> Self:
        summary = record.summary or {}
        examples = summary.get("examples")
        return cls(name=record.name, kind=record.kind, source="uploaded",
                   size_bytes=record.size, description=record.description or "",
                   owner=record.owner, version=record.version, ref=record.ref,
                   sha256=record.sha256, summary=summary, created_at=record.created_at,
                   examples=examples if isinstance(examples, int) else None)


class DatasetVersionOut(DatasetOut):
    jobs: list[int] = Field(default_factory=list, description=(
        "Ids of the owner's jobs that trained (or will train) on this version: while any "
        "is listed, DELETE refuses without an admin's force."))


class DatasetDetail(BaseModel):
    """GET /datasets/{name}: a built-in dataset (no versions), or every version of an upload,
    oldest first."""

    name: str
    kind: DatasetKind
    source: Literal["builtin", "uploaded"]
    owner: str | None = None
    builtin: DatasetOut | None = None
    versions: list[DatasetVersionOut] = Field(default_factory=list)


class ClassSamples(BaseModel):
    name: str
    label: int
    count: int = Field(description="Examples of this class in the whole dataset.")
    images: list[list[list[list[float]]]] = Field(
        description="Up to per_class images, each C x H x W floats in [0, 1].")


class DatasetSamples(BaseModel):
    """GET /datasets/{name}/versions/{v}/samples: a look at what a version holds."""

    ref: str
    kind: DatasetKind
    classes: list[ClassSamples] | None = Field(
        default=None, description="Images: the first per_class images of each class.")
    sample: str | None = Field(default=None, description="Text: its first characters.")
    vocab: dict[str, int] | None = Field(
        default=None, description='Text: vocabulary sizes, {"char": n, "word": n}.')

"""Turning an uploaded dataset file into the prepared file jobs train from, plus a summary.

    ingest(source, filename, kind=None, channels=None, height=None, width=None,
           limits=IngestLimits(), workdir=...) -> Ingested

The format is recognised by content (magic bytes), not by the file's name:
- images: a zip or tar(.gz) of class folders (ingest/images.py), of MNIST-format IDX files or
  CIFAR-10 binary batches, or a NumPy .npz (ingest/arrays.py) -> a "trainyard-images-v1" file
  (models/prepared.py);
- text: a UTF-8 text file (gzip'd or not), or a zip/tar of .txt files (ingest/text.py) -> the
  checked text as a UTF-8 file.
Every refusal is an IngestError(field, message) whose message names the upload and the member
at fault; on any failure nothing is left in `workdir`. Archives are checked before anything is
decompressed for use (ingest/archives.py) and read member by member: an upload is never held
whole in memory, nor its decoded images.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from ingest.archives import Archive, gunzip_to, sniff
from ingest.arrays import ingest_cifar, ingest_idx, ingest_npz, is_cifar, is_idx, is_npz, keep_small
from ingest.images import Shape, ingest_imagefolder, is_image_name
from ingest.limits import Ingested, IngestError, IngestLimits
from ingest.text import ingest_text_archive, ingest_text_file

__all__ = ["IngestError", "IngestLimits", "Ingested", "ingest"]

_KEEP_MAX = 16 << 20  # labels of a million IDX examples, with room
_LONE_FILES = {  # first bytes of single files that are data but not a whole dataset
    b"\x89PNG": "a single PNG image", b"\xff\xd8\xff": "a single JPEG image",
    b"\x93NUMPY": "a single .npy array (save x and y together with numpy.savez)",
    b"\x00\x00\x08\x01": "a single IDX file", b"\x00\x00\x08\x03": "a single IDX file",
}


def ingest(source: Path, filename: str, *, kind: str | None = None,
           channels: int | None = None, height: int | None = None, width: int | None = None,
           limits: IngestLimits, workdir: Path) -> Ingested:
    """The upload at `source` (named `filename` by the user) prepared in `workdir`."""
    where = Path(str(filename).replace("\\", "/")).name or "the upload"
    shape = _check_options(kind, channels, height, width, limits)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".ingest-", dir=workdir))
    try:
        out_kind, produced, summary = _prepare(Path(source), where, kind, shape, limits,
                                               scratch)
        fd, final = tempfile.mkstemp(prefix="ingested-",
                                     suffix=".tyimg" if out_kind == "images" else ".txt",
                                     dir=workdir)
        os.close(fd)
        try:
            os.replace(produced, final)
        except BaseException:
            os.unlink(final)
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    final = Path(final)
    digest = hashlib.sha256()
    with open(final, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return Ingested(out_kind, final, final.stat().st_size, digest.hexdigest(), summary)


def _check_options(kind, channels, height, width, limits: IngestLimits) -> Shape:
    if kind not in (None, "images", "text"):
        raise IngestError("kind", f"kind must be 'images' or 'text' (or left out to detect "
                          f"it), not {kind!r}")
    if kind == "text":
        for name, value in (("channels", channels), ("height", height), ("width", width)):
            if value is not None:
                raise IngestError(name, f"{name} applies to image datasets, not text")
    if channels not in (None, 1, 3):
        raise IngestError("channels", f"channels must be 1 (grey) or 3 (RGB), not {channels!r}")
    if (height is None) != (width is None):
        missing = "width" if width is None else "height"
        raise IngestError(missing, f"{missing} is needed too: declare both height and width, "
                          "or neither (the most common size is then used)")
    for name, value in (("height", height), ("width", width)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise IngestError(name, f"{name} must be a positive whole number of pixels")
    if height is not None and height * width > limits.max_image_pixels:
        raise IngestError("height", f"{height} x {width} is over the limit of "
                          f"{limits.max_image_pixels:,} pixels per image")
    return Shape(channels, height, width)


def _want(kind: str | None, found: str, where: str, what: str) -> None:
    if kind is not None and kind != found:
        raise IngestError("kind", f"kind is '{kind}', but {where} is {what}")


def _prepare(source: Path, where: str, kind: str | None, shape: Shape, limits: IngestLimits,
             scratch: Path) -> tuple[str, Path, dict]:
    container = sniff(source)
    if container == "gzip":  # one gzip'd file: what is inside decides
        inner = scratch / "gunzipped"
        gunzip_to(source, inner, where, limits)
        source, container = inner, sniff(inner)
        if container in ("gzip", "tar.gz"):
            raise IngestError("file", f"{where}: is compressed twice; compress it once")
    if container in ("bzip2", "xz"):
        raise IngestError("file", f"{where}: is compressed with {container}; use zip, tar or "
                          "tar.gz")
    img_out, text_out = scratch / "prepared.tyimg", scratch / "prepared.txt"
    if container == "plain":
        with open(source, "rb") as fh:
            head = fh.read(8)
        lone = next((what for magic, what in _LONE_FILES.items() if head.startswith(magic)),
                    None)
        if lone:
            raise IngestError("file", f"{where}: is {lone}; upload a whole dataset as one zip "
                              "or tar archive (class folders, IDX files, CIFAR-10 batches) or "
                              "an .npz")
        _want(kind, "text", where, "text")
        return "text", text_out, ingest_text_file(source, where, limits, text_out)

    archive = Archive(source, container, where, limits)
    members, kept = archive.members(keep=keep_small, keep_max=_KEEP_MAX)
    files = [m for m in members if not m.is_dir]
    if container == "zip" and is_npz(members):
        _want(kind, "images", where, "a NumPy .npz (images)")
        return "images", img_out, ingest_npz(source, where, shape, limits, img_out)
    if is_idx(members):
        _want(kind, "images", where, "an archive of IDX files (images)")
        return "images", img_out, ingest_idx(archive, members, kept, shape, limits, img_out)
    if is_cifar(members):
        _want(kind, "images", where, "an archive of CIFAR-10 batches (images)")
        return "images", img_out, ingest_cifar(archive, members, kept, shape, limits, img_out)
    if any(is_image_name(m.name) for m in files):
        _want(kind, "images", where, "an image archive")
        return "images", img_out, ingest_imagefolder(archive, members, shape, limits, img_out)
    if any(m.name.lower().endswith(".txt") for m in files):
        _want(kind, "text", where, "an archive of .txt files")
        return "text", text_out, ingest_text_archive(archive, members, limits, text_out)
    if not files:
        raise IngestError("file", f"{where}: has no files (hidden files are skipped)")
    raise IngestError("file", f"{where}: has nothing usable (such as {files[0].name}): "
                      "expected images in class folders, IDX files, CIFAR-10 batches, .npy "
                      "arrays or .txt files")

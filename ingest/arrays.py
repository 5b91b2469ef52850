"""Datasets stored as arrays rather than image files: MNIST-format IDX files, CIFAR-10 binary
batches (both as one zip or tar), and NumPy .npz files.

Their images already share one shape; a declared (channels, height, width) converts them with
the same rules as image files (ingest/images.py). IDX members and .npz arrays are read whole
(MNIST's 60,000 training images are 47 MB: acceptable), one member at a time; CIFAR-10
batches are streamed 1,000 records at a time.
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ingest.archives import Archive, Member, gunzip_member
from ingest.images import Shape, check_declared_size, fit_array, image_summary, most_common_note
from ingest.limits import IngestError, IngestLimits

CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_CHUNK = 1000
_CIFAR_TRAIN_RE = re.compile(r"data_batch_\d+\.bin")


def _basename(m: Member) -> str:
    return m.parts[-1].lower()


def _target(native: tuple[int, int, int], shape: Shape, n: int) -> tuple[tuple, str]:
    c = shape.channels or native[0]
    h, w = (shape.height, shape.width) if shape.height else native[1:]
    if shape.channels and shape.height:
        return (c, h, w), "declared"
    return (c, h, w), most_common_note(Counter({(c, h, w): n}), (c, h, w))


def _write(out: Path, target: tuple, classes: list[str], where: str,
           batches: Iterable[tuple[str, np.ndarray, np.ndarray, str]]) -> dict[str, Counter]:
    """Writes (split, x uint8 (n, C, H, W), y (n,), source name) batches; labels checked
    against the classes, and every class must have a training example."""
    from models.prepared import PreparedWriter

    writer = PreparedWriter(out, *target, classes)
    counts = {"train": Counter(), "val": Counter()}
    try:
        for split, x, y, source in batches:
            bad = (y < 0) | (y >= len(classes))
            if bad.any():
                raise IngestError("file", f"{where}: {source} has label {int(y[bad][0])}, "
                                  f"outside 0..{len(classes) - 1}")
            for pixels, label in zip(x, y.tolist()):
                writer.add(split, fit_array(pixels, *target), label)
            counts[split].update(y.tolist())
        missing = [name for i, name in enumerate(classes) if not counts["train"][i]]
        if missing:
            raise IngestError("file", f"{where}: class '{missing[0]}' has no training example")
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return counts


def _classes_from_labels(y: np.ndarray, source: str, where: str,
                         limits: IngestLimits) -> list[str]:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= limits.max_classes):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise IngestError("file", f"{where}: {source} has label {bad}, outside "
                          f"0..{limits.max_classes - 1}")
    k = int(y.max()) + 1 if len(y) else 0
    if k < 2:
        raise IngestError("file", f"{where}: {source} has fewer than two classes")
    return [str(i) for i in range(k)]


# ---------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)


def _idx_role(m: Member) -> tuple[str, str] | None:
    """(split, "images"|"labels") of an IDX member by its name, as MNIST names them."""
    name = _basename(m)
    if "idx" not in name:
        return None
    split = "train" if name.startswith("train") else \
        "val" if name.startswith(("t10k", "test")) else None
    kind = "images" if ("idx3" in name or "images" in name) else \
        "labels" if ("idx1" in name or "labels" in name) else None
    return (split, kind) if split and kind else None


def is_idx(members: list[Member]) -> bool:
    return any(not m.is_dir and _idx_role(m) for m in members)


def _parse_idx(data: bytes, label: str, ndim: int) -> np.ndarray:
    if len(data) < 4 or data[0] or data[1]:
        raise IngestError("file", f"{label} is not an IDX file (bad magic number)")
    if data[2] != 0x08 or data[3] != ndim:
        raise IngestError("file", f"{label} is an IDX file of type 0x{data[2]:02x} with "
                          f"{data[3]} dimensions; expected unsigned bytes with {ndim}")
    head = 4 + 4 * ndim
    if len(data) < head:
        raise IngestError("file", f"{label} is cut short in its header")
    shape = struct.unpack(f">{ndim}I", data[4:head])
    if len(data) - head != int(np.prod(shape)):
        raise IngestError("file", f"{label} should hold {int(np.prod(shape)):,} bytes for "
                          f"shape {shape}, holds {len(data) - head:,}")
    return np.frombuffer(data, np.uint8, offset=head).reshape(shape)


def ingest_idx(archive: Archive, members: list[Member], kept: dict[str, bytes], shape: Shape,
               limits: IngestLimits, out: Path) -> dict:
    where = archive.where
    roles: dict[tuple[str, str], Member] = {}
    for m in members:
        role = None if m.is_dir else _idx_role(m)
        if role:
            if role in roles:
                raise IngestError("file", f"{where}: {roles[role].name} and {m.name} are both "
                                  f"{role[0]} {role[1]} files")
            roles[role] = m
    for split in ("train", "val"):
        im, lb = roles.get((split, "images")), roles.get((split, "labels"))
        if (im is None) != (lb is None) or (split == "train" and im is None):
            have = im or lb
            need = "labels" if lb is None else "images"
            raise IngestError("file", f"{where}: has {have.name if have else 'no train files'}"
                              f" but no {'test' if split == 'val' else 'train'} {need} file")

    def labels(split: str) -> tuple[np.ndarray, str]:
        m = roles[(split, "labels")]
        if m.name not in kept:
            raise IngestError("file", f"{where}: {m.name} is too large for a labels file")
        data = kept[m.name]
        if m.name.lower().endswith(".gz"):
            data = gunzip_member(data, archive.label(m), limits)
        return _parse_idx(data, archive.label(m), 1).astype(np.int64), m.name

    y_train, ytr_name = labels("train")
    classes = _classes_from_labels(y_train, ytr_name, where, limits)
    ys = {"train": (y_train, ytr_name)}
    if ("val", "labels") in roles:
        ys["val"] = labels("val")
    n = sum(len(y) for y, _ in ys.values())
    image_members = {roles[(s, "images")].name: s for s in ys}
    native: list[tuple] = []

    def batches():
        for m, fh in archive.files(lambda m: m.name in image_members):
            split = image_members[m.name]
            data = fh.read()
            if m.name.lower().endswith(".gz"):
                data = gunzip_member(data, archive.label(m), limits)
            x = _parse_idx(data, archive.label(m), 3)
            y, y_name = ys[split]
            if len(x) != len(y):
                raise IngestError("file", f"{where}: {m.name} has {len(x)} images, {y_name} "
                                  f"{len(y)} labels")
            if x.shape[1] * x.shape[2] > limits.max_image_pixels:
                raise IngestError("file", f"{where}: {m.name} has images of {x.shape[1]} x "
                                  f"{x.shape[2]} pixels; at most {limits.max_image_pixels:,}")
            if native and native[0] != (1, *x.shape[1:]):
                raise IngestError("file", f"{where}: {m.name} has images of "
                                  f"{x.shape[1]} x {x.shape[2]}, unlike the other IDX file")
            native.append((1, *x.shape[1:]))
            yield split, x[:, None], y, y_name

    # the target shape needs the images' header: peek through the first batch
    gen = batches()
    first = next(gen, None)
    if first is None:
        raise IngestError("file", f"{where}: its IDX image files could not be read")
    target, note = _target(native[0], shape, n)
    check_declared_size(n, *target, where, limits)

    def all_batches():
        yield first
        yield from gen

    counts = _write(out, target, classes, where, all_batches())
    return image_summary("idx", target, classes, counts, note,
                         "from the archive's t10k (test) files")


# ---------------------------------------------------------------------------------------------
# CIFAR-10 binary batches


def is_cifar(members: list[Member]) -> bool:
    return any(not m.is_dir and (_CIFAR_TRAIN_RE.fullmatch(_basename(m)) or
                                 _basename(m) == "test_batch.bin") for m in members)


def _cifar_meta(m: Member) -> bool:
    return _basename(m) == "batches.meta.txt"


def ingest_cifar(archive: Archive, members: list[Member], kept: dict[str, bytes], shape: Shape,
                 limits: IngestLimits, out: Path) -> dict:
    where = archive.where
    batches_ = {}
    for m in members:
        if m.is_dir:
            continue
        name = _basename(m)
        split = "train" if _CIFAR_TRAIN_RE.fullmatch(name) else \
            "val" if name == "test_batch.bin" else None
        if split:
            if not m.size or m.size % CIFAR_RECORD:
                raise IngestError("file", f"{where}: {m.name} is {m.size:,} bytes, not a whole "
                                  f"number of {CIFAR_RECORD:,}-byte records (one label byte and "
                                  "3,072 pixel bytes)")
            batches_[m.name] = split
    if "train" not in batches_.values():
        raise IngestError("file", f"{where}: has test_batch.bin but no data_batch_*.bin")
    classes = [str(i) for i in range(10)]
    meta = [m for m in members if not m.is_dir and _cifar_meta(m) and m.name in kept]
    if meta:
        try:
            names = [ln.strip() for ln in kept[meta[0].name].decode("utf-8").splitlines()]
        except UnicodeDecodeError:
            raise IngestError("file", f"{where}: {meta[0].name} is not UTF-8 text") from None
        names = [n for n in names if n]
        if len(names) < 2 or len(set(names)) != len(names):
            raise IngestError("file", f"{where}: {meta[0].name} should name at least two "
                              "distinct classes, one a line")
        classes = names
    n = sum(m.size // CIFAR_RECORD for m in members if m.name in batches_)
    target, note = _target((3, 32, 32), shape, n)
    check_declared_size(n, *target, where, limits)

    def batches():
        for m, fh in archive.files(lambda m: m.name in batches_):
            while chunk := fh.read(CIFAR_RECORD * _CIFAR_CHUNK):
                if len(chunk) % CIFAR_RECORD:
                    raise IngestError("file", f"{where}: {m.name} ends in a partial record")
                rec = np.frombuffer(chunk, np.uint8).reshape(-1, CIFAR_RECORD)
                yield (batches_[m.name], rec[:, 1:].reshape(-1, 3, 32, 32),
                       rec[:, 0].astype(np.int64), m.name)

    counts = _write(out, target, classes, where, batches())
    return image_summary("cifar10", target, classes, counts, note,
                         "from the archive's test_batch.bin")


# ---------------------------------------------------------------------------------------------
# NumPy .npz


def is_npz(members: list[Member]) -> bool:
    files = [m for m in members if not m.is_dir]
    return bool(files) and all(m.name.endswith(".npy") for m in files)


def _npz_images(x: np.ndarray, name: str, where: str) -> np.ndarray:
    """x as uint8 (N, C, H, W): uint8 kept, other integers in 0..255 kept, floats in [0, 1]
    scaled by 255 and rounded."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # N x H x W x C, as many libraries store images
    elif x.ndim != 4 or x.shape[1] not in (1, 3):
        raise IngestError("file", f"{where}: '{name}' has shape {x.shape}; expected N x H x W "
                          "or N x C x H x W with C 1 or 3")
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind in "iub":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise IngestError("file", f"{where}: '{name}' has values outside 0..255")
        return x.astype(np.uint8)
    if x.dtype.kind == "f":
        if x.size and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            raise IngestError("file", f"{where}: '{name}' is {x.dtype} with values outside "
                              "[0, 1]; floats must be in [0, 1] (or store uint8 0-255)")
        return np.rint(x * 255.0).astype(np.uint8)
    raise IngestError("file", f"{where}: '{name}' is of type {x.dtype}; expected uint8 or "
                      "floats in [0, 1]")


def _npz_labels(y: np.ndarray, name: str, n: int, x_name: str, where: str) -> np.ndarray:
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise IngestError("file", f"{where}: '{name}' must be a 1-D array of integer labels "
                          f"(found {y.dtype} of shape {y.shape})")
    if len(y) != n:
        raise IngestError("file", f"{where}: '{x_name}' has {n} images, '{name}' {len(y)} labels")
    return y.astype(np.int64)


def ingest_npz(path: Path, where: str, shape: Shape, limits: IngestLimits, out: Path) -> dict:
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - zipfile, numpy and OS errors all mean "unreadable"
        raise IngestError("file", f"{where}: is not a readable .npz file ({exc})") from None
    with npz:
        keys = set(npz.files)

        def get(key: str) -> np.ndarray:
            try:
                return npz[key]
            except ValueError:  # an object array: would need pickle, which is refused
                raise IngestError("file", f"{where}: '{key}' is an object array; save it "
                                  "as numbers (or strings, for classes)") from None
            except Exception as exc:  # noqa: BLE001 - a damaged member, whatever the cause
                raise IngestError("file", f"{where}: '{key}' cannot be read ({exc})") from None

        for key in ("x", "y"):
            if key not in keys:
                raise IngestError("file", f"{where}: has no '{key}' array (found: "
                                  f"{', '.join(sorted(keys)) or 'nothing'})")
        if ("x_val" in keys) != ("y_val" in keys):
            raise IngestError("file", f"{where}: has one of 'x_val' and 'y_val' without the "
                              "other")
        x = _npz_images(get("x"), "x", where)
        y = _npz_labels(get("y"), "y", len(x), "x", where)
        parts = [("train", x, y, "'y'")]
        if "x_val" in keys:
            xv = _npz_images(get("x_val"), "x_val", where)
            parts.append(("val", xv, _npz_labels(get("y_val"), "y_val", len(xv), "x_val",
                                                 where), "'y_val'"))
        if "classes" in keys:
            names = get("classes")
            if names.ndim != 1 or names.dtype.kind not in "US":
                raise IngestError("file", f"{where}: 'classes' must be a 1-D array of strings")
            classes = [str(s.decode("utf-8") if isinstance(s, bytes) else s) for s in names]
            if len(classes) < 2 or len(set(classes)) != len(classes):
                raise IngestError("file", f"{where}: 'classes' must name at least two "
                                  "distinct classes")
        else:
            classes = _classes_from_labels(y, "'y'", where, limits)
    n = sum(len(p[1]) for p in parts)
    if x.shape[2] * x.shape[3] > limits.max_image_pixels:
        raise IngestError("file", f"{where}: images of {x.shape[2]} x {x.shape[3]} pixels; at "
                          f"most {limits.max_image_pixels:,}")
    target, note = _target(x.shape[1:], shape, n)
    check_declared_size(n, *target, where, limits)
    counts = _write(out, target, classes, where, parts)
    return image_summary("npz", target, classes, counts, note,
                         "from the file's x_val and y_val")


def keep_small(m: Member) -> bool:
    """Members read during the listing pass: IDX labels and CIFAR-10's class names (needed
    before any image is written, and a tar.gz is best read once more, not twice)."""
    role = _idx_role(m)
    return (role is not None and role[1] == "labels") or _cifar_meta(m)

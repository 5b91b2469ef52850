"""Image archives in class-folder layout, and the one conversion every image goes through.

Layout: `<class>/<file>.png|jpg|jpeg`, optionally under a single top folder, optionally split
into `train/` and `val/` (or `test/`; `training/`, `testing/`, `validation/` too) top folders.
Classes are the folder names sorted, labels 0..K-1 in that order. Hidden files and folders
(`.DS_Store`, `__MACOSX/`, dot files) are skipped silently; any other file that is not a
.png/.jpg/.jpeg is refused by name.

Conversion, to one (channels, height, width) for the whole dataset, declared by the user or,
when not declared, the most common one found (a first pass reads only image headers):
- channels: grey ("L") or RGB; transparency is flattened onto white first;
- size: resized to height x width with PIL's BOX filter when the image has more pixels than
  the target (each output pixel the mean of those it covers), BILINEAR when it has fewer.
  No padding and no inversion: dataset images are taken as they are (predict-time inputs are
  prepared differently, in api/services/images.py, to look like the dataset).
Images are decoded one at a time and written straight to the prepared file.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ingest.archives import Archive, Member
from ingest.limits import IngestError, IngestLimits, size_text

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
FORMATS = ("PNG", "JPEG")
SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val",
          "validation": "val", "test": "val", "testing": "val"}
_GREY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}


@dataclass(frozen=True)
class Shape:
    """Requested (channels, height, width); None where not declared."""
    channels: int | None = None
    height: int | None = None
    width: int | None = None


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTS)


def shape_words(c: int, h: int, w: int) -> str:
    return f"{h} x {w} {'grey' if c == 1 else 'RGB'}"


# ---------------------------------------------------------------------------------------------
# conversion


def open_image(data: bytes, label: str, max_pixels: int):
    """A PIL image with only its header read; refused when it is not a PNG/JPEG or claims
    more pixels than allowed (checked before any pixel is decoded)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:
        raise IngestError("file", f"{label} is over the pixel limit of {max_pixels:,}") from None
    except Exception:  # noqa: BLE001 - PIL raises many kinds for garbage; all mean the same
        raise IngestError("file", f"{label} does not decode as an image") from None
    w, h = image.size
    if w * h > max_pixels:
        raise IngestError("file", f"{label} is {w} x {h} pixels; at most {max_pixels:,} pixels "
                          "per image are accepted")
    return image


def header_shape(data: bytes, label: str, max_pixels: int,
                 channels: int | None) -> tuple[int, int, int]:
    """(channels, height, width) from an image's header: read straight from a PNG's IHDR
    chunk (the first pass over 60,000 images should not build 60,000 PIL objects), through
    PIL for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 26:
        w, h = struct.unpack(">II", data[16:24])
        if 0 < w and 0 < h and data[25] in _PNG_CHANNELS:
            if w * h > max_pixels:
                raise IngestError("file", f"{label} is {w} x {h} pixels; at most "
                                  f"{max_pixels:,} pixels per image are accepted")
            return channels or _PNG_CHANNELS[data[25]], h, w
    image = open_image(data, label, max_pixels)
    return channels or image_channels(image), image.height, image.width


# PNG colour type -> channels, as image_channels() counts PIL's modes for them
_PNG_CHANNELS = {0: 1, 4: 1, 2: 3, 3: 3, 6: 3}


def image_channels(image) -> int:
    return 1 if image.mode in _GREY_MODES else 3


def to_pixels(image, channels: int, height: int, width: int) -> np.ndarray:
    """A PIL image as uint8 (channels, height, width), by the rules in the module docstring."""
    from PIL import Image

    if (image.mode == ("L" if channels == 1 else "RGB") and image.size == (width, height)
            and "transparency" not in image.info):  # already as wanted: the common case
        arr = np.asarray(image, dtype=np.uint8)
        return arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # 16-bit and float grey: PIL's convert("L") clips them; scale 16-bit to 8 instead
        arr = np.asarray(image, dtype=np.float64)
        arr = arr / 257.0 if image.mode.startswith("I;16") else arr
        image = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        shrinking = width * height < image.width * image.height
        image = image.resize((width, height),
                             Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)
    arr = np.asarray(image, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def fit_array(pixels: np.ndarray, channels: int, height: int, width: int) -> np.ndarray:
    """uint8 (C, H, W) from an array format, converted only when the target differs."""
    if pixels.shape == (channels, height, width):
        return pixels
    from PIL import Image

    image = (Image.fromarray(pixels[0], "L") if pixels.shape[0] == 1
             else Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), "RGB"))
    return to_pixels(image, channels, height, width)


def check_declared_size(n: int, c: int, h: int, w: int, where: str,
                        limits: IngestLimits) -> None:
    total = n * c * h * w
    if total > limits.max_prepared_bytes:
        raise IngestError("file", f"{where}: {n:,} images of {shape_words(c, h, w)} need "
                          f"{size_text(total)}; at most {size_text(limits.max_prepared_bytes)} "
                          "are accepted (declare a smaller size)")


def image_summary(fmt: str, shape: tuple[int, int, int], classes: list[str],
                  counts: dict[str, Counter], size_note: str, val_source: str) -> dict:
    c, h, w = shape
    train, val = sum(counts["train"].values()), sum(counts["val"].values())
    return {
        "format": fmt, "examples": train + val, "channels": c, "height": h, "width": w,
        "size_note": size_note,
        "classes": [{"name": name, "label": i, "train": counts["train"][i],
                     "val": counts["val"][i]} for i, name in enumerate(classes)],
        "train": train, "val": val,
        "validation": val_source if val else "split by each job's seed (20 %)",
    }


def most_common_note(key_counts: Counter, chosen: tuple[int, int, int]) -> str:
    total = sum(key_counts.values())
    return (f"most common ({key_counts[chosen]:,} of {total:,} images): "
            f"{shape_words(*chosen)}")


def pick_shape(key_counts: Counter) -> tuple[int, int, int]:
    """The most common (channels, height, width); a tie goes to the larger image."""
    return max(key_counts, key=lambda k: (key_counts[k], k[0] * k[1] * k[2], k))


# ---------------------------------------------------------------------------------------------
# class-folder layout


@dataclass
class Layout:
    classes: list[str]
    placed: dict[str, tuple[str, int]]  # member name -> (split, label)
    has_val: bool


def plan_layout(members: list[Member], where: str) -> Layout:
    """Which split and class each image belongs to, from the paths alone."""
    files = [m for m in members if not m.is_dir]
    for m in files:
        if not is_image_name(m.name):
            raise IngestError("file", f"{where}: {m.name} is not an image (an image archive "
                              "holds only .png, .jpg or .jpeg files in class folders)")
    strip = 0
    tops = {m.parts[0] for m in members}
    if (len(tops) == 1 and all(len(m.parts) >= 3 for m in files)
            and next(iter(tops)).lower() not in SPLITS):
        strip = 1  # one folder around everything: the archive of a folder
    split_layout = any(len(p) > strip + (0 if m.is_dir else 1) and p[strip].lower() in SPLITS
                       for m in members for p in (m.parts,))
    offset = strip + 1 if split_layout else strip
    train_classes: set[str] = set()
    seen: dict[str, set[str]] = {"train": set(), "val": set()}
    placed: dict[str, tuple[str, str]] = {}
    pair: dict[tuple[str, str], tuple[str, str]] = {}
    for m in members:
        p = m.parts
        if len(p) <= strip:
            continue  # the folder around everything
        split = "train"
        if split_layout:
            if p[strip].lower() not in SPLITS:
                raise IngestError("file", f"{where}: {m.name} is outside the train/ and val/ "
                                  "folders: use either train/ and val/ folders or bare class "
                                  "folders, not a mix")
            split = SPLITS[p[strip].lower()]
        if len(p) <= offset + (0 if m.is_dir else 1):
            if not m.is_dir:
                raise IngestError("file", f"{where}: {m.name} is not in a class folder")
            continue
        cls = p[offset]
        if split == "train":
            train_classes.add(cls)
        if not m.is_dir:
            seen[split].add(cls)
            placed[m.name] = pair.setdefault((split, cls), (split, cls))
    if split_layout and not seen["train"]:
        raise IngestError("file", f"{where}: has a val/ folder but no train/ images")
    extra = sorted(seen["val"] - train_classes)
    if extra:
        raise IngestError("file", f"{where}: val/ has class '{extra[0]}' that train/ lacks "
                          "(every validation class must be a training class)")
    empty = sorted(train_classes - seen["train"])
    if empty:
        raise IngestError("file", f"{where}: class '{empty[0]}' has no image")
    classes = sorted(train_classes)
    if len(classes) < 2:
        found = f"one class ('{classes[0]}')" if classes else "no class folder"
        raise IngestError("file", f"{where}: found {found}; at least two class folders are "
                          "needed")
    # one shared (split, label) tuple per pair: 60,000 names should not make 60,000 tuples
    pairs = {(s, c): (s, i) for i, c in enumerate(classes) for s in ("train", "val")}
    return Layout(classes, {n: pairs[sc] for n, sc in placed.items()}, bool(seen["val"]))


def ingest_imagefolder(archive: Archive, members: list[Member], shape: Shape,
                       limits: IngestLimits, out: Path) -> dict:
    from models.prepared import PreparedWriter

    layout = plan_layout(members, archive.where)
    wanted = lambda m: m.name in layout.placed
    c, h, w = shape.channels, shape.height, shape.width
    if c is None or h is None:  # a first pass over headers only: the most common shape
        keys: Counter = Counter()
        for m, fh in archive.files(wanted):
            hc, hh, hw = header_shape(fh.read(), archive.label(m), limits.max_image_pixels, c)
            keys[(hc, h or hh, w or hw)] += 1
        c, h, w = pick_shape(keys)
        note = most_common_note(keys, (c, h, w))
    else:
        note = "declared"
    check_declared_size(len(layout.placed), c, h, w, archive.where, limits)
    writer = PreparedWriter(out, c, h, w, layout.classes)
    counts = {"train": Counter(), "val": Counter()}
    try:
        for m, fh in archive.files(wanted):
            split, label = layout.placed[m.name]
            image = open_image(fh.read(), archive.label(m), limits.max_image_pixels)
            try:
                image.load()
                pixels = to_pixels(image, c, h, w)
            except Exception:  # noqa: BLE001 - truncated or corrupt data: PIL's many kinds
                raise IngestError("file", f"{archive.label(m)} does not decode as an "
                                  "image") from None
            writer.add(split, pixels, label)
            counts[split][label] += 1
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return image_summary("imagefolder", (c, h, w), layout.classes, counts, note,
                         "from the archive's val/ folder")

"""ingest(): every accepted format round-trips, pixel for pixel and label for label, through
the prepared file workers load (models.prepared.load_prepared); text keeps its words.

Every archive is written by the test itself; the image archives hold scikit-learn's digits."""

import gzip
import io
import json
import struct
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingest import IngestLimits, ingest
from models.data import build_vocab, load_image_dataset, tokenize
from models.prepared import load_prepared, read_header

LIMITS = IngestLimits()
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


# ---------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def digits():
    """300 digits as uint8 (N, 8, 8) in 0..255 and their labels (30 of each class)."""
    d = load_image_dataset("digits", seed=0)
    x = np.concatenate([d.x_train.numpy(), d.x_val.numpy()])[:, 0]
    y = np.concatenate([d.y_train.numpy(), d.y_val.numpy()])
    keep = np.concatenate([np.flatnonzero(y == k)[:30] for k in range(10)])
    return np.rint(x[keep] * 255).astype(np.uint8), y[keep]


def png(pixels: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, "PNG")
    return buf.getvalue()


def write_archive(path: Path, files: dict[str, bytes]) -> Path:
    """A zip, tar or tar.gz (by `path`'s suffix) holding `files`, in the order given."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(path, "w:gz" if path.suffix == ".gz" else "w") as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def rows(x: np.ndarray, y: np.ndarray) -> list:
    """Examples as a sorted list of (label, pixel bytes): order-free comparison."""
    return sorted((int(label), img.tobytes()) for img, label in zip(x, y))


def prepared(result) -> dict:
    """The prepared file's header and its examples, uint8 again, per split."""
    with open(result.path, "rb") as fh:
        header, _ = read_header(fh)
    data = load_prepared(result.path)
    to_u8 = lambda t: np.rint(t.numpy() * 255).astype(np.uint8)
    if header.val:
        split = {"train": rows(to_u8(data.x_train), data.y_train.numpy()),
                 "val": rows(to_u8(data.x_val), data.y_val.numpy())}
    else:  # no validation part: the seed split it; join it back
        split = {"train": sorted(rows(to_u8(data.x_train), data.y_train.numpy())
                                 + rows(to_u8(data.x_val), data.y_val.numpy())), "val": []}
    return {"header": header, **split}


def check_common(result, workdir: Path):
    assert result.path.parent == workdir and result.path.is_file()
    assert result.size == result.path.stat().st_size
    import hashlib
    assert result.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()
    json.dumps(result.summary)  # JSON-safe
    assert sorted(p.name for p in workdir.iterdir()) == [result.path.name]  # no temp files


# ---------------------------------------------------------------------------------------------
# class folders


@pytest.mark.parametrize("archive", ["digits.zip", "digits.tar.gz"])
def test_imagefolder_without_split_round_trips(tmp_path, digits, archive):
    x, y = digits
    files = {f"digits/{NAMES[label]}/{i}.png": png(img) for i, (img, label) in
             enumerate(zip(x, y))}
    files["digits/.DS_Store"] = b"\0junk"  # hidden: skipped silently
    files["__MACOSX/digits/._0.png"] = b"junk"
    src = write_archive(tmp_path / archive, files)
    work = tmp_path / "work"
    result = ingest(src, archive, limits=LIMITS, workdir=work)
    check_common(result, work)
    classes = sorted(NAMES)  # labels follow the sorted folder names
    out = prepared(result)
    assert out["header"].classes == classes
    assert (out["header"].channels, out["header"].height, out["header"].width) == (1, 8, 8)
    relabel = np.array([classes.index(NAMES[k]) for k in y])
    assert out["train"] == rows(x, relabel) and out["val"] == []
    s = result.summary
    assert s["format"] == "imagefolder" and s["examples"] == 300 and s["val"] == 0
    assert s["size_note"] == "most common (300 of 300 images): 8 x 8 grey"
    assert s["validation"] == "split by each job's seed (20 %)"
    assert s["classes"][0] == {"name": "eight", "label": 0, "train": 30, "val": 0}


@pytest.mark.parametrize("archive", ["split.zip", "split.tar.gz", "split.tar"])
def test_imagefolder_with_train_and_val_folders_round_trips(tmp_path, digits, archive):
    x, y = digits
    val = np.arange(len(y)) % 5 == 0
    files = {}
    for i, (img, label) in enumerate(zip(x, y)):
        folder = ("test" if archive.endswith(".tar") else "val") if val[i] else "train"
        files[f"{folder}/{label}/{i}.png"] = png(img)
    src = write_archive(tmp_path / archive, files)
    result = ingest(src, archive, limits=LIMITS, workdir=tmp_path / "w")
    check_common(result, tmp_path / "w")
    out = prepared(result)
    assert out["header"].classes == [str(k) for k in range(10)]
    assert out["train"] == rows(x[~val], y[~val]) and out["val"] == rows(x[val], y[val])
    s = result.summary
    assert (s["train"], s["val"]) == (int((~val).sum()), int(val.sum()))
    assert s["validation"] == "from the archive's val/ folder"
    assert sum(c["val"] for c in s["classes"]) == s["val"]


def test_top_folder_with_folder_entries_and_training_testing_names(tmp_path):
    """As `zip -r mnist_png.zip mnist_png` writes it: an entry for every folder too."""
    src = tmp_path / "mnist_png.zip"
    with zipfile.ZipFile(src, "w") as zf:
        for folder in ("mnist_png/", "mnist_png/training/", "mnist_png/training/0/",
                       "mnist_png/training/1/", "mnist_png/testing/", "mnist_png/testing/1/"):
            zf.writestr(zipfile.ZipInfo(folder), b"")
        for name, value in (("training/0/a", 0), ("training/1/b", 9), ("testing/1/c", 5)):
            zf.writestr(f"mnist_png/{name}.png", png(np.full((5, 5), value, np.uint8)))
    result = ingest(src, src.name, limits=LIMITS, workdir=tmp_path / "w")
    assert [(c["name"], c["train"], c["val"]) for c in result.summary["classes"]] == \
        [("0", 1, 0), ("1", 1, 1)]


def test_most_common_size_wins_and_others_are_converted(tmp_path):
    rng = np.random.default_rng(0)
    small = [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(5)]
    big = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    tiny = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    clear = np.zeros((8, 8, 4), np.uint8)  # fully transparent: becomes white
    files = {f"a/{i}.png": png(img) for i, img in enumerate(small)}
    files["b/big.png"] = png(big, "RGB")
    files["b/tiny.png"] = png(tiny)
    files["b/clear.png"] = png(clear, "RGBA")
    buf = io.BytesIO()
    Image.fromarray(big, "RGB").save(buf, "JPEG")
    files["b/photo.jpeg"] = buf.getvalue()
    src = write_archive(tmp_path / "mixed.zip", files)
    result = ingest(src, "mixed.zip", limits=LIMITS, workdir=tmp_path / "w")
    assert result.summary["size_note"] == "most common (5 of 9 images): 8 x 8 grey"  # clear.png is RGBA
    shrunk = np.asarray(Image.fromarray(big).convert("L").resize((8, 8), Image.Resampling.BOX))
    grown = np.asarray(Image.fromarray(tiny).resize((8, 8), Image.Resampling.BILINEAR))
    jpeg = np.asarray(Image.open(io.BytesIO(files["b/photo.jpeg"])).convert("L")
                      .resize((8, 8), Image.Resampling.BOX))
    expect = [(0, s.tobytes()) for s in small] + [
        (1, shrunk.tobytes()), (1, grown.tobytes()), (1, np.full((8, 8), 255, np.uint8).tobytes()),
        (1, jpeg.tobytes())]
    assert prepared(result)["train"] == sorted(expect)


def test_declared_size_converts_every_image(tmp_path, digits):
    x, y = digits
    files = {f"{label}/{i}.png": png(img) for i, (img, label) in enumerate(zip(x[:40], y[:40]))}
    files.update({f"{label}/{i}.png": png(img) for i, (img, label) in
                  enumerate(zip(x[30:70], y[30:70]), 100)})
    src = write_archive(tmp_path / "d.tar.gz", files)
    result = ingest(src, "d.tar.gz", channels=3, height=4, width=6, limits=LIMITS,
                    workdir=tmp_path / "w")
    s = result.summary
    assert (s["channels"], s["height"], s["width"], s["size_note"]) == (3, 4, 6, "declared")
    out = prepared(result)
    first = np.asarray(Image.fromarray(x[0]).convert("RGB").resize((6, 4), Image.Resampling.BOX))
    assert (int(y[0]), first.transpose(2, 0, 1).tobytes()) in out["train"]


# ---------------------------------------------------------------------------------------------
# IDX, CIFAR-10, npz


def idx(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + \
        struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("archive,gz", [("mnist.zip", True), ("mnist.tar", False)])
def test_idx_round_trips_with_t10k_as_validation(tmp_path, archive, gz):
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), np.arange(50) % 10
    xv, yv = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), np.arange(20) % 7
    pack = (lambda b: gzip.compress(b)) if gz else (lambda b: b)
    ext = ".gz" if gz else ""
    src = write_archive(tmp_path / archive, {
        f"mnist/t10k-images-idx3-ubyte{ext}": pack(idx(xv)),
        f"mnist/train-labels-idx1-ubyte{ext}": pack(idx(y)),
        f"mnist/train-images-idx3-ubyte{ext}": pack(idx(x)),
        f"mnist/t10k-labels-idx1-ubyte{ext}": pack(idx(yv)),
    })
    result = ingest(src, archive, limits=LIMITS, workdir=tmp_path / "w")
    check_common(result, tmp_path / "w")
    out = prepared(result)
    assert out["train"] == rows(x[:, None], y) and out["val"] == rows(xv[:, None], yv)
    s = result.summary
    assert (s["format"], s["train"], s["val"], s["height"], s["width"]) == ("idx", 50, 20, 28, 28)
    assert [c["name"] for c in s["classes"]] == [str(k) for k in range(10)]


def test_idx_with_a_declared_shape_is_converted(tmp_path):
    rng = np.random.default_rng(6)
    x, y = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8), np.arange(12) % 3
    src = write_archive(tmp_path / "m.tar.gz", {"train-images-idx3-ubyte.gz": gzip.compress(idx(x)),
                                                "train-labels-idx1-ubyte.gz": gzip.compress(idx(y))})
    result = ingest(src, "m.tar.gz", channels=3, height=14, width=14, limits=LIMITS,
                    workdir=tmp_path / "w")
    assert (result.summary["size_note"], result.summary["channels"]) == ("declared", 3)
    expect = [np.asarray(Image.fromarray(img).convert("RGB").resize(
        (14, 14), Image.Resampling.BOX)).transpose(2, 0, 1) for img in x]
    assert prepared(result)["train"] == rows(np.stack(expect), y)


def test_cifar10_batches_round_trip_with_class_names(tmp_path):
    rng = np.random.default_rng(2)

    def batch(n):
        labels = np.arange(n) % 10
        pixels = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        records = np.concatenate([labels[:, None].astype(np.uint8), pixels.reshape(n, -1)], 1)
        return pixels, labels, records.tobytes()

    (x1, y1, b1), (x2, y2, b2), (xv, yv, bv) = batch(30), batch(20), batch(10)
    names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n"
    src = write_archive(tmp_path / "cifar.tar.gz", {
        "cifar-10-batches-bin/batches.meta.txt": names.encode(),
        "cifar-10-batches-bin/data_batch_1.bin": b1,
        "cifar-10-batches-bin/data_batch_2.bin": b2,
        "cifar-10-batches-bin/test_batch.bin": bv,
        "cifar-10-batches-bin/readme.html": b"<p>ignored</p>",
    })
    result = ingest(src, "cifar.tar.gz", limits=LIMITS, workdir=tmp_path / "w")
    out = prepared(result)
    assert out["header"].classes == names.split()
    assert out["train"] == rows(np.concatenate([x1, x2]), np.concatenate([y1, y2]))
    assert out["val"] == rows(xv, yv)
    assert result.summary["format"] == "cifar10"
    assert result.summary["size_note"] == "most common (60 of 60 images): 32 x 32 RGB"


def test_npz_3d_uint8_round_trips(tmp_path):
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 256, (40, 5, 7), dtype=np.uint8), np.arange(40) % 4
    np.savez_compressed(tmp_path / "d.npz", x=x, y=y)
    result = ingest(tmp_path / "d.npz", "d.npz", limits=LIMITS, workdir=tmp_path / "w")
    out = prepared(result)
    assert out["train"] == rows(x[:, None], y)
    assert (result.summary["format"], result.summary["height"], result.summary["width"]) == \
        ("npz", 5, 7)
    assert [c["name"] for c in result.summary["classes"]] == ["0", "1", "2", "3"]


def test_npz_4d_floats_with_validation_and_class_names(tmp_path):
    rng = np.random.default_rng(4)
    xu = rng.integers(0, 256, (30, 3, 6, 6), dtype=np.uint8)
    xvu = rng.integers(0, 256, (10, 3, 6, 6), dtype=np.uint8)
    y, yv = np.arange(30) % 3, np.arange(10) % 3
    np.savez(tmp_path / "f.npz", x=xu / 255.0, y=y, x_val=(xvu / 255.0).astype(np.float32),
             y_val=yv, classes=np.array(["cat", "dog", "emu"]))
    result = ingest(tmp_path / "f.npz", "f.npz", kind="images", limits=LIMITS,
                    workdir=tmp_path / "w")
    out = prepared(result)
    assert out["header"].classes == ["cat", "dog", "emu"]
    assert out["train"] == rows(xu, y) and out["val"] == rows(xvu, yv)
    assert result.summary["channels"] == 3


# ---------------------------------------------------------------------------------------------
# text

TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness, it was the epoch of belief, it was the epoch of "
        "incredulity, it was the season of Light, it was the season of Darkness.\n") * 3


def test_text_file_and_gzipped_text_file(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "t.txt.gz").write_bytes(gzip.compress(TEXT.encode()))
    for name in ("t.txt", "t.txt.gz"):
        work = tmp_path / name.replace(".", "-")
        result = ingest(tmp_path / name, name, limits=LIMITS, workdir=work)
        check_common(result, work)
        assert result.kind == "text" and result.path.read_text("utf-8") == TEXT
        s = result.summary
        assert (s["format"], s["characters"], s["documents"]) == ("text", len(TEXT), 1)
        assert s["vocab"] == {"char": len(build_vocab(tokenize(TEXT, "char"), "char")),
                              "word": len(build_vocab(tokenize(TEXT, "word"), "word"))}
        assert s["sample"] == TEXT[:500]


def test_text_archive_joins_documents_in_path_order(tmp_path):
    docs = {"b/two.txt": "Second document. " * 10, "a.txt": "First document. " * 10,
            "c.txt": "\ufeffThird, with a byte order mark.\r\nAnd Windows line ends." * 3,
            "empty.txt": "", ".hidden.txt": "\0never read"}
    src = write_archive(tmp_path / "docs.tar.gz", {k: v.encode() for k, v in docs.items()})
    result = ingest(src, "docs.tar.gz", kind="text", limits=LIMITS, workdir=tmp_path / "w")
    expect = "\n\n".join([docs["a.txt"].strip(), docs["b/two.txt"].strip(),
                          docs["c.txt"][1:].replace("\r\n", "\n")])
    assert result.path.read_text("utf-8") == expect
    assert (result.summary["format"], result.summary["documents"]) == ("text-archive", 3)


# ---------------------------------------------------------------------------------------------
# 60,000 images in bounded memory

_MEASURE = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from ingest import IngestLimits, ingest
    import models.prepared, numpy, PIL.Image, PIL.PngImagePlugin  # imported before measuring

    def kib(field):  # Linux: VmRSS now, VmHWM the peak since the last reset
        return next(int(line.split()[1]) for line in open("/proc/self/status")
                    if line.startswith(field + ":"))

    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM: the peak measured is the ingest's own
    before = kib("VmRSS")
    start, cpu = time.perf_counter(), time.process_time()
    r = ingest(Path(sys.argv[1]), "big.tar", limits=IngestLimits(), workdir=Path(sys.argv[2]))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"seconds": wall, "cpu": cpu, "rss_growth": (kib("VmHWM") - before) * 1024,
                      "summary": r.summary, "size": r.size}))
""")


def test_sixty_thousand_images_ingest_in_bounded_memory(tmp_path):
    """A 60,000-image 28 x 28 class-folder tar, ingested in a fresh process so that its peak
    RSS is its own: the decoded images are 47 MB, and they are never all in memory. What
    grows is bookkeeping per member (names, their split and label), not pixels."""
    rng = np.random.default_rng(5)
    bank = rng.integers(0, 256, (500, 28, 28), dtype=np.uint8)  # reused: building stays fast
    pngs = [png(img) for img in bank]
    src = tmp_path / "big.tar"
    with tarfile.open(src, "w") as tf:
        for i in range(60_000):
            info = tarfile.TarInfo(f"big/{i % 10}/{i}.png")
            info.size = len(pngs[i % 500])
            tf.addfile(info, io.BytesIO(pngs[i % 500]))
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(src), str(tmp_path / "w")],
                          check=False, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    decoded = 60_000 * 28 * 28
    assert got["summary"]["examples"] == 60_000 and got["size"] > decoded
    assert got["summary"]["size_note"] == "most common (60,000 of 60,000 images): 28 x 28 grey"
    print(f"\n60,000 28x28 PNGs ({src.stat().st_size / 2**20:.1f} MiB tar) ingested in "
          f"{got['seconds']:.1f} s ({got['cpu']:.1f} s CPU); peak RSS growth "
          f"{got['rss_growth'] / 2**20:.1f} MiB (decoded images: {decoded / 2**20:.1f} MiB)")
    assert got["rss_growth"] < decoded / 2

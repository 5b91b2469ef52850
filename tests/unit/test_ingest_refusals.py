"""ingest() refuses bad uploads with an IngestError whose message names the member and the
problem, and leaves nothing behind in its working folder. Every archive is built here."""

import gzip
import io
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingest import IngestError, IngestLimits, ingest

LIMITS = IngestLimits()


def png(size=(8, 8), mode="L", noise=False) -> bytes:
    buf = io.BytesIO()
    if noise:
        pixels = np.random.default_rng(0).integers(0, 256, size[::-1], dtype=np.uint8)
        Image.fromarray(pixels, "L").save(buf, "PNG")
    else:
        Image.new(mode, size, 0).save(buf, "PNG")
    return buf.getvalue()


def zip_of(path: Path, files: dict, method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in files.items():
            if isinstance(data, zipfile.ZipInfo):  # a prepared entry (links, folders)
                zf.writestr(data, b"target" if not data.is_dir() else b"")
            else:
                zf.writestr(name, data)
    return path


def tar_of(path: Path, files: dict) -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as tf:
        for name, data in files.items():
            if isinstance(data, tarfile.TarInfo):
                tf.addfile(data)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def two_classes(**extra) -> dict:
    return {"cat/1.png": png(), "cat/2.png": png(), "dog/1.png": png(), **extra}


def refused(src: Path, work: Path, *phrases: str, field: str = "file",
            limits: IngestLimits = LIMITS, **options) -> str:
    """The refusal's message, checked to name `phrases` and to have left `work` empty."""
    with pytest.raises(IngestError) as err:
        ingest(src, src.name, limits=limits, workdir=work, **options)
    assert err.value.field == field
    for phrase in phrases:
        assert phrase in err.value.message, err.value.message
    assert list(work.iterdir()) == []  # no prepared file, no temporary file
    return err.value.message


@pytest.fixture
def work(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


# ---------------------------------------------------------------------------------------------
# names and entry types


@pytest.mark.parametrize("name,phrase", [
    ("../evil.png", "path traversal"), ("cat/../../evil.png", "path traversal"),
    ("/etc/evil.png", "absolute path"), ("C:/evil.png", "absolute path"),
    ("cat\\evil.png", "backslash"),
])
def test_paths_that_could_escape_are_refused(tmp_path, work, name, phrase):
    for archive in ("bad.zip", "bad.tar"):
        build = zip_of if archive.endswith(".zip") else tar_of
        src = build(tmp_path / archive, two_classes(**{name: png()}))
        refused(src, work, name, phrase)


def test_links_and_devices_in_a_tar_are_refused(tmp_path, work):
    cases = [(tarfile.SYMTYPE, "is a link"), (tarfile.LNKTYPE, "is a link"),
             (tarfile.CHRTYPE, "device"), (tarfile.FIFOTYPE, "device or pipe")]
    for kind, phrase in cases:
        info = tarfile.TarInfo("cat/3.png")
        info.type, info.linkname = kind, "/etc/passwd"
        src = tar_of(tmp_path / "links.tar.gz", two_classes(**{"cat/3.png": info}))
        refused(src, work, "links.tar.gz: cat/3.png", phrase)


def test_a_symlink_entry_in_a_zip_is_refused(tmp_path, work):
    link = zipfile.ZipInfo("dog/2.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    src = zip_of(tmp_path / "link.zip", two_classes(**{"dog/2.png": link}))
    refused(src, work, "link.zip: dog/2.png is a symbolic link")


def test_too_many_members(tmp_path, work):
    few = IngestLimits(max_members=5)
    files = {f"{c}/{i}.png": png() for c in ("a", "b") for i in range(4)}
    refused(zip_of(tmp_path / "many.zip", files), work, "8 members", "at most 5", limits=few)
    refused(tar_of(tmp_path / "many.tar", files), work, "more than 5 members", limits=few)


# ---------------------------------------------------------------------------------------------
# decompression bombs

SMALL = IngestLimits(max_total_uncompressed_bytes=4 << 20, ratio_floor_bytes=64 << 10)


def test_zip_member_with_a_huge_ratio_is_refused_before_extracting(tmp_path, work):
    src = zip_of(tmp_path / "bomb.zip", two_classes(**{"dog/bomb.png": bytes(2 << 20)}))
    refused(src, work, "bomb.zip: dog/bomb.png expands", "decompression bomb", limits=SMALL)


def test_zip_declaring_too_much_in_total_is_refused(tmp_path, work):
    noise = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    src = zip_of(tmp_path / "big.zip", two_classes(**{"a/x.png": noise, "b/y.png": noise}),
                 zipfile.ZIP_STORED)
    refused(src, work, "big.zip: declares 6.0 MiB uncompressed", "at most 4.0 MiB",
            limits=SMALL)


def test_tar_gz_bomb_is_stopped_while_streaming(tmp_path, work):
    src = tar_of(tmp_path / "bomb.tar.gz", two_classes(**{"dog/zeros.png": bytes(3 << 20)}))
    refused(src, work, "bomb.tar.gz: the archive expands", "dog/zeros.png",
            "decompression bomb", limits=SMALL)
    capped = IngestLimits(max_total_uncompressed_bytes=1 << 20, max_ratio=1e9)
    refused(src, work, "declares more than 1.0 MiB uncompressed (at dog/zeros.png)",
            limits=capped)


def test_gzipped_single_file_bomb(tmp_path, work):
    src = tmp_path / "text.txt.gz"
    src.write_bytes(gzip.compress(b"a" * (3 << 20)))
    refused(src, work, "text.txt.gz: the archive expands", "decompression bomb", limits=SMALL)


def test_gzipped_idx_member_bomb(tmp_path, work):
    files = {"train-images-idx3-ubyte.gz": gzip.compress(bytes(3 << 20)),
             "train-labels-idx1-ubyte": struct.pack(">BBBBI", 0, 0, 8, 1, 2) + b"\x00\x01"}
    src = zip_of(tmp_path / "mnist.zip", files, zipfile.ZIP_STORED)
    refused(src, work, "mnist.zip: train-images-idx3-ubyte.gz expands", limits=SMALL)


# ---------------------------------------------------------------------------------------------
# image archives


def test_a_file_that_is_not_an_image(tmp_path, work):
    src = zip_of(tmp_path / "d.zip", two_classes(**{"cat/notes.txt": b"hello"}))
    refused(src, work, "d.zip: cat/notes.txt is not an image")


def test_an_image_that_does_not_decode(tmp_path, work):
    files = {"train/3/1.png": png(), "train/4/1.png": png(), "train/3/x.png": b"not a png"}
    refused(zip_of(tmp_path / "d.zip", files), work, "train/3/x.png does not decode as an image")
    cut = {**files, "train/3/x.png": png((32, 32), noise=True)[:300]}  # a good header, then nothing
    refused(tar_of(tmp_path / "d.tar", cut), work, "train/3/x.png does not decode as an image")
    refused(tar_of(tmp_path / "d.tar", cut), work, "train/3/x.png does not decode",
            channels=1, height=8, width=8)


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, work):
    src = zip_of(tmp_path / "d.zip", two_classes(**{"dog/huge.png": png((64, 64))}))
    refused(src, work, "d.zip: dog/huge.png is 64 x 64 pixels", "at most 1,000",
            limits=IngestLimits(max_image_pixels=1000))


def test_fewer_than_two_classes(tmp_path, work):
    src = zip_of(tmp_path / "one.zip", {"cat/1.png": png(), "cat/2.png": png()})
    refused(src, work, "one.zip: found one class ('cat')", "at least two")


def test_a_class_folder_with_no_image(tmp_path, work):
    files = two_classes(**{"seven/": zipfile.ZipInfo("seven/"), "seven/.DS_Store": b"x"})
    refused(zip_of(tmp_path / "d.zip", files), work, "class 'seven' has no image")


def test_a_mix_of_split_folders_and_bare_class_folders(tmp_path, work):
    files = {"train/cat/1.png": png(), "train/dog/1.png": png(), "bird/1.png": png()}
    refused(zip_of(tmp_path / "d.zip", files), work, "bird/1.png is outside the train/ and val/",
            "not a mix")


def test_val_with_a_class_that_train_lacks(tmp_path, work):
    files = {"train/cat/1.png": png(), "train/dog/1.png": png(), "val/emu/1.png": png()}
    refused(zip_of(tmp_path / "d.zip", files), work, "val/ has class 'emu' that train/ lacks")


def test_an_archive_with_nothing_usable(tmp_path, work):
    refused(zip_of(tmp_path / "d.zip", {"data.csv": b"1,2\n"}), work,
            "d.zip: has nothing usable (such as data.csv)")
    refused(tar_of(tmp_path / "e.tar", {".DS_Store": b"x", "__MACOSX/._a": b"x"}), work,
            "e.tar: has no files")


# ---------------------------------------------------------------------------------------------
# IDX, CIFAR-10, npz


def idx(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def test_mismatched_idx_counts(tmp_path, work):
    files = {"train-images-idx3-ubyte": idx(np.zeros((10, 4, 4))),
             "train-labels-idx1-ubyte": idx(np.arange(9) % 3)}
    refused(tar_of(tmp_path / "m.tar", files), work,
            "train-images-idx3-ubyte has 10 images, train-labels-idx1-ubyte 9 labels")


def test_idx_validation_label_out_of_range(tmp_path, work):
    files = {"train-images-idx3-ubyte": idx(np.zeros((6, 4, 4))),
             "train-labels-idx1-ubyte": idx(np.arange(6) % 3),
             "t10k-images-idx3-ubyte": idx(np.zeros((2, 4, 4))),
             "t10k-labels-idx1-ubyte": idx(np.array([0, 7]))}
    refused(zip_of(tmp_path / "m.zip", files), work,
            "t10k-labels-idx1-ubyte has label 7, outside 0..2")


def test_cifar_batch_of_the_wrong_length_and_label_out_of_range(tmp_path, work):
    refused(zip_of(tmp_path / "c.zip", {"data_batch_1.bin": bytes(3073 * 2 + 5)}), work,
            "data_batch_1.bin is 6,151 bytes, not a whole number of 3,073-byte records")
    records = bytearray(3073 * 3)
    records[3073] = 12
    refused(zip_of(tmp_path / "c.zip", {"data_batch_1.bin": bytes(records)}), work,
            "data_batch_1.bin has label 12, outside 0..9")


def test_npz_labels_out_of_range_and_counts(tmp_path, work):
    x = np.zeros((4, 3, 3), np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=np.array([0, 1, 2, 5]), classes=np.array(["a", "b", "c"]))
    refused(tmp_path / "a.npz", work, "a.npz: 'y' has label 5, outside 0..2")
    np.savez(tmp_path / "b.npz", x=x, y=np.array([0, 1, -1, 1]))
    refused(tmp_path / "b.npz", work, "'y' has label -1")
    np.savez(tmp_path / "c.npz", x=x, y=np.array([0, 1, 1]))
    refused(tmp_path / "c.npz", work, "'x' has 4 images, 'y' 3 labels")
    np.savez(tmp_path / "d.npz", x=x + 2.0, y=np.array([0, 1, 0, 1]))
    refused(tmp_path / "d.npz", work, "'x' is float64 with values outside [0, 1]")
    np.savez(tmp_path / "e.npz", x=x, y=np.array([0, 2, 0, 2]))
    refused(tmp_path / "e.npz", work, "class '1' has no training example")


# ---------------------------------------------------------------------------------------------
# text, options


def test_text_refusals_name_the_file_or_member(tmp_path, work):
    (tmp_path / "nul.txt").write_bytes(b"x" * 300 + b"\0")
    refused(tmp_path / "nul.txt", work, "nul.txt contains a NUL byte", "offset 300")
    (tmp_path / "short.txt").write_text("too short")
    refused(tmp_path / "short.txt", work, "short.txt: the text is too short")
    src = zip_of(tmp_path / "docs.zip", {"a.txt": b"fine " * 100, "b/latin1.txt": b"caf\xe9"})
    refused(src, work, "docs.zip: b/latin1.txt is not UTF-8 text (invalid byte at offset 3)")


def test_lone_files_and_other_compressors(tmp_path, work):
    (tmp_path / "cat.png").write_bytes(png())
    refused(tmp_path / "cat.png", work, "cat.png: is a single PNG image")
    (tmp_path / "x.bz2").write_bytes(b"BZh91AY&SY" + bytes(40))
    refused(tmp_path / "x.bz2", work, "compressed with bzip2")


def test_bad_options(tmp_path, work):
    src = zip_of(tmp_path / "d.zip", two_classes())
    refused(src, work, "kind must be 'images' or 'text'", field="kind", kind="audio")
    refused(src, work, "channels must be 1 (grey) or 3", field="channels", channels=2)
    refused(src, work, "width is needed too", field="width", height=8)
    refused(src, work, "height must be a positive", field="height", height=0, width=3)
    refused(src, work, "kind is 'text', but d.zip is an image archive", field="kind",
            kind="text")


def test_hidden_files_are_skipped_not_refused(tmp_path, work):
    files = two_classes(**{".DS_Store": b"\0", "__MACOSX/cat/._1.png": b"junk",
                           "dog/.hidden.txt": b"x", "Thumbs.db": b"x"})
    result = ingest(zip_of(tmp_path / "d.zip", files), "d.zip", limits=LIMITS, workdir=work)
    assert result.summary["examples"] == 3

"""Datasets: digits, IDX and CIFAR-10 readers (on files written here), text corpora, tokenizers."""

import gzip
import math
import struct

import numpy as np
import pytest
import torch

from models import data as D

# ---------------------------------------------------------------------------------------------
# images


def test_digits_are_1x8x8_in_unit_range_and_split_by_seed():
    a = D.load_image_dataset("digits", seed=0)
    assert a.x_train.shape[1:] == (1, 8, 8) and a.x_train.dtype == torch.float32
    assert (a.channels, a.height, a.width, a.num_classes) == (1, 8, 8, 10)
    assert a.x_train.shape[0] + a.x_val.shape[0] == 1797
    assert a.x_val.shape[0] == round(1797 * 0.2)
    assert a.y_train.dtype == torch.int64 and set(a.y_val.tolist()) == set(range(10))
    assert 0.0 <= a.x_train.min() and a.x_train.max() == 1.0
    b = D.load_image_dataset("digits", seed=0)
    c = D.load_image_dataset("digits", seed=1)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.y_val, c.y_val)
    # the split is a partition: every image is in exactly one side
    total = torch.cat([a.x_train, a.x_val]).flatten(1).sum(1).sort().values
    total_c = torch.cat([c.x_train, c.x_val]).flatten(1).sum(1).sort().values
    assert torch.allclose(total, total_c)


def _write_idx(path, array: np.ndarray, gz=False):
    codes = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}
    dtype = {np.uint8: ">u1", np.int32: ">i4", np.float32: ">f4"}[array.dtype.type]
    header = bytes([0, 0, codes[array.dtype.type], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(dtype).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


def _fake_mnist(rng, n):
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    labels[:10] = np.arange(10)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    rng = np.random.default_rng(0)
    images, labels = _fake_mnist(rng, 12)
    _write_idx(tmp_path / "a.idx3", images, gz)
    _write_idx(tmp_path / "b.idx1", labels, gz)
    floats = rng.standard_normal((3, 4)).astype(np.float32)
    _write_idx(tmp_path / "c.idx", floats)
    suffix = ".gz" if gz else ""
    if gz:
        (tmp_path / "a.idx3").rename(tmp_path / "a.idx3.gz")
        (tmp_path / "b.idx1").rename(tmp_path / "b.idx1.gz")
    assert np.array_equal(D.read_idx(tmp_path / f"a.idx3{suffix}"), images)
    assert np.array_equal(D.read_idx(tmp_path / f"b.idx1{suffix}"), labels)
    assert np.array_equal(D.read_idx(tmp_path / "c.idx"), floats)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="magic"):
        D.read_idx(tmp_path / "bad")
    short = tmp_path / "short"
    _write_idx(short, np.zeros((4, 2, 2), np.uint8))
    short.write_bytes(short.read_bytes()[:-3])
    with pytest.raises(ValueError, match="data bytes"):
        D.read_idx(short)


def test_mnist_from_idx_files_uses_t10k_as_validation(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "mnist"
    folder.mkdir()
    tr_x, tr_y = _fake_mnist(rng, 40)
    te_x, te_y = _fake_mnist(rng, 15)
    _write_idx(folder / "train-images-idx3-ubyte", tr_x)
    _write_idx(folder / "train-labels-idx1-ubyte", tr_y)
    gz = folder / "t10k-images-idx3-ubyte.gz"
    _write_idx(gz, te_x, gz=True)
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", te_y, gz=True)
    d = D.load_image_dataset("mnist", tmp_path, seed=0)
    assert d.x_train.shape == (40, 1, 28, 28) and d.x_val.shape == (15, 1, 28, 28)
    assert torch.allclose(d.x_val[3, 0], torch.from_numpy(te_x[3]).float() / 255)
    assert d.y_train.tolist() == tr_y.tolist()
    names = {item["name"]: item for item in D.builtin_datasets(tmp_path)}
    assert names["mnist"]["kind"] == "images" and names["mnist"]["size_bytes"] > 40 * 784
    assert "fashion_mnist" not in names and "cifar10" not in names


def test_fashion_mnist_without_test_files_is_split_by_seed(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    x, y = _fake_mnist(rng, 50)
    _write_idx(folder / "train-images-idx3-ubyte", x)
    _write_idx(folder / "train-labels-idx1-ubyte", y)
    a = D.load_image_dataset("fashion_mnist", tmp_path, seed=3)
    b = D.load_image_dataset("fashion_mnist", tmp_path, seed=3)
    assert a.x_train.shape[0] == 40 and a.x_val.shape[0] == 10
    assert torch.equal(a.y_val, b.y_val)


def _cifar_batch(path, labels, rng):
    images = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8)
    rec = np.concatenate([np.array(labels, np.uint8)[:, None], images.reshape(len(labels), -1)], 1)
    path.write_bytes(rec.tobytes())
    return images


def test_cifar10_binary_batches(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    im1 = _cifar_batch(folder / "data_batch_1.bin", [0, 1, 2, 3], rng)
    im2 = _cifar_batch(folder / "data_batch_2.bin", [9, 8], rng)
    te = _cifar_batch(folder / "test_batch.bin", [5, 6, 7], rng)
    x, y = D.read_cifar10_batch(folder / "data_batch_1.bin")
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 1, 2, 3]
    assert np.array_equal(x, im1)  # R, G, B planes in order
    d = D.load_image_dataset("cifar10", tmp_path)
    assert (d.channels, d.height, d.width) == (3, 32, 32)
    assert d.y_train.tolist() == [0, 1, 2, 3, 9, 8] and d.y_val.tolist() == [5, 6, 7]
    assert torch.allclose(d.x_train[5], torch.from_numpy(im2[1]).float() / 255)
    assert torch.allclose(d.x_val[0], torch.from_numpy(te[0]).float() / 255)
    listed = [i for i in D.builtin_datasets(tmp_path) if i["name"] == "cifar10"]
    assert listed and listed[0]["examples"] == 9
    (folder / "broken.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="multiple"):
        D.read_cifar10_batch(folder / "broken.bin")


def test_missing_image_datasets_say_where_they_looked(tmp_path):
    with pytest.raises(ValueError, match="mnist"):
        D.load_image_dataset("mnist", tmp_path)
    with pytest.raises(ValueError, match="unknown"):
        D.load_image_dataset("imagenet", tmp_path)
    names = [i["name"] for i in D.builtin_datasets(tmp_path)]
    assert names[0] == "digits" and "pydocs" in names


# ---------------------------------------------------------------------------------------------
# text


def test_fortune_files_are_read_plain_files_only(tmp_path):
    (tmp_path / "jokes").write_bytes(b"First one.\n%\nSecond,\n\t-- _\x08S_\x08o someone\n%\n\n%\n")
    (tmp_path / "jokes.dat").write_bytes(b"\x00\x01binary")
    (tmp_path / "jokes.u8").write_text("ignored\n%\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "more").write_text("ignored\n%\n")
    (tmp_path / "link").symlink_to(tmp_path / "jokes")
    docs = D.fortunes_documents(tmp_path)
    assert docs == ["First one.", "Second,\n\t-- So someone"]


@pytest.mark.skipif(not D.FORTUNES_DIR.is_dir(), reason="Debian package `fortunes` not installed")
def test_fortunes_corpus():
    docs = D.fortunes_documents()
    assert len(docs) > 5000
    assert not any("\x08" in d or d.strip() == "%" for d in docs)
    assert D.default_dataset("rnn_lm") == "fortunes"
    assert any(i["name"] == "fortunes" and i["kind"] == "text" for i in D.builtin_datasets(None))


def test_pydocs_is_always_there():
    docs = D.pydocs_documents()
    assert len(docs) > 50 and sum(map(len, docs)) > 100_000
    d = D.load_text_dataset("pydocs", tokenizer="word", seed=0)
    assert d.vocab[0] == "<unk>" and len(d.vocab) <= 10_000
    assert "the" in d.vocab[:10]


def test_char_tokenizer_vocab_from_train_and_unknown_in_val():
    text = "abcabcabc" * 10 + "xyz"
    d = D.text_data_from_string(text, "char", val_fraction=0.1)
    assert d.vocab == ["<unk>", "a", "b", "c"]
    assert d.train_ids.dtype == torch.int64
    assert len(d.train_ids) + len(d.val_ids) == len(text)
    assert d.val_ids[-3:].tolist() == [0, 0, 0]  # x, y, z were never seen in training
    assert d.decode(d.encode("cab")) == "cab"
    assert d.decode(d.train_ids[:9].tolist()) == "abcabcabc"


def test_split_is_contiguous_last_fraction():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    d = D.text_data_from_string(text, "char", val_fraction=0.1)
    assert len(d.val_ids) == 100
    assert d.decode(d.val_ids.tolist()) == text[-100:]
    assert d.decode(d.train_ids.tolist()) == text[:-100]


def test_word_tokenizer_lowercases_splits_punctuation_and_caps_vocab():
    assert D.tokenize("Don't PANIC -- it's fine... (really)!", "word") == [
        "don't", "panic", "--", "it's", "fine", "...", "(", "really", ")", "!"]
    tokens = ["b"] * 3 + ["a"] * 3 + ["c"] * 2 + ["d"]
    assert D.build_vocab(tokens, "word", max_vocab=3) == ["<unk>", "a", "b"]  # tie: by token
    text = "The cat sat. The dog sat! A cat ran? " * 20
    d = D.text_data_from_string(text, "word", val_fraction=0.1, max_vocab=6)
    # 40x: cat, sat, the; then the 20x tokens in order: "!" < "." < "?" < "a" < "dog" < "ran"
    assert d.vocab == ["<unk>", "cat", "sat", "the", "!", "."]
    assert d.decode(d.encode("The cat sat.")) == "the cat sat."
    assert 0 in d.encode("zebra")


def test_builtin_text_split_is_deterministic_by_seed():
    a = D.load_text_dataset("pydocs", tokenizer="char", seed=0)
    b = D.load_text_dataset("pydocs", tokenizer="char", seed=0)
    c = D.load_text_dataset("pydocs", tokenizer="char", seed=1)
    assert torch.equal(a.val_ids, b.val_ids) and a.vocab == b.vocab
    assert not torch.equal(a.val_ids[:500], c.val_ids[:500])
    n = len(a.train_ids) + len(a.val_ids)
    assert abs(len(a.val_ids) - 0.1 * n) <= 1


def test_unigram_baseline():
    d = D.text_data_from_string("abcd" * 500, "char")
    assert d.vocab_size == 5
    # uniform over a, b, c, d (add-one smoothing also gives <unk> a little mass)
    assert abs(D.unigram_baseline(d) - math.log(4)) < 0.01


@pytest.mark.parametrize("raw,message", [
    (b"", "empty"),
    (b"\xff\xfe\x00bad" * 100, "UTF-8"),
    (b"too short", "too short"),
    ("\x01\x02\x03 abc".encode() * 100, "binary"),
])
def test_validate_text_upload_rejects(raw, message):
    with pytest.raises(ValueError, match=message):
        D.validate_text_upload(raw)


def test_validate_text_upload_accepts_text():
    text = "\ufeffHello world.\r\nThis is fine, really. " * 20
    out = D.validate_text_upload(text.encode("utf-8"))
    assert out.startswith("Hello") and "\r" not in out

"""Datasets as tensors: small built-in image sets, IDX / CIFAR-10 readers, text corpora, tokenizers.

Everything a training job needs is held as whole tensors (the training core moves them to the
device once and batches by index), never fed through a per-sample DataLoader.

torch, numpy and scikit-learn are imported inside the functions that need them, so that the API
process can list datasets (`builtin_datasets`) and validate uploads without importing torch.

Images:  `ImageData` with x: float32 (N, C, H, W) scaled to [0, 1], y: int64 (N,).
  - "digits": scikit-learn's bundled 8x8 digits (1797 images, offline), split by seed.
  - "mnist" / "fashion_mnist": IDX files in <data_dir>/<name>/ (optionally .gz); the t10k/test
    files, when present, are the validation set, else the train files are split by seed.
  - "cifar10": CIFAR-10 binary batches in <data_dir>/cifar10/ (or its cifar-10-batches-bin/);
    test_batch.bin, when present, is the validation set.
Text:    `TextData` with train_ids / val_ids: int64 (N,) and the vocabulary.
  - "fortunes": the plain-text fortune files of Debian's `fortunes` package
    (/usr/share/games/fortunes), one document per '%'-separated fortune.
  - "pydocs": the English help topics bundled with Python (pydoc_data.topics), always present.
  - uploaded text: `text_data_from_string`.
  Built-in corpora are shuffled by document with the seed, then split contiguously (the last
  `val_fraction` of the tokens is validation); uploaded text is split contiguously unshuffled.
"""

from __future__ import annotations

import gzip
import random
import re
import struct
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from models.registry import dataset_kind_for

if TYPE_CHECKING:  # pragma: no cover
    import torch

FORTUNES_DIR = Path("/usr/share/games/fortunes")
IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")
# Light strokes or objects on a dark ground: an image file for one of these with a light ground
# is inverted before prediction (api/services/images.py).
LIGHT_ON_DARK_DATASETS = ("digits", "mnist", "fashion_mnist")
TEXT_DATASETS = ("fortunes", "pydocs")
UNK = "<unk>"
DEFAULT_MAX_VOCAB = 5_000  # word level: the decoder dominates CPU time, 5k keeps jobs short
MIN_UPLOAD_CHARS = 200
MIN_PRINTABLE_RATIO = 0.95

# A word is a run of letters/digits (with inner apostrophes: "don't"); any other non-space
# character is a token of its own, a run of the same mark ("--", "...") one token.
_WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*|([^\w\s])\1*|_+")
_OVERSTRIKE_RE = re.compile(r".\x08")  # "_\bX" (underline X) and "X\bX" (bold X) in fortunes
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


# ---------------------------------------------------------------------------------------------
# containers


@dataclass
class ImageData:
    x_train: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y_train: torch.Tensor  # (N,) int64
    x_val: torch.Tensor  # (M, C, H, W) float32 in [0, 1]
    y_val: torch.Tensor  # (M,) int64
    num_classes: int
    channels: int
    height: int
    width: int

    def to(self, device) -> ImageData:
        return ImageData(
            self.x_train.to(device), self.y_train.to(device), self.x_val.to(device),
            self.y_val.to(device), self.num_classes, self.channels, self.height, self.width,
        )


@dataclass
class TextData:
    train_ids: torch.Tensor  # (N,) int64
    val_ids: torch.Tensor  # (M,) int64
    vocab: list[str]  # id -> token; vocab[0] == "<unk>"
    tokenizer: str  # "char" | "word"
    _index: dict[str, int] = field(default=None, init=False, repr=False, compare=False)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        if self._index is None:
            self._index = {tok: i for i, tok in enumerate(self.vocab)}
        return [self._index.get(tok, 0) for tok in tokenize(text, self.tokenizer)]

    def decode(self, ids) -> str:
        tokens = [self.vocab[int(i)] if 0 <= int(i) < len(self.vocab) else UNK for i in ids]
        return detokenize(tokens, self.tokenizer)

    def to(self, device) -> TextData:
        return TextData(self.train_ids.to(device), self.val_ids.to(device), self.vocab,
                        self.tokenizer)


# ---------------------------------------------------------------------------------------------
# tokenizers


def tokenize(text: str, tokenizer: str) -> list[str]:
    """char: every character is a token. word: lowercase words and single punctuation marks."""
    if tokenizer == "char":
        return list(text)
    if tokenizer == "word":
        return [m.group(0) for m in _WORD_RE.finditer(text.lower())]
    raise ValueError(f"unknown tokenizer {tokenizer!r}; allowed: char, word")


_CLOSING = set(".,;:!?)]}%")
_OPENING = set("([{$")


def detokenize(tokens: list[str], tokenizer: str) -> str:
    """char: concatenate. word: words separated by spaces, punctuation attached the usual way
    (approximate: the word tokenizer drops the original whitespace and case)."""
    if tokenizer == "char":
        return "".join(tokens)
    out: list[str] = []
    quote_open = False
    glue_next = True  # no space before the first token
    for tok in tokens:
        after_opening = glue_next
        glue = after_opening or tok[0] in _CLOSING or tok[0] == "'"
        glue_next = tok[0] in _OPENING
        if tok[0] == '"':  # alternate opening / closing double quotes
            glue = True if quote_open else after_opening
            glue_next = not quote_open
            quote_open = not quote_open
        if not glue:
            out.append(" ")
        out.append(tok)
    return "".join(out)


def build_vocab(tokens: list[str], tokenizer: str, max_vocab: int = DEFAULT_MAX_VOCAB) -> list[str]:
    """<unk> first, then: char -> every character seen (sorted); word -> the `max_vocab - 1`
    most frequent tokens (ties broken by the token itself, so the vocabulary is deterministic)."""
    return _vocab_from_counts(Counter(tokens), tokenizer, max_vocab)


def _vocab_from_counts(counts: dict[str, int], tokenizer: str, max_vocab: int) -> list[str]:
    """build_vocab from {token: count} (tokens with a count of 0 left out by the caller)."""
    if tokenizer == "char":
        return [UNK, *sorted(tok for tok in counts if tok != UNK)]
    ranked = sorted(((tok, n) for tok, n in counts.items() if tok != UNK),
                    key=lambda kv: (-kv[1], kv[0]))
    return [UNK, *[tok for tok, _ in ranked[: max(0, max_vocab - 1)]]]


def _token_ids(text: str, tokenizer: str) -> tuple[torch.Tensor, list[str]]:
    """tokenize(text) as ids into a list of its distinct tokens (in order of first appearance),
    without lists of per-token str and int objects: for a 12 MB upload of 1.7M words those
    took ~160 MiB at once (and left ~100 MiB fragmented); the int64 ids take 14 MB."""
    import torch

    if tokenizer == "char":
        tokens = iter(text)
    elif tokenizer == "word":
        tokens = (m.group(0) for m in _WORD_RE.finditer(text.lower()))
    else:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; allowed: char, word")
    index: dict[str, int] = {}
    ids = array("q")  # int64
    add, get = ids.append, index.get
    for tok in tokens:
        i = get(tok)
        if i is None:
            i = index[tok] = len(index)
        add(i)
    if not ids:
        return torch.zeros(0, dtype=torch.int64), []
    return torch.frombuffer(ids, dtype=torch.int64).clone(), list(index)


def text_data_from_documents(
    documents: list[str],
    tokenizer: str = "char",
    val_fraction: float = 0.1,
    max_vocab: int = DEFAULT_MAX_VOCAB,
    separator: str = "\n\n",
) -> TextData:
    """Join documents (in the given order), tokenize, split contiguously: the last `val_fraction`
    of the tokens is validation. The vocabulary comes from the training tokens only."""
    import torch

    if not 0.0 < val_fraction < 1.0:
        raise ValueError("val_fraction must be between 0 and 1")
    # the same as tokenize() + build_vocab() on the training tokens, without per-token objects
    ids, distinct = _token_ids(separator.join(documents), tokenizer)  # (N,), ids into distinct
    n = ids.shape[0]
    if n < 20:
        raise ValueError(f"text too short: {n} tokens (need at least 20)")
    n_val = max(2, int(round(n * val_fraction)))
    train, val = ids[:-n_val], ids[-n_val:]
    counts = torch.bincount(train, minlength=len(distinct)).tolist()
    vocab = _vocab_from_counts({tok: c for tok, c in zip(distinct, counts) if c}, tokenizer,
                               max_vocab)
    index = {tok: i for i, tok in enumerate(vocab)}
    remap = torch.tensor([index.get(tok, 0) for tok in distinct], dtype=torch.int64)
    return TextData(remap[train], remap[val], vocab, tokenizer)


def text_data_from_string(
    text: str, tokenizer: str = "char", val_fraction: float = 0.1,
    max_vocab: int = DEFAULT_MAX_VOCAB,
) -> TextData:
    """User-uploaded text: split contiguously, last `val_fraction` of the tokens is validation."""
    return text_data_from_documents([text], tokenizer, val_fraction, max_vocab)


def unigram_baseline(data: TextData) -> float:
    """Cross-entropy (nats/token) of the validation tokens under the training tokens' unigram
    distribution (add-one smoothed over the vocabulary): the loss a model that ignores context
    would get. A language model should beat it by a wide margin."""
    import torch

    counts = torch.bincount(data.train_ids.cpu(), minlength=data.vocab_size).double() + 1.0
    logp = torch.log(counts / counts.sum())
    return float(-logp[data.val_ids.cpu()].mean())


# ---------------------------------------------------------------------------------------------
# text corpora


def _clean_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _OVERSTRIKE_RE.sub("", text)
    return _CONTROL_RE.sub("", text)


def _read_text_file(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _fortune_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir()
        if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8")
        and not p.name.startswith(".")
    )


def fortunes_documents(directory: Path = FORTUNES_DIR) -> list[str]:
    """Every fortune (the text between '%' lines) of every plain-text file, in file order."""
    docs: list[str] = []
    for path in _fortune_files(directory):
        text = _clean_text(_read_text_file(path))
        for chunk in re.split(r"^%[ \t]*$", text, flags=re.MULTILINE):
            chunk = chunk.strip("\n")
            if chunk.strip():
                docs.append(chunk)
    return docs


def pydocs_documents() -> list[str]:
    """The English help topics that ship with CPython (what `help('if')` prints)."""
    from pydoc_data.topics import topics

    return [_clean_text(topics[key]).strip() for key in sorted(topics) if topics[key].strip()]


def _text_documents(name: str) -> list[str]:
    if name == "fortunes":
        docs = fortunes_documents()
        if not docs:
            raise ValueError(
                f"dataset 'fortunes' needs Debian's `fortunes` package ({FORTUNES_DIR} is missing)"
            )
        return docs
    if name == "pydocs":
        return pydocs_documents()
    raise ValueError(f"unknown text dataset {name!r}; built-in: {', '.join(TEXT_DATASETS)}")


def load_text_dataset(
    name: str,
    *,
    tokenizer: str = "char",
    seed: int = 0,
    val_fraction: float = 0.1,
    max_vocab: int = DEFAULT_MAX_VOCAB,
    data_dir: Path | None = None,  # unused: text corpora are system-wide; kept for symmetry
) -> TextData:
    """A built-in corpus, documents shuffled by `seed`, then split contiguously."""
    docs = _text_documents(name)
    random.Random(seed).shuffle(docs)
    return text_data_from_documents(docs, tokenizer, val_fraction, max_vocab)


def validate_text_upload(raw: bytes, min_chars: int = MIN_UPLOAD_CHARS) -> str:
    """Decode and sanity-check an uploaded training text; ValueError with a readable message."""
    if not raw:
        raise ValueError("the uploaded text is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"the upload is not UTF-8 text (invalid byte at offset {exc.start})") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if len(text.strip()) < min_chars:
        raise ValueError(f"the text is too short: {len(text.strip())} characters, "
                         f"need at least {min_chars}")
    printable = sum(1 for ch in text if ch.isprintable() or ch in "\n\t")
    ratio = printable / len(text)
    if ratio < MIN_PRINTABLE_RATIO:
        raise ValueError(
            f"the text looks binary: only {ratio:.0%} of its characters are printable "
            f"(need {MIN_PRINTABLE_RATIO:.0%})"
        )
    return text


# ---------------------------------------------------------------------------------------------
# image readers


def _open_maybe_gz(path: Path):
    path = Path(path)
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


_IDX_DTYPES = {0x08: ("u1", 1), 0x09: ("i1", 1), 0x0B: (">i2", 2), 0x0C: (">i4", 4),
               0x0D: (">f4", 4), 0x0E: (">f8", 8)}


def read_idx(path: Path):
    """Read an IDX file (MNIST format; .gz allowed) into a numpy array of its declared shape."""
    import numpy as np

    with _open_maybe_gz(path) as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(f"{path}: unsupported IDX type 0x{type_code:02x} / {ndim} dimensions")
    dtype, itemsize = _IDX_DTYPES[type_code]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = 1
    for s in shape:
        count *= s
    if len(data) - header != count * itemsize:
        raise ValueError(f"{path}: expected {count * itemsize} data bytes for shape {shape}, "
                         f"found {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


CIFAR_RECORD = 1 + 3 * 32 * 32


def read_cifar10_batch(path: Path):
    """Read a CIFAR-10 binary batch: records of 1 label byte + 3072 pixel bytes (R, G, B planes
    of 32x32). Returns (images uint8 (N, 3, 32, 32), labels int64 (N,)) as numpy arrays."""
    import numpy as np

    data = Path(path).read_bytes()
    if not data or len(data) % CIFAR_RECORD:
        raise ValueError(f"{path}: size {len(data)} is not a multiple of {CIFAR_RECORD} bytes")
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"{path}: label {labels.max()} out of range 0..9")
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


def _find_idx(folder: Path, split: str, kind: str) -> Path | None:
    """kind: 'images' (idx3) or 'labels' (idx1); split: 'train' or 'test' (t10k/test)."""
    marker = "idx3" if kind == "images" else "idx1"
    prefixes = ("train",) if split == "train" else ("t10k", "test")
    for p in sorted(folder.glob("*")) if folder.is_dir() else []:
        name = p.name.lower()
        if marker in name and kind in name and name.startswith(prefixes) and p.is_file():
            return p
    return None


def idx_image_size(folder: Path) -> tuple[int, int] | None:
    """(height, width) from the header of the MNIST-style train images file in `folder`, if
    there is one, without reading its pixels (models/limits.py sizes a job with it)."""
    path = _find_idx(folder, "train", "images")
    if path is None:
        return None
    try:
        with _open_maybe_gz(path) as fh:
            head = fh.read(16)
    except OSError:
        return None
    # magic 0, 0, type, ndim=3, then N, H, W as big-endian uint32 (read_idx)
    if len(head) < 16 or head[0] or head[1] or head[3] != 3:
        return None
    _, height, width = struct.unpack(">3I", head[4:16])
    return height, width


def _cifar_folder(data_dir: Path) -> Path | None:
    for folder in (data_dir / "cifar10", data_dir / "cifar10" / "cifar-10-batches-bin"):
        if sorted(folder.glob("data_batch_*.bin")):
            return folder
    return None


def _split(n: int, val_fraction: float, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    n_val = max(1, int(round(n * val_fraction)))
    return perm[n_val:], perm[:n_val]


def _image_data(x_train, y_train, x_val, y_val, num_classes: int) -> ImageData:
    n, c, h, w = x_train.shape
    return ImageData(x_train.contiguous(), y_train.contiguous(), x_val.contiguous(),
                     y_val.contiguous(), num_classes, c, h, w)


def load_image_dataset(
    name: str, data_dir: Path | None = None, seed: int = 0, val_fraction: float = 0.2
) -> ImageData:
    import numpy as np
    import torch

    data_dir = Path(data_dir) if data_dir is not None else Path(".")
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N,1,8,8)
        y = torch.from_numpy(digits.target.astype(np.int64))
        tr, va = _split(len(y), val_fraction, seed)
        return _image_data(x[tr], y[tr], x[va], y[va], 10)

    if name in ("mnist", "fashion_mnist"):
        folder = data_dir / name
        xtr_p, ytr_p = _find_idx(folder, "train", "images"), _find_idx(folder, "train", "labels")
        if xtr_p is None or ytr_p is None:
            raise ValueError(f"dataset {name!r}: no train IDX files in {folder}")

        def load(xp, yp):
            x = read_idx(xp)
            y = read_idx(yp).astype(np.int64)
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise ValueError(f"{xp}: images {x.shape} and labels {y.shape} do not match")
            return torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1), torch.from_numpy(y)

        x, y = load(xtr_p, ytr_p)
        xte_p, yte_p = _find_idx(folder, "test", "images"), _find_idx(folder, "test", "labels")
        if xte_p is not None and yte_p is not None:
            xv, yv = load(xte_p, yte_p)
            return _image_data(x, y, xv, yv, 10)
        tr, va = _split(len(y), val_fraction, seed)
        return _image_data(x[tr], y[tr], x[va], y[va], 10)

    if name == "cifar10":
        folder = _cifar_folder(data_dir)
        if folder is None:
            raise ValueError(f"dataset 'cifar10': no data_batch_*.bin in {data_dir / 'cifar10'}")
        parts = [read_cifar10_batch(p) for p in sorted(folder.glob("data_batch_*.bin"))]
        x = torch.from_numpy(np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0)
        y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        test = folder / "test_batch.bin"
        if test.is_file():
            xv, yv = read_cifar10_batch(test)
            return _image_data(x, y, torch.from_numpy(xv.astype(np.float32) / 255.0),
                               torch.from_numpy(yv), 10)
        tr, va = _split(len(y), val_fraction, seed)
        return _image_data(x[tr], y[tr], x[va], y[va], 10)

    raise ValueError(f"unknown image dataset {name!r}; built-in: {', '.join(IMAGE_DATASETS)}")


# ---------------------------------------------------------------------------------------------
# catalogue


def _total_bytes(paths) -> int:
    return sum(p.stat().st_size for p in paths)


def builtin_datasets(data_dir: Path | None = None) -> list[dict]:
    """The built-in datasets available on this machine (no torch import, no file parsing)."""
    data_dir = Path(data_dir) if data_dir is not None else None
    out = [{"name": "digits", "kind": "images", "examples": 1797, "size_bytes": 1797 * 64,
            "description": "scikit-learn's bundled 8x8 handwritten digits (1x8x8, 10 classes)"}]
    if data_dir is not None:
        for name, label in (("mnist", "MNIST"), ("fashion_mnist", "Fashion-MNIST")):
            folder = data_dir / name
            files = [_find_idx(folder, "train", "images"), _find_idx(folder, "train", "labels")]
            if all(files):
                test = [_find_idx(folder, "test", "images"), _find_idx(folder, "test", "labels")]
                files += [p for p in test if p]
                out.append({"name": name, "kind": "images", "size_bytes": _total_bytes(files),
                             "description": f"{label} IDX files in {folder}"})
        folder = _cifar_folder(data_dir)
        if folder is not None:
            files = sorted(folder.glob("*_batch*.bin"))
            out.append({"name": "cifar10", "kind": "images", "size_bytes": _total_bytes(files),
                        "examples": _total_bytes(files) // CIFAR_RECORD,
                        "description": f"CIFAR-10 binary batches in {folder} "
                                       "(3x32x32, 10 classes)"})
    files = _fortune_files(FORTUNES_DIR)
    if files:
        out.append({"name": "fortunes", "kind": "text", "size_bytes": _total_bytes(files),
                    "description": "English fortune-cookie texts from Debian's `fortunes` package"})
    out.append({"name": "pydocs", "kind": "text", "size_bytes": _pydocs_size(),
                "description": "English help topics bundled with Python (pydoc_data.topics)"})
    return out


def _pydocs_size() -> int:
    from pydoc_data.topics import topics

    return sum(len(v.encode("utf-8")) for v in topics.values())


def default_dataset(model: str) -> str:
    """The dataset a job for `model` uses when none is named."""
    if dataset_kind_for(model) == "text":
        return "fortunes" if _fortune_files(FORTUNES_DIR) else "pydocs"
    return "digits"

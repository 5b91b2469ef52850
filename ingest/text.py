"""Text datasets: one UTF-8 text file, or a zip/tar of .txt files (documents joined with a
blank line between them, in sorted path order). The rules are those of any text upload
(models.data.validate_text_upload: not empty, long enough, mostly printable) plus no NUL byte
(no Postgres text column can hold one). The prepared file is the checked text, UTF-8, with
'\\n' line ends."""

from __future__ import annotations

from pathlib import Path

from ingest.archives import Archive, Member, read_capped
from ingest.limits import IngestError, IngestLimits, size_text

SAMPLE_CHARS = 500


def _no_nul(raw: bytes, label: str) -> None:
    nul = raw.find(b"\x00")
    if nul != -1:
        raise IngestError("file", f"{label} contains a NUL byte (0x00) at byte offset {nul}; "
                          "remove NUL bytes and upload it again")


def _validate(raw: bytes, label: str) -> str:
    from models.data import validate_text_upload

    try:
        return validate_text_upload(raw)
    except ValueError as exc:
        raise IngestError("file", f"{label}: {exc}") from None


def text_summary(fmt: str, text: str, documents: int) -> dict:
    """Characters, documents, and the vocabulary a job would build with each tokenizer
    (models.data.build_vocab: <unk> plus the characters / the most frequent words)."""
    from models.data import build_vocab, tokenize

    words: set[str] = set()
    for line in text.splitlines():  # word tokens never span a line: counted line by line
        words.update(tokenize(line, "word"))
    # build_vocab's size depends only on which tokens occur, so distinct tokens suffice
    return {
        "format": fmt, "characters": len(text), "documents": documents,
        "vocab": {"char": len(build_vocab(sorted(set(text)), "char")),
                  "word": len(build_vocab(sorted(words), "word"))},
        "sample": text[:SAMPLE_CHARS],
    }


def _write(text: str, out: Path) -> None:
    with open(out, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def ingest_text_file(path: Path, where: str, limits: IngestLimits, out: Path) -> dict:
    size = path.stat().st_size
    if size > limits.max_text_bytes:
        raise IngestError("file", f"{where}: is {size_text(size)} of text; at most "
                          f"{size_text(limits.max_text_bytes)} are accepted")
    raw = path.read_bytes()
    _no_nul(raw, where)
    text = _validate(raw, where)
    _write(text, out)
    return text_summary("text", text, 1)


def is_text_archive(members: list[Member]) -> bool:
    files = [m for m in members if not m.is_dir]
    return bool(files) and all(m.name.lower().endswith(".txt") for m in files)


def ingest_text_archive(archive: Archive, members: list[Member], limits: IngestLimits,
                        out: Path) -> dict:
    where = archive.where
    files = [m for m in members if not m.is_dir]
    for m in files:
        if not m.name.lower().endswith(".txt"):
            raise IngestError("file", f"{where}: {m.name} is not a .txt file (a text archive "
                              "holds only .txt files)")
    declared = sum(m.size for m in files)
    if declared > limits.max_text_bytes:
        raise IngestError("file", f"{where}: holds {size_text(declared)} of text; at most "
                          f"{size_text(limits.max_text_bytes)} are accepted")
    docs: dict[str, str] = {}
    for m, fh in archive.files(lambda m: True):
        label = archive.label(m)
        raw = read_capped(fh, label, limits.max_text_bytes)
        _no_nul(raw, label)
        try:
            doc = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise IngestError("file", f"{label} is not UTF-8 text (invalid byte at offset "
                              f"{exc.start})") from None
        doc = doc.replace("\r\n", "\n").replace("\r", "\n").strip()
        if doc:  # an empty document adds nothing (and no blank line)
            docs[m.path] = doc
    if not docs:
        raise IngestError("file", f"{where}: its .txt files are all empty")
    joined = "\n\n".join(docs[p] for p in sorted(docs))
    text = _validate(joined.encode("utf-8"), f"{where} (its .txt files joined)")
    _write(text, out)
    return text_summary("text-archive", text, len(docs))

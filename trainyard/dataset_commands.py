"""`trainyard datasets`: list datasets, upload a file or a folder as a dataset's next version,
show a dataset's versions, delete one. Registered on the main parser by trainyard/cli.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainyard.client import Client


def _size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _found(item: dict) -> str:
    """What the server found in an upload, in one line."""
    summary = item.get("summary") or {}
    if item.get("kind") == "images":
        shape = f"{summary.get('channels')} x {summary.get('height')} x {summary.get('width')}"
        classes = summary.get("classes") or []
        return (f"{summary.get('examples')} images, {len(classes)} classes, {shape}; "
                f"validation: {summary.get('validation')}")
    vocab = summary.get("vocab") or {}
    return (f"{summary.get('characters')} characters, {summary.get('documents')} documents, "
            f"vocabulary {vocab.get('char')} characters / {vocab.get('word')} words")


def cmd_datasets(args: argparse.Namespace, client: Client) -> int:
    if args.upload:
        name, path = args.upload
        if not Path(path).exists():
            print(f"error: no such file or folder: {path}", file=sys.stderr)
            return 2
        item = client.upload_dataset(name, path, kind=args.kind, channels=args.channels,
                                     height=args.height, width=args.width,
                                     description=args.description or "")
        print(f"dataset {item['ref']} stored ({_size(item.get('size_bytes'))}, "
              f"sha256 {item.get('sha256', '')[:12]}): {_found(item)}")
        note = (item.get("summary") or {}).get("size_note")
        if note and note != "declared":
            print(f"image size: {note}")
        return 0
    if args.show:
        detail = client.dataset(args.show)
        for version in detail.get("versions", []):
            jobs = ", ".join(str(j) for j in version.get("jobs", [])) or "none"
            print(f"{version['ref']:<24} {_size(version.get('size_bytes')):>10}  "
                  f"{version.get('created_at', '')[:19]}  jobs: {jobs}")
        if not detail.get("versions"):
            print(f"{args.show}: a built-in dataset")
        return 0
    if args.delete:
        name, _, version = args.delete.partition("@")
        if not version.isdigit():
            print("error: name a version to delete: NAME@N", file=sys.stderr)
            return 2
        client.delete_dataset(name, int(version), force=args.force)
        print(f"deleted {name}@{version}")
        return 0
    for item in client.datasets():
        print(f"{item.get('ref', item['name']):<24} {item['kind']:<7} "
              f"{_size(item.get('size_bytes')):>10}  {item.get('source', '')}")
    return 0


def add_dataset_commands(sub: argparse._SubParsersAction, run) -> None:
    p = sub.add_parser("datasets", help="list datasets; upload, show or delete your own")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--upload", nargs=2, metavar=("NAME", "PATH"),
                      help="upload a file or a folder (sent as a tar) as NAME's next version")
    what.add_argument("--show", metavar="NAME", help="an upload's versions and their jobs")
    what.add_argument("--delete", metavar="NAME@N", help="delete one version")
    p.add_argument("--kind", choices=("images", "text"), help="default: found from the file")
    p.add_argument("--channels", type=int, choices=(1, 3), help="convert images to this")
    p.add_argument("--height", type=int, help="convert images to this (with --width)")
    p.add_argument("--width", type=int)
    p.add_argument("--description", help="a line about the data")
    p.add_argument("--force", action="store_true", help="with --delete: even if jobs used "
                   "it (admins only)")
    p.set_defaults(func=run(cmd_datasets))

"""Dataset files for the tests of users' datasets: scikit-learn's digits as an ImageFolder zip
of PNGs (the same images as the built-in "digits"), and texts."""

from __future__ import annotations

import functools
import io
import zipfile

import numpy as np

CORPUS_A = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
            "it was the age of foolishness.\n") * 12
CORPUS_B = ("Call me Ishmael. Some years ago, never mind how long precisely, having little or "
            "no money in my purse, I thought I would sail about a little.\n") * 12


@functools.cache
def digits_zip() -> bytes:
    """The 1797 digits as digits/<label>/<i>.png, 8x8 grey (0..16 scaled to 0..255)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
            png = io.BytesIO()
            Image.fromarray(np.round(image * 255 / 16).astype(np.uint8), "L").save(png, "PNG")
            archive.writestr(f"digits/{label}/{i:04d}.png", png.getvalue())
    return out.getvalue()


def upload(client, name: str, content: bytes, filename: str = "corpus.txt",
           headers: dict | None = None, **form):
    return client.post("/datasets", data={"name": name, **form},
                       files={"file": (filename, content, "application/octet-stream")},
                       headers=headers or {})

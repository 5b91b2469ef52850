"""A ~200 MB upload through a real API process (uvicorn, SQLite) never holds the upload in
memory: its peak resident memory (VmHWM) grows by far less than the file's size. The archive
is an ImageFolder zip of random PNGs (incompressible, stored): the API copies it to disk,
ingest decodes it member by member into the prepared file, the store writes it in 4 MiB
chunks. Runs in about half a minute."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.integration.dataset_files import CORPUS_A
from trainyard.local_service import free_port

IMAGES, SIDE = 1000, 256  # 1000 RGB 256 x 256 images: ~197 MB as PNGs, 196 MB prepared
MAX_GROWTH = 80 * 2**20


def random_png_zip(path: Path) -> int:
    from PIL import Image

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for i in range(IMAGES):
            png = io.BytesIO()
            pixels = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(png, "PNG", compress_level=0)
            archive.writestr(f"noise/{'ab'[i % 2]}/{i:04d}.png", png.getvalue())
    return path.stat().st_size


def peak_rss(pid: int) -> int:
    """VmHWM of a process: the most resident memory it has had, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def api_process(tmp_path):
    port = free_port()
    env = {**os.environ, "TRAINYARD_HOME": str(tmp_path / "home"),
           "TRAINYARD_REQUIRE_KEYS": "0", "TRAINYARD_RECONCILE_IN_API": "0"}
    for name in ("TRAINYARD_DATABASE_URL", "TRAINYARD_BROKER_URL", "TRAINYARD_ADMIN_KEY",
                 "TRAINYARD_MAX_UPLOAD_BYTES", "TRAINYARD_DATASET_QUOTA_BYTES"):
        env.pop(name, None)
    process = subprocess.Popen([sys.executable, "-m", "trainyard", "api", "--host",
                                "127.0.0.1", "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code < 500:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("the API did not start: " + process.stderr.read1().decode())
        yield process.pid, base
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_200_mb_upload_is_streamed(api_process, tmp_path):
    pid, base = api_process
    archive = tmp_path / "noise.zip"
    size = random_png_zip(archive)
    assert size > 190 * 10**6
    with httpx.Client(base_url=base, timeout=300) as client:
        # warm up: the upload path's imports (ingest, PIL, numpy) are loaded once
        warm = client.post("/datasets", data={"name": "warm"},
                           files={"file": ("c.txt", CORPUS_A.encode(), "text/plain")})
        assert warm.status_code == 201, warm.text
        before = peak_rss(pid)
        with open(archive, "rb") as fh:  # httpx streams a file object's multipart part
            response = client.post("/datasets", data={"name": "noise"},
                                   files={"file": ("noise.zip", fh, "application/zip")})
        assert response.status_code == 201, response.text
        body = response.json()
    growth = peak_rss(pid) - before
    assert body["summary"]["examples"] == IMAGES and body["size_bytes"] > 190 * 10**6
    assert growth < MAX_GROWTH, f"peak memory grew by {growth / 2**20:.0f} MiB"

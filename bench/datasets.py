"""Uploading a dataset and starting a job on it: a 60,000-image 28x28 archive, cold and cached.

    .venv/bin/python bench/datasets.py                        # both formats and modes, ~5 min
    .venv/bin/python bench/datasets.py --mode embedded --images 10000

A synthetic MNIST-shaped set (60,000 grey 28x28 images of 10 classes, each class a bright bar
at its own height on noise) is built in two formats: MNIST's own IDX files, gzipped, in one tar
(no image to decode), and PNG files in train/ and val/ class folders in a zip (every image
decoded and checked on upload). For each
mode the real service starts (embedded: `trainyard up` on SQLite; distributed: `trainyard api`
and a worker on PostgreSQL and Redis), then:
  upload:       POST /datasets with the archive, until the answer (streamed to disk, checked,
                converted to the prepared file, stored in chunks);
  first job:    POST /jobs (a CNN, one 64-image step) until the job reports its first step:
                claim, fetch of the prepared file from the database into the worker's cache,
                loading it, building the model, one step (cold);
  second job:   the same on the same worker, the file already cached (cached);
  builtin job:  the same job on the built-in `digits`, for scale.
Figures go to bench/results/datasets.json.
"""

from __future__ import annotations

import argparse
import gzip
import io
import struct
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402

JOB_HP = {"epochs": 1, "steps_per_epoch": 1, "batch_size": 64, "channels": [8, 16]}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (MNIST's format) of a uint8 array."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I",
                                                                       *array.shape)
    return header + array.astype(np.uint8).tobytes()


def synthetic_archive(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for digit in range(10):  # a class is a bright bar at its own angle-ish position
        rows = labels == digit
        images[rows, 4 + 2 * digit:8 + 2 * digit, 4:24] = 220
    split = n * 6 // 7
    files = {"train-images-idx3-ubyte.gz": images[:split], "train-labels-idx1-ubyte.gz":
             labels[:split], "t10k-images-idx3-ubyte.gz": images[split:],
             "t10k-labels-idx1-ubyte.gz": labels[split:]}
    with tarfile.open(path, "w") as tar:
        for name, array in files.items():
            data = gzip.compress(idx_bytes(array), compresslevel=6, mtime=0)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def imagefolder_archive(path: Path, n: int) -> None:
    """The same kind of images as PNG files in class folders (train/ and val/), in a zip: the
    format whose upload decodes every image."""
    import zipfile

    from PIL import Image

    rng = np.random.default_rng(0)
    split = n * 6 // 7
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for i in range(n):
            label = int(rng.integers(0, 10))
            image = rng.integers(0, 40, (28, 28)).astype(np.uint8)
            image[4 + 2 * label:8 + 2 * label, 4:24] = 220
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, "PNG")
            part = "train" if i < split else "val"
            archive.writestr(f"{part}/{label}/{i}.png", buf.getvalue())


def until_first_step(http: httpx.Client, job_id: int, timeout: float = 600) -> float:
    """Seconds from now until the job reports a step (or ends)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        job = http.get(f"/jobs/{job_id}").json()
        if job["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
        if (job.get("progress") or {}).get("step", 0) >= 1 or job["status"] == "succeeded":
            return time.perf_counter() - t0
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} did not start")


def run_mode(mode: str, archive: Path, name: str) -> dict:
    env = {"TRAINYARD_MAX_UPLOAD_BYTES": str(1 << 30)}
    with common.running_service(mode, extra_env=env) as bench:
        common.wait_worker_ready(bench)
        http = httpx.Client(base_url=bench.service.url, timeout=900)
        t0 = time.perf_counter()
        with open(archive, "rb") as fh:
            response = http.post("/datasets", data={"name": name},
                                 files={"file": (archive.name, fh)})
        upload_s = time.perf_counter() - t0
        if response.status_code != 201:
            raise RuntimeError(f"upload: {response.status_code} {response.text}")
        answer = response.json()
        out = {"upload_s": round(upload_s, 2), "stored_bytes": answer.get("size"),
               "summary": answer.get("summary")}
        for label, dataset in (("first_job_cold_s", name),
                               ("second_job_cached_s", name),
                               ("builtin_digits_job_s", "digits")):
            job = bench.submit("cnn", dataset, JOB_HP)
            out[label] = round(until_first_step(http, job["id"]), 2)
            bench.wait(job["id"], poll_s=0.1)
        http.close()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("embedded", "distributed", "both"), default="both")
    parser.add_argument("--images", type=common.positive_int, default=60_000)
    parser.add_argument("--format", choices=("idx", "imagefolder", "both"), default="both")
    args = parser.parse_args()
    result = common.run_header("datasets", vars(args))
    formats = ("idx", "imagefolder") if args.format == "both" else (args.format,)
    modes = ("embedded", "distributed") if args.mode == "both" else (args.mode,)
    result["runs"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats:
            archive = Path(tmp) / ("synthetic-mnist.tar" if fmt == "idx" else
                                   "synthetic-mnist.zip")
            t0 = time.perf_counter()
            (synthetic_archive if fmt == "idx" else imagefolder_archive)(archive, args.images)
            result[f"archive_{fmt}"] = {"images": args.images, "bytes": archive.stat().st_size,
                                        "build_s": round(time.perf_counter() - t0, 2)}
            for mode in modes:
                result["runs"][f"{fmt}/{mode}"] = run_mode(mode, archive, f"synthetic-{fmt}")
    for run, fig in result["runs"].items():
        print(f"{run:24s} upload {fig['upload_s']:6.2f} s   first job "
              f"{fig['first_job_cold_s']:6.2f} s (cold)   second "
              f"{fig['second_job_cached_s']:6.2f} s (cached)   "
              f"digits {fig['builtin_digits_job_s']:6.2f} s")
    print(f"written to {common.write_results('datasets', result)}")


if __name__ == "__main__":
    main()

"""Latency of using a trained network over HTTP: one digits prediction, 200 generated characters.

    .venv/bin/python bench/inference.py                 # ~2 min: trains two small jobs first
    .venv/bin/python bench/inference.py --requests 100

The real service (`trainyard up`: API, worker, SQLite, file-system broker) trains a digits CNN
and a digits MLP at their default sizes and a char-level GRU language model at its default
sizes (each briefly: the network's size, not its accuracy, sets the latency). Then, from one
client with a keep-alive connection, after warm-up requests (the first loads torch and the
network into the API process's cache):
  predict_json:  POST /jobs/{id}/predict with one 8x8 image as JSON, per model;
  predict_png:   the same image as a PNG file (multipart), CNN;
  generate_200:  POST /jobs/{id}/generate, 200 characters, seeded;
  healthz_while_generating: GET /healthz while another client generates 2,000 tokens in a
                 loop (healthz_idle: without it): the event loop stays free while a network
                 runs in its thread.
Targets (issue 14): predict p50 < 10 ms, generate_200 p50 < 150 ms, on this CPU.
"""

from __future__ import annotations

import argparse
import io
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

JOBS = {
    "cnn": ("digits", {"epochs": 2, "steps_per_epoch": 10}),
    "mlp": ("digits", {"epochs": 2, "steps_per_epoch": 10}),
    "rnn_lm": ("pydocs", {"epochs": 1, "steps_per_epoch": 10}),
}


def timed(call, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = call()
        out.append(time.perf_counter() - t0)
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.text}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=common.positive_int, default=300)
    parser.add_argument("--generations", type=common.positive_int, default=40)
    args = parser.parse_args()
    result = common.run_header("inference", vars(args))
    with common.running_service("embedded") as bench:
        ids = {}
        for model, (dataset, hp) in JOBS.items():
            ids[model] = bench.submit(model, dataset, hp)["id"]
        for model, job_id in ids.items():
            done, _ = bench.wait(job_id, poll_s=0.2, timeout=600)
            if done["status"] != "succeeded":
                raise RuntimeError(f"{model} job ended {done['status']}: {done.get('error')}")
        image = np.random.default_rng(0).random((8, 8)).round(3).tolist()
        buf = io.BytesIO()
        Image.fromarray((np.array(image) * 255).astype(np.uint8)).save(buf, "PNG")
        png = buf.getvalue()
        figures = {}
        with httpx.Client(base_url=bench.service.url, timeout=60) as http:
            for model in ("cnn", "mlp"):
                url = f"/jobs/{ids[model]}/predict"
                timed(lambda url=url: http.post(url, json={"inputs": [image]}), 20)  # warm-up
                figures[f"predict_json_{model}"] = common.latency_summary(timed(
                    lambda url=url: http.post(url, json={"inputs": [image]}), args.requests))
            url = f"/jobs/{ids['cnn']}/predict"
            files = [("files", ("d.png", png, "image/png"))]
            timed(lambda: http.post(url, files=files), 20)
            figures["predict_png_cnn"] = common.latency_summary(
                timed(lambda: http.post(url, files=files), args.requests))
            url = f"/jobs/{ids['rnn_lm']}/generate"
            body = {"prompt": "The ", "max_tokens": 200, "seed": 1}
            timed(lambda: http.post(url, json=body), 5)
            figures["generate_200"] = common.latency_summary(
                timed(lambda: http.post(url, json=body), args.generations))

            figures["healthz_idle"] = common.latency_summary(
                timed(lambda: http.get("/healthz"), 100))
            stop = threading.Event()

            def generate_forever() -> None:
                with httpx.Client(base_url=bench.service.url, timeout=60) as other:
                    while not stop.is_set():
                        other.post(url, json={"prompt": "The ", "max_tokens": 2000, "seed": 2})

            background = threading.Thread(target=generate_forever)
            background.start()
            time.sleep(0.5)
            try:
                figures["healthz_while_generating"] = common.latency_summary(
                    timed(lambda: http.get("/healthz"), 100))
            finally:
                stop.set()
                background.join()
    result["figures"] = figures
    result["targets"] = {"predict_json_p50_ms": 10, "generate_200_p50_ms": 150}
    path = common.write_results("inference", result)
    for name, fig in figures.items():
        print(f"{name:28s} p50 {fig['p50_ms']:7.1f} ms   p95 {fig['p95_ms']:7.1f} ms   "
              f"(n={fig['n']})")
    print(f"written to {path}")


if __name__ == "__main__":
    main()

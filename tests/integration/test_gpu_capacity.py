"""What a job needs of a worker and what a worker has: `gpus` and GPU memory.

POST /jobs records the job's `gpus` and its estimated memory; a worker's claim (through the
store, exactly as worker/runner.py claims) passes over jobs asking for more GPUs or more free
GPU memory than it has, and takes them once it has; GET /jobs/{id} says why such a job waits
(`gpus`, `gpu_memory`). No GPU is needed: a worker's capacity is what its presence beat reports
and what its claim passes, as a GPU worker reports and passes it.
"""

from __future__ import annotations

import pytest

from db.store.scheduling import Capacity
from models import training_memory_bytes

HP = {"epochs": 1, "hidden_sizes": [16, 16], "seed": 1}
CUDA_QUEUES = ["cuda", "auto"]
GIB = 1024**3


def gpu_worker(store, name, gpus=1, free=8 * GIB) -> str:
    store.record_worker_seen(name, "host", 1, CUDA_QUEUES, starting=True, gpus=gpus,
                             gpu_free_bytes=free)
    return name


def submit(client, **body) -> dict:
    response = client.post("/jobs", json={"model": "mlp", "dataset": "digits",
                                          "hyperparameters": HP, **body})
    assert response.status_code == 201, response.text
    return response.json()


def test_submit_records_gpus_and_the_memory_estimate(client, store):
    job = submit(client, gpus=2, device="cuda")
    assert job["gpus"] == 2
    expected = training_memory_bytes("mlp", store.get_job(job["id"]).hyperparameters, "digits",
                                     None)
    assert job["memory_bytes"] == expected > 0
    assert store.get_job(job["id"]).gpus == 2
    assert submit(client)["gpus"] == 1  # the default


@pytest.mark.parametrize("gpus", [0, 17, "two"])
def test_gpus_out_of_range_is_a_422_naming_the_field(client, gpus):
    response = client.post("/jobs", json={"model": "mlp", "dataset": "digits", "gpus": gpus})
    assert response.status_code == 422
    assert "gpus" in response.text


def test_claim_passes_over_jobs_that_ask_for_more_gpus_than_the_worker_has(client, store):
    big = submit(client, gpus=2, device="cuda")["id"]
    small = submit(client, device="cuda")["id"]
    one_gpu = gpu_worker(store, "gpu-a", gpus=1)

    # The older job needs two GPUs: a one-GPU worker takes the younger one instead...
    claimed = store.claim_next_job(one_gpu, CUDA_QUEUES, "cuda", capacity=Capacity(gpus=1))
    assert claimed.id == small
    # ...and the two-GPU job says why it waits.
    reason = client.get(f"/jobs/{big}").json()["queue"]["reason"]
    assert reason["code"] == "gpus"
    assert "asks for 2 GPUs" in reason["message"] and "has is 1" in reason["message"]

    # A worker with two GPUs takes it.
    two_gpus = gpu_worker(store, "gpu-b", gpus=2)
    assert store.claim_next_job(one_gpu, CUDA_QUEUES, "cuda",
                                capacity=Capacity(gpus=1)) is None
    claimed = store.claim_next_job(two_gpus, CUDA_QUEUES, "cuda", capacity=Capacity(gpus=2))
    assert claimed.id == big and claimed.gpus == 2


def test_a_job_waits_for_gpu_memory_and_starts_once_it_is_free(client, store, api_settings):
    job = submit(client, device="cuda")
    need = job["memory_bytes"]
    reserve = api_settings.gpu_memory_reserve_bytes
    # The GPU is shared and nearly full: the worker's beat says so, and so does the queue.
    name = gpu_worker(store, "gpu-full", free=need // 2)
    reason = client.get(f"/jobs/{job['id']}").json()["queue"]["reason"]
    assert reason["code"] == "gpu_memory", reason
    assert "GiB of GPU memory" in reason["message"]
    assert store.claim_next_job(name, CUDA_QUEUES, "cuda",
                                capacity=Capacity(free_memory_bytes=need // 2)) is None

    # Another job on that GPU ended: the next beat reports room, the reason moves on, and
    # the claim takes the job.
    gpu_worker(store, "gpu-full", free=need + reserve)
    assert client.get(f"/jobs/{job['id']}").json()["queue"]["reason"]["code"] == "next"
    claimed = store.claim_next_job(name, CUDA_QUEUES, "cuda",
                                   capacity=Capacity(free_memory_bytes=need))
    assert claimed.id == job["id"]


def test_jobs_without_an_estimate_and_cpu_workers_are_not_held_back(client, store):
    # A job queued before the estimate was recorded is claimed as before.
    old = store.create_job("mlp", "digits", HP, device="cuda").id
    name = gpu_worker(store, "gpu-old", free=0)
    claimed = store.claim_next_job(name, CUDA_QUEUES, "cuda",
                                   capacity=Capacity(free_memory_bytes=0))
    assert claimed.id == old
    # An auto job is never held for GPU memory while a CPU worker can run it.
    auto = submit(client, device="auto")["id"]
    store.record_worker_seen("cpu-1", "host", 1, ["cpu", "auto"], starting=True, gpus=2)
    assert client.get(f"/jobs/{auto}").json()["queue"]["reason"]["code"] != "gpu_memory"

"""What a job needs of a worker and what a worker has: `gpus` and GPU memory.

POST /jobs records the job's `gpus` and its estimated memory; a worker's claim (through the
store, exactly as worker/runner.py claims) passes over jobs asking for more GPUs or more free
GPU memory than it has, and takes them once it has; GET /jobs/{id} says why such a job waits
(`gpus`, `gpu_memory`). Processes that share a GPU (same UUID) count the estimates of the jobs
each other claimed, even when they claim at the same moment from the same measure. No GPU is
needed: a worker's capacity is what its presence beat reports and what its claim passes, as a
GPU worker reports and passes it.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import replace

import pytest
import torch
from sqlalchemy import update

from db.store.scheduling import Capacity
from db.tables import Job, utcnow
from core.settings import Settings
from models import loaded_memory_bytes, training_memory_bytes
from models.limits import estimate, shape_for_dataset
from models.train import JobSpec, load_data
from tests.integration.dataset_files import digits_zip, upload
from worker import gpus
from worker.lifecycle import PresenceBeat
from worker.runner import JobRunner

HP = {"epochs": 1, "hidden_sizes": [16, 16], "seed": 1}
CUDA_QUEUES = ["cuda", "auto"]
GIB = 1024**3


def gpu_worker(store, name, gpus=1, free=8 * GIB, gpu_ids=(), total=None) -> str:
    store.record_worker_seen(name, "host", 1, CUDA_QUEUES, starting=True, gpus=gpus,
                             gpu_free_bytes=free, gpu_ids=gpu_ids, gpu_memory_bytes=total)
    return name


def on_gpu(gpu_id: str | tuple[str, ...], total: int, reserve: int) -> Capacity:
    """What a worker on idle GPU(s) `gpu_id` measures before its claim (as worker/gpus.py
    reports it: free and total less the reserve)."""
    ids = (gpu_id,) if isinstance(gpu_id, str) else gpu_id
    return Capacity(gpus=len(ids), free_memory_bytes=total - reserve, gpu_ids=ids,
                    total_memory_bytes=total - reserve, reserve_bytes=reserve)


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


def test_the_memory_estimate_counts_the_dataset_that_goes_to_the_gpu(big_client, store):
    # fit() moves the whole dataset to the device: an uploaded one's images, as its summary
    # counts them, are part of what the job needs of a GPU shared with other jobs
    assert upload(big_client, "mine", digits_zip(), "digits.zip").status_code == 201
    job = big_client.post("/jobs", json={"model": "cnn", "dataset": "mine", "device": "cuda",
                                         "hyperparameters": {"channels": [4, 8]}}).json()
    hp = store.get_job(job["id"]).hyperparameters
    sized = estimate("cnn", hp, shape_for_dataset("cnn", hp, "mine", None, (1, 8, 8, 10)))
    images = 1797 * (1 * 8 * 8 * 4 + 8)  # fp32 pixels and an int64 label each
    assert job["memory_bytes"] == sized.state_bytes + sized.peak_bytes + images


def test_the_worker_makes_the_estimate_exact_once_the_data_is_loaded(store, tmp_path):
    # At submit a text's vocabulary is a bound (256 characters) and its tokens are bounded by
    # its bytes; the worker knows both exactly once it has loaded the text, and records that
    hp = JobSpec(model="rnn_lm", dataset="pydocs", device="cpu", hyperparameters={
        "epochs": 1, "steps_per_epoch": 2, "tokenizer": "char", "hidden_size": 16,
        "embedding_dim": 8, "seq_len": 16}).hyperparameters
    submitted = training_memory_bytes("rnn_lm", hp, "pydocs", None)
    job = store.create_job("rnn_lm", "pydocs", hp, device="cpu", memory_bytes=submitted)
    settings = Settings(home=tmp_path, metrics_flush_seconds=0.05)
    assert JobRunner(store, settings, worker_name="w").run(job.id) == "succeeded"
    spec = JobSpec(model="rnn_lm", dataset="pydocs", hyperparameters=hp, device="cpu")
    exact = loaded_memory_bytes("rnn_lm", hp, load_data(spec, None))
    assert store.get_job(job.id).memory_bytes == exact < submitted


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


def test_claims_on_a_shared_gpu_count_the_jobs_already_claimed_there(client, store,
                                                                      api_settings):
    jobs = [submit(client, device="cuda") for _ in range(3)]
    need = jobs[0]["memory_bytes"]
    reserve = api_settings.gpu_memory_reserve_bytes
    total = 2 * (need + reserve)  # room for two jobs, each with its CUDA context
    sharing = [gpu_worker(store, f"gpu-a{i}", free=total, gpu_ids=["GPU-a"], total=total)
               for i in range(3)]
    # All three processes measured an idle GPU before claiming: the memory measure alone
    # would let each take a job. The claims count each other instead.
    first = store.claim_next_job(sharing[0], CUDA_QUEUES, "cuda",
                                 capacity=on_gpu("GPU-a", total, reserve))
    second = store.claim_next_job(sharing[1], CUDA_QUEUES, "cuda",
                                  capacity=on_gpu("GPU-a", total, reserve))
    assert [first.id, second.id] == [jobs[0]["id"], jobs[1]["id"]]
    assert store.claim_next_job(sharing[2], CUDA_QUEUES, "cuda",
                                capacity=on_gpu("GPU-a", total, reserve)) is None
    # The third job says why it waits, though the workers' beats still show an idle GPU.
    reason = client.get(f"/jobs/{jobs[2]['id']}").json()["queue"]["reason"]
    assert reason["code"] == "gpu_memory", reason
    assert "after the jobs running on it" in reason["message"]
    # GET /workers names each worker's GPUs.
    shown = {w["name"]: w for w in client.get("/workers").json()["items"]}
    assert shown["gpu-a0"]["gpu_ids"] == ["GPU-a"]

    # A worker on another GPU takes it at once...
    other = gpu_worker(store, "gpu-b0", free=total, gpu_ids=["GPU-b"], total=total)
    assert client.get(f"/jobs/{jobs[2]['id']}").json()["queue"]["reason"]["code"] == "next"
    # ...but one on GPU A does once a job there has ended.
    assert store.finish_job(first.id, "succeeded")
    claimed = store.claim_next_job(sharing[2], CUDA_QUEUES, "cuda",
                                   capacity=on_gpu("GPU-a", total, reserve))
    assert claimed.id == jobs[2]["id"]
    assert store.claim_next_job(other, CUDA_QUEUES, "cuda",
                                capacity=on_gpu("GPU-b", total, reserve)) is None


def test_a_worker_on_two_gpus_counts_the_jobs_on_either(client, store, api_settings):
    jobs = [submit(client, device="cuda") for _ in range(2)]
    need = jobs[0]["memory_bytes"]
    reserve = api_settings.gpu_memory_reserve_bytes
    total = need + reserve  # room for one job
    alone = gpu_worker(store, "gpu-c", gpu_ids=["GPU-c"], total=total)
    pair = gpu_worker(store, "gpu-cd", gpus=2, gpu_ids=["GPU-c", "GPU-d"], total=total)
    assert store.claim_next_job(alone, CUDA_QUEUES, "cuda",
                                capacity=on_gpu("GPU-c", total, reserve)).id == jobs[0]["id"]
    assert store.claim_next_job(pair, CUDA_QUEUES, "cuda",
                                capacity=on_gpu(("GPU-c", "GPU-d"), total, reserve)) is None


def test_concurrent_claims_on_one_gpu_never_overcommit_it(client, store, api_settings):
    """Six processes on one GPU claim at the same moment, each from the same measure of an
    idle GPU: exactly as many jobs as fit are taken (PostgreSQL claims run concurrently; the
    per-GPU lock makes them take turns)."""
    jobs = [submit(client, device="cuda") for _ in range(6)]
    need = jobs[0]["memory_bytes"]
    reserve = api_settings.gpu_memory_reserve_bytes
    total = 2 * (need + reserve)
    names = [gpu_worker(store, f"gpu-e{i}", free=total, gpu_ids=["GPU-e"], total=total)
             for i in range(6)]
    start = threading.Barrier(len(names))
    claimed, errors = [], []

    def claim(name: str) -> None:
        try:
            start.wait(10)
            job = store.claim_next_job(name, CUDA_QUEUES, "cuda",
                                       capacity=on_gpu("GPU-e", total, reserve))
            if job is not None:
                claimed.append(job.id)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert sorted(claimed) == [jobs[0]["id"], jobs[1]["id"]]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_worker_without_cuda_names_no_gpu_and_has_no_memory_to_count(store):
    has = gpus.capacity(CUDA_QUEUES, reserve_bytes=GIB)
    assert has.gpu_ids == () and has.free_memory_bytes is None
    assert has.total_memory_bytes is None
    PresenceBeat(store, "cpu-w", CUDA_QUEUES, interval=5, forget_after=60).tick()
    assert store.get_worker("cpu-w", lease_seconds=30).gpu_ids == ()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_worker_names_its_gpus_and_their_memory(store):
    has = gpus.capacity(CUDA_QUEUES, reserve_bytes=GIB)
    count = torch.cuda.device_count()
    assert len(set(has.gpu_ids)) == count and all(has.gpu_ids)
    smallest = min(torch.cuda.get_device_properties(i).total_memory for i in range(count))
    assert has.total_memory_bytes == smallest - GIB and has.reserve_bytes == GIB
    PresenceBeat(store, "gpu-w", CUDA_QUEUES, interval=5, forget_after=60).tick()
    assert store.get_worker("gpu-w", lease_seconds=30).gpu_ids == has.gpu_ids


def cuda_job(store, memory: int) -> int:
    return store.create_job("mlp", "digits", HP, device="cuda", memory_bytes=memory).id


def backdate_memory_wait(store, job_id: int, seconds: float) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id).values(
            memory_wait_since=utcnow() - dt.timedelta(seconds=seconds)))


def test_a_job_first_in_line_waiting_for_memory_holds_its_gpu_once_backfill_time_is_up(
        client, store, api_settings):
    reserve, small, big = api_settings.gpu_memory_reserve_bytes, GIB // 4, 4 * GIB
    total = big + reserve  # the big job fits this GPU alone
    window = api_settings.gpu_backfill_seconds
    workers = [gpu_worker(store, f"gpu-x{i}", free=total, gpu_ids=["GPU-x"], total=total)
               for i in range(3)]
    running = cuda_job(store, small)
    assert store.claim_next_job(workers[0], CUDA_QUEUES, "cuda",
                                capacity=on_gpu("GPU-x", total, reserve),
                                backfill_seconds=window).id == running
    huge = cuda_job(store, 64 * GIB)  # fits no GPU here: waits, and holds nothing back
    first, behind = cuda_job(store, big), [cuda_job(store, small) for _ in range(3)]

    # The big job does not fit beside the running one: a small one behind it starts first
    # (backfill), and the big job's wait is on record and in its queue reason.
    assert store.claim_next_job(workers[1], CUDA_QUEUES, "cuda",
                                capacity=on_gpu("GPU-x", total, reserve),
                                backfill_seconds=window).id == behind[0]
    assert store.get_job(first).memory_wait_since is not None
    reason = client.get(f"/jobs/{first}").json()["queue"]["reason"]
    assert reason["code"] == "gpu_memory", reason
    assert "may start first for another" in reason["message"]

    # Past the backfill time, the GPU takes no job behind it...
    backdate_memory_wait(store, first, window + 1)
    assert store.claim_next_job(workers[2], CUDA_QUEUES, "cuda",
                                capacity=on_gpu("GPU-x", total, reserve),
                                backfill_seconds=window) is None
    assert "take no job behind it" in client.get(f"/jobs/{first}").json()["queue"]["reason"][
        "message"]
    # The jobs behind it say why they wait though they would fit.
    reason = client.get(f"/jobs/{behind[1]}").json()["queue"]["reason"]
    assert reason["code"] == "gpu_held", reason
    assert f"job {first}, ahead of it, has waited" in reason["message"]
    # ...while a GPU too small for the big job still takes small ones.
    small_gpu = gpu_worker(store, "gpu-y0", free=GIB + reserve, gpu_ids=["GPU-y"],
                           total=GIB + reserve)
    assert client.get(f"/jobs/{behind[1]}").json()["queue"]["reason"]["code"] != "gpu_held"
    assert store.claim_next_job(small_gpu, CUDA_QUEUES, "cuda",
                                capacity=on_gpu("GPU-y", GIB + reserve, reserve),
                                backfill_seconds=window).id == behind[1]

    # Once the GPU's jobs have ended, the big job starts there, and its wait is cleared.
    assert store.finish_job(running, "succeeded")
    assert store.finish_job(behind[0], "succeeded")
    claimed = store.claim_next_job(workers[2], CUDA_QUEUES, "cuda",
                                   capacity=on_gpu("GPU-x", total, reserve),
                                   backfill_seconds=window)
    assert claimed.id == first and claimed.memory_wait_since is None
    assert store.get_job(huge).status == "queued" and store.get_job(huge).memory_wait_since is None


def test_a_job_that_would_not_fit_even_on_a_drained_gpu_holds_nothing_back(store,
                                                                           api_settings):
    reserve, total = api_settings.gpu_memory_reserve_bytes, 8 * GIB
    name = gpu_worker(store, "gpu-z0", free=total, gpu_ids=["GPU-z"], total=total)
    too_big = cuda_job(store, 16 * GIB)  # waits for a bigger GPU
    held_elsewhere = cuda_job(store, 6 * GIB)  # fits the GPU, not what others' processes left
    small = cuda_job(store, GIB // 4)
    backdate_memory_wait(store, too_big, 10_000)
    backdate_memory_wait(store, held_elsewhere, 10_000)
    # Processes that are not ours hold all but 2 GiB: draining our jobs would not help.
    foreign = replace(on_gpu("GPU-z", total, reserve), free_memory_bytes=2 * GIB - reserve)
    claimed = store.claim_next_job(name, CUDA_QUEUES, "cuda", capacity=foreign,
                                   backfill_seconds=0)
    assert claimed.id == small
    assert store.get_job(held_elsewhere).status == "queued"

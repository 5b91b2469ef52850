"""How `trainyard worker --jobs N` shares a host's GPUs and cores between its processes."""

from __future__ import annotations

import os

import pytest
import torch

from trainyard.worker_pool import child_env, child_name, plan_gpus
from worker.gpus import is_out_of_memory, out_of_memory_message


def test_at_least_as_many_gpus_as_jobs_gives_each_its_own_group():
    assert plan_gpus(2, ["0", "1", "2", "3"]) == [["0", "1"], ["2", "3"]]
    assert plan_gpus(3, ["0", "1", "2", "3"]) == [["0", "1"], ["2"], ["3"]]
    assert plan_gpus(1, ["0", "1"]) == [["0", "1"]]


def test_more_jobs_than_gpus_share_them_round_robin():
    assert plan_gpus(4, ["0", "1"]) == [["0"], ["1"], ["0"], ["1"]]
    assert plan_gpus(3, ["5"]) == [["5"], ["5"], ["5"]]


def test_no_gpu_means_cpu_processes_with_a_share_of_the_cores():
    assert plan_gpus(2, []) == [[], []]
    env = child_env([], jobs=2, has_gpus=False, torch_threads=0)
    assert env["TRAINYARD_TORCH_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert "CUDA_VISIBLE_DEVICES" not in env or env["CUDA_VISIBLE_DEVICES"] == os.environ.get(
        "CUDA_VISIBLE_DEVICES")
    gpu_env = child_env(["2", "3"], jobs=2, has_gpus=True, torch_threads=4)
    assert gpu_env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert gpu_env["TRAINYARD_SUPERVISED"] == "1"


def test_jobs_must_be_positive():
    with pytest.raises(ValueError):
        plan_gpus(0, ["0"])


def test_child_names_keep_the_host_part():
    assert child_name("pool@%h", 1) == "pool-1@%h"
    assert child_name("w", 0) == "w-0"


def test_a_cuda_out_of_memory_is_told_as_such():
    exc = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert is_out_of_memory(exc)
    message = out_of_memory_message(exc)
    assert message.startswith("CUDA out of memory: the job needed more GPU memory")
    assert "Tried to allocate 2.00 GiB" in message and "batch_size" in message
    assert not is_out_of_memory(ValueError("bad"))

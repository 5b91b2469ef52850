"""Real training runs whose checkpoints tests store under jobs they submit over HTTP, as a
worker would: the tests of predict, generate, export and look inside use networks that really
learned, without a worker in the loop. Each run is trained once per test session."""

from __future__ import annotations

import functools
import json
from typing import Any

from models.train import Callbacks, JobSpec, fit

Checkpoint = tuple[int, int, bytes, dict]  # epoch, step, bytes, metrics


class _Taken(Callbacks):
    def __init__(self) -> None:
        self.taken: list[Checkpoint] = []

    def on_checkpoint(self, epoch, step, blob, metrics):
        self.taken.append((epoch, step, blob, dict(metrics)))


@functools.cache
def _train(model: str, dataset: str, hp_json: str) -> tuple[Checkpoint, ...]:
    taken = _Taken()
    fit(JobSpec(model, dataset, json.loads(hp_json), "cpu"), taken)
    return tuple(taken.taken)


def checkpoints_of(model: str, dataset: str, hp: dict[str, Any]) -> list[Checkpoint]:
    """The (epoch, step, bytes, metrics) of every checkpoint of a CPU run of this job."""
    return list(_train(model, dataset, json.dumps(hp, sort_keys=True)))


def submit_with_checkpoints(client, store, model: str, dataset: str, hp: dict[str, Any],
                            checkpoints: list[Checkpoint], headers: dict | None = None
                            ) -> tuple[dict, list]:
    """A job submitted over HTTP with these settings, and `checkpoints` stored under it as its
    worker would store them: (the job as the API answered, the CheckpointRecords)."""
    response = client.post("/jobs", json={"model": model, "dataset": dataset,
                                          "hyperparameters": hp}, headers=headers or {})
    assert response.status_code == 201, response.text
    job = response.json()
    records = [store.add_checkpoint(job["id"], epoch=e, step=s, data=b, metrics=m)
               for e, s, b, m in checkpoints]
    return job, records

"""A job's log loses no line when its database goes away under a running job and comes back
(real processes: uvicorn, a Celery worker, Redis, and a Postgres server of the test's own that
is stopped and started). Lines logged while the database was down are written once it is back,
in order with the epochs and checkpoints they tell of."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from db.store import Store
from trainyard.local_service import LocalService, free_port

pytestmark = pytest.mark.e2e

ENV = {
    "TRAINYARD_LEASE_SECONDS": "3",
    "TRAINYARD_HEARTBEAT_SECONDS": "0.5",
    "TRAINYARD_RECONCILE_SECONDS": "0.5",
    "TRAINYARD_METRICS_FLUSH_SECONDS": "0.1",
    "TRAINYARD_CANCEL_CHECK_SECONDS": "0.2",
    "TRAINYARD_TORCH_THREADS": "1",
}
EPOCHS = 24
# ~8 ms a step on one core: 45 steps (an epoch) of digits
SLOW_MLP = {"epochs": EPOCHS, "hidden_sizes": [1024, 1024], "batch_size": 32, "seed": 7}


def test_no_log_line_is_lost_while_the_database_restarts(tmp_path, own_postgres, redis_url):
    service = LocalService(tmp_path, {"TRAINYARD_DATABASE_URL": own_postgres.url,
                                      "TRAINYARD_BROKER_URL": redis_url, **ENV}, free_port())
    store = Store(own_postgres.url)
    try:
        service.start("api", "api", "--port", str(service.port))
        service.start("worker", "worker", "--name", "w@%h")
        service.wait_healthy()
        job = service.http.post("/jobs", json={"model": "mlp", "dataset": "digits",
                                               "hyperparameters": SLOW_MLP}).json()
        service.wait_for(lambda: len(store.list_checkpoints(job["id"])) >= 2, "training", 90)
        store.engine.dispose()
        own_postgres.stop()
        down_at = dt.datetime.now(dt.UTC)
        time.sleep(6)  # twice the lease: the worker trains on, its writes wait
        up_at = dt.datetime.now(dt.UTC)
        own_postgres.start()
        done = service.wait_status(job["id"], {"succeeded", "failed"}, timeout=180)
        assert done["status"] == "succeeded", done.get("error")
        assert done["attempts"] == 1
        lines = service.http.get(f"/jobs/{job['id']}/logs",
                                 params={"limit": 5000}).json()["lines"]
    except BaseException:
        print(service.logs())
        raise
    finally:
        service.stop()
        store.close()
    said = [line["message"] for line in lines]
    # every epoch and checkpoint told exactly once, in order: none lost, none doubled
    epochs = [m for m in said if " done at step " in m]
    assert [m.split("/")[0] for m in epochs] == [f"epoch {k}" for k in range(1, EPOCHS + 1)]
    written = [m for m in said if "checkpoint written at epoch" in m]
    assert len(written) == EPOCHS
    assert [line["id"] for line in lines] == sorted(line["id"] for line in lines)
    times = [dt.datetime.fromisoformat(line["time"]) for line in lines]
    assert times == sorted(times)
    during = [m for m, t in zip(said, times) if down_at < t < up_at]
    assert any("done at step" in m for m in during), \
        "epochs were logged while the database was down, and written once it was back"
    assert f"job {job['id']} succeeded" in said[-1]

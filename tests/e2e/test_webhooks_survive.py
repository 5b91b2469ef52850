"""A webhook delivery survives the loss of every process: real `trainyard api` and `trainyard
worker` processes on Postgres and Redis run a job; the receiver (a real HTTP server in a
thread) holds the first delivery open while the API and the worker are killed with SIGKILL
mid-delivery. Started again, the service sends the event again once the dead sender's lease
runs out: delivered at least once, every copy with the same event id and a valid signature.
The webhook is registered, and its deliveries read, with the `trainyard webhooks` CLI."""

from __future__ import annotations

import os
import signal

import pytest

from tests.integration.webhook_receiver import Receiver
from trainyard.local_service import LocalService, free_port

pytestmark = pytest.mark.e2e

SECRET = "end-to-end-secret-0123456789"
FAST = {
    "TRAINYARD_LEASE_SECONDS": "3",
    "TRAINYARD_HEARTBEAT_SECONDS": "0.5",
    "TRAINYARD_RECONCILE_SECONDS": "0.5",
    "TRAINYARD_ENQUEUE_GRACE_SECONDS": "2",
    "TRAINYARD_TORCH_THREADS": "1",
    "TRAINYARD_WEBHOOKS_ALLOW_PRIVATE": "1",  # the receiver is on 127.0.0.1
    "TRAINYARD_WEBHOOKS_POLL_SECONDS": "0.2",
    "TRAINYARD_WEBHOOKS_TIMEOUT_SECONDS": "15",
    "TRAINYARD_WEBHOOKS_LEASE_SECONDS": "20",
    "TRAINYARD_WEBHOOKS_RETRY_BASE_SECONDS": "0.2",
}
TINY_MLP = {"epochs": 2, "hidden_sizes": [8, 8], "steps_per_epoch": 3}


def start_all(service: LocalService, round_: int) -> None:
    service.start(f"api-{round_}", "api", "--port", str(service.port))
    service.start(f"worker-{round_}", "worker", "--name", f"w-{round_}@%h")
    service.wait_healthy()


def kill_all(service: LocalService) -> None:
    for proc in service.processes.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_delivery_survives_every_process_killed_mid_send(tmp_path, fresh_postgres_url,
                                                           redis_url):
    service = LocalService(tmp_path, {"TRAINYARD_DATABASE_URL": fresh_postgres_url,
                                      "TRAINYARD_BROKER_URL": redis_url, **FAST}, free_port())
    # The first request is held (never answered in time) while everything is killed.
    with Receiver(statuses=(200,), hold_first=40) as receiver:
        try:
            start_all(service, 1)
            added = service.cli("webhooks", "add", receiver.url, "--events",
                                "job.succeeded,job.failed", "--secret", SECRET)
            assert added.returncode == 0, added.stderr
            hook_id = int(added.stdout.split()[1])
            submitted = service.http.post("/jobs", json={
                "model": "mlp", "dataset": "digits", "device": "cpu",
                "hyperparameters": TINY_MLP})
            assert submitted.status_code in (200, 201), submitted.text
            job_id = submitted.json()["id"]

            assert receiver.arrived.wait(120), service.logs()  # a sender is mid-delivery
            kill_all(service)
            assert len(receiver.requests) == 1
            service.http.close()  # its connections point at a dead server
            service.processes.clear()
            service.http = type(service.http)(base_url=service.url, timeout=30)
            start_all(service, 2)

            service.wait_for(lambda: len(receiver.requests) >= 2,
                             "the event sent again after the restart", 90)
            deliveries = service.wait_for(
                lambda: (d := service.http.get(f"/webhooks/{hook_id}/deliveries").json())
                and d[0]["status"] == "delivered" and d, "the delivery recorded", 30)
            events = receiver.events(SECRET)  # every copy signed
            assert {e["id"] for e in events} == {deliveries[0]["event_id"]}  # one event
            assert {e["type"] for e in events} == {"job.succeeded"}
            assert events[0]["data"]["id"] == job_id
            assert events[0]["data"]["status"] == "succeeded"
            assert deliveries[0]["attempts"] >= 2 and len(deliveries) == 1

            shown = service.cli("webhooks", "deliveries", str(hook_id))
            assert shown.returncode == 0 and "delivered" in shown.stdout, shown
            assert str(deliveries[0]["event_id"]) in shown.stdout
        except BaseException:
            print(service.logs())
            raise
        finally:
            service.stop()

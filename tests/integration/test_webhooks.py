"""Webhooks on a real database (SQLite and Postgres) with the real runner and sender: events of
real job runs delivered, signed, to a real HTTP server in a thread; retried after a 500; given
up after the retry window; the lease; the outbox row written by the transition itself."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text

from api.main import create_app
from core.settings import Settings
from tests.integration.webhook_receiver import Receiver
from worker.runner import JobRunner
from worker.webhook_sender import WebhookSender

TINY_MLP = {"epochs": 2, "hidden_sizes": [8, 8], "steps_per_epoch": 3, "seed": 1}
SECRET = "s3cret-for-the-tests-0123456789"
ALL_JOB_EVENTS = ["job.started", "job.succeeded", "job.failed", "job.cancelled"]


def fast_settings(tmp_path: Path, **extra) -> Settings:
    return Settings(home=tmp_path, metrics_flush_seconds=0.05, cancel_check_seconds=0.0,
                    webhooks_allow_private=True, webhooks_retry_base_seconds=0.05,
                    webhooks_retry_max_seconds=0.2, webhooks_timeout_seconds=5,
                    webhooks_lease_seconds=10, **extra)


def send_until(store, settings, done, timeout: float = 20.0) -> None:
    """Run a sender's passes (as its thread does) until `done()` holds."""
    sender = WebhookSender(store, settings)
    try:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "not delivered in time"
            sender.send_due()
            time.sleep(0.05)
    finally:
        sender.stop()


def test_a_real_run_is_delivered_signed_and_only_to_its_owner(store, tmp_path):
    settings = fast_settings(tmp_path)
    with Receiver() as receiver, Receiver() as other:
        hook = store.create_webhook("alice", receiver.url, ALL_JOB_EVENTS, SECRET)
        store.create_webhook("bob", other.url, ALL_JOB_EVENTS, SECRET)
        job = store.create_job(model="mlp", dataset="digits", hyperparameters=TINY_MLP,
                               device="cpu", owner="alice")
        assert JobRunner(store, settings, worker_name="w1").run(job.id) == "succeeded"
        send_until(store, settings, lambda: len(receiver.requests) >= 2)
        events = receiver.events(SECRET)  # every signature checked
        # sent concurrently: no order between them (documented), so found by type
        by_type = {e["type"]: e for e in events}
        assert sorted(by_type) == ["job.started", "job.succeeded"]
        done = by_type["job.succeeded"]["data"]
        assert (done["id"], done["owner"], done["model"], done["status"]) == (
            job.id, "alice", "mlp", "succeeded")
        assert done["error"] is None and done["finished_at"] is not None
        assert 0.0 <= done["best_metrics"]["val_accuracy"] <= 1.0
        assert len({e["id"] for e in events}) == 2
        assert other.requests == []  # bob's webhook hears nothing of alice's jobs
        deliveries = store.list_webhook_deliveries(hook.id)
        assert [(d.event_type, d.status, d.attempts, d.last_status_code) for d in deliveries
                ] == [("job.succeeded", "delivered", 1, 200), ("job.started", "delivered", 1,
                                                                200)]


def test_a_failed_job_is_delivered_with_its_error(store, tmp_path):
    settings = fast_settings(tmp_path)
    with Receiver() as receiver:
        store.create_webhook("local", receiver.url, ["job.failed"], SECRET)
        job = store.create_job(model="mlp", dataset="no-such-dataset",
                               hyperparameters=TINY_MLP, device="cpu")
        assert JobRunner(store, settings, worker_name="w1").run(job.id) == "failed"
        send_until(store, settings, lambda: receiver.requests)
        [failed] = receiver.events(SECRET)
        assert failed["type"] == "job.failed" and "no-such-dataset" in failed["data"]["error"]


def test_a_500_is_retried_with_backoff_and_delivered_once_the_receiver_recovers(store,
                                                                                   tmp_path):
    settings = fast_settings(tmp_path)
    with Receiver(statuses=(500, 503, 200)) as receiver:
        hook = store.create_webhook("local", receiver.url, ["job.cancelled"], SECRET)
        job = store.create_job(model="mlp", dataset="digits", hyperparameters=TINY_MLP)
        store.cancel_job(job.id)
        send_until(store, settings, lambda: store.list_webhook_deliveries(hook.id)[0].status
                   == "delivered")
        events = receiver.events(SECRET)
        assert len(events) == 3 and len({e["id"] for e in events}) == 1  # one event, 3 tries
        [delivery] = store.list_webhook_deliveries(hook.id)
        assert (delivery.attempts, delivery.last_status_code, delivery.last_error) == (
            3, 200, None)


def test_retries_stop_after_the_retry_window(store, tmp_path):
    settings = fast_settings(tmp_path, webhooks_retry_for_seconds=0.4)
    with Receiver(statuses=(500,)) as receiver:
        hook = store.create_webhook("local", receiver.url, ["job.cancelled"], SECRET)
        store.cancel_job(store.create_job(model="mlp", dataset="digits",
                                          hyperparameters=TINY_MLP).id)
        send_until(store, settings, lambda: store.list_webhook_deliveries(hook.id)[0].status
                   == "failed")
        [delivery] = store.list_webhook_deliveries(hook.id)
        assert delivery.attempts == len(receiver.requests) >= 2
        assert delivery.last_status_code == 500 and delivery.last_error == "HTTP 500"


def test_a_claim_is_a_lease_another_sender_takes_once_it_runs_out(store):
    hook = store.create_webhook("local", "http://example.com/", ["job.cancelled"], SECRET)
    store.cancel_job(store.create_job(model="mlp", dataset="digits",
                                      hyperparameters=TINY_MLP).id)
    [held] = store.claim_webhook_deliveries(10, lease_seconds=0.5)
    assert store.claim_webhook_deliveries(10, lease_seconds=0.5) == []  # held by the first
    time.sleep(0.6)  # the first sender died mid-send: its lease runs out
    [again] = store.claim_webhook_deliveries(10, lease_seconds=30)
    assert (again.id, again.event_id, again.attempts) == (held.id, held.event_id, 2)
    # The dead sender's late failure is not recorded over the new claim; a success would be.
    assert not store.finish_webhook_delivery(held, delivered=False, error="x",
                                             retry_at=None)
    assert store.finish_webhook_delivery(again, delivered=True, status_code=204)
    assert store.list_webhook_deliveries(hook.id)[0].status == "delivered"
    # Old finished deliveries are pruned; recent ones stay.
    assert store.prune_webhook_deliveries(older_than_seconds=3600) == 0
    with store.engine.begin() as conn:  # its last attempt was long ago
        conn.execute(text("UPDATE webhook_deliveries SET next_attempt_at = :t"),
                     {"t": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)})
    assert store.prune_webhook_deliveries(older_than_seconds=3600) == 1
    assert store.list_webhook_deliveries(hook.id) == []


def test_the_outbox_row_is_the_transitions_and_costs_one_query_without_webhooks(store):
    job = store.create_job(model="mlp", dataset="digits", hyperparameters=TINY_MLP)
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        store.cancel_job(job.id)
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    assert sum("webhook" in s for s in seen) == 1  # the owner has none: one indexed seek
    # With a webhook, the delivery is there as soon as the change is; and a deleted job's
    # delivery keeps its payload (no foreign key to jobs).
    hook = store.create_webhook("local", "http://example.com/", ["job.cancelled"], SECRET)
    other = store.create_job(model="mlp", dataset="digits", hyperparameters=TINY_MLP)
    store.cancel_job(other.id)
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM job_attempts WHERE job_id = :id"), {"id": other.id})
        conn.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": other.id})
    [claimed] = store.claim_webhook_deliveries(10, lease_seconds=30)
    assert claimed.payload["data"]["id"] == other.id
    assert claimed.payload["data"]["status"] == "cancelled"
    assert store.list_webhook_deliveries(hook.id)[0].subject == f"job:{other.id}"


def test_a_cancelled_sweep_tells_of_its_trials_and_its_end(store):
    hook = store.create_webhook("local", "http://example.com/", ["job.cancelled",
                                                               "sweep.finished"], SECRET)
    sweep = store.create_sweep(
        name=None, model="mlp", dataset="digits", hyperparameters={}, space={},
        method="random", objective_metric="val_accuracy", objective_goal="max", max_trials=2,
        max_concurrent=2, early_stopping={"method": "none"}, seed=0, device="cpu", priority=0)
    trial = store.launch_trial(sweep.id, 0, TINY_MLP)
    store.cancel_sweep(sweep.id)
    kinds = sorted((d.event_type, d.subject) for d in store.list_webhook_deliveries(hook.id))
    assert kinds == [("job.cancelled", f"job:{trial.id}"), ("sweep.finished",
                                                             f"sweep:{sweep.id}")]


def test_a_finished_sweep_tells_its_best_trial(store):
    hook = store.create_webhook("local", "http://example.com/", ["sweep.finished",
                                                               "job.succeeded"], SECRET)
    sweep = store.create_sweep(
        name="s", model="mlp", dataset="digits", hyperparameters={}, space={},
        method="random", objective_metric="val_accuracy", objective_goal="max", max_trials=2,
        max_concurrent=2, early_stopping={"method": "none"}, seed=0, device="cpu", priority=0)
    for number, accuracy in ((0, 0.7), (1, 0.9)):
        trial = store.launch_trial(sweep.id, number, TINY_MLP)
        claimed = store.claim_job(trial.id, "w")
        store.add_metrics(trial.id, [("val_accuracy", 3, 1, accuracy - 0.2),
                                     ("val_accuracy", 6, 2, accuracy)])
        store.update_progress(trial.id, 2, 2, 6, 6, 0.0, attempt=claimed.attempts)
        assert store.finish_job(trial.id, "succeeded")
    assert store.finish_sweep(sweep.id, "succeeded")
    assert not store.finish_sweep(sweep.id, "succeeded")  # once: one event
    claimed = {d.event_type: d for d in store.claim_webhook_deliveries(10, 30)
               if d.event_type == "sweep.finished"}
    data = claimed["sweep.finished"].payload["data"]
    assert (data["id"], data["status"], data["trials"]) == (sweep.id, "succeeded",
                                                            {"succeeded": 2})
    assert data["best"]["trial"] == 1 and data["best"]["objective"] == pytest.approx(0.9)
    succeeded = [d for d in store.list_webhook_deliveries(hook.id)
                 if d.event_type == "job.succeeded"]
    assert len(succeeded) == 2


# ---- the HTTP API ----
@pytest.fixture
def hooks_client(store, user_keys, tmp_path):
    settings = Settings(home=tmp_path / "home", broker_url=None, database_url=None,
                        data_dir=tmp_path / "data", reconcile_in_api=False, require_keys=True,
                        webhooks_allow_private=True)
    with TestClient(create_app(settings, store=store), raise_server_exceptions=False) as c:
        yield c


def test_the_api_registers_lists_and_deletes_per_user(hooks_client, user_keys):
    alice, bob = user_keys["alice"], user_keys["bob"]
    made = hooks_client.post("/webhooks", headers=alice, json={
        "url": "http://127.0.0.1:9/hook", "events": ["job.succeeded", "sweep.finished"]})
    assert made.status_code == 201, made.text
    hook = made.json()
    assert len(hook["secret"]) >= 32 and hook["owner"] == "alice"  # generated, shown once
    listed = hooks_client.get("/webhooks", headers=alice).json()
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
    assert hooks_client.get("/webhooks", headers=bob).json() == []
    # Another user's webhook does not exist for them.
    assert hooks_client.get(f"/webhooks/{hook['id']}/deliveries", headers=bob).status_code == 404
    assert hooks_client.delete(f"/webhooks/{hook['id']}", headers=bob).status_code == 404
    assert hooks_client.get(f"/webhooks/{hook['id']}/deliveries", headers=alice).json() == []
    given = hooks_client.post("/webhooks", headers=bob, json={
        "url": "https://127.0.0.1/x", "events": ["job.failed"], "secret": SECRET})
    assert given.json()["secret"] == SECRET
    assert hooks_client.delete(f"/webhooks/{hook['id']}", headers=alice).status_code == 204
    assert hooks_client.get("/webhooks", headers=alice).json() == []


def test_unknown_events_are_a_422_naming_the_allowed_ones(hooks_client, user_keys):
    bad = hooks_client.post("/webhooks", headers=user_keys["alice"], json={
        "url": "http://127.0.0.1:9/", "events": ["job.succeeded", "job.exploded"]})
    assert bad.status_code == 422
    [error] = bad.json()["detail"]
    assert error["loc"][-1] == "events" and "job.exploded" in error["msg"]
    assert "job.succeeded" in error["msg"] and "sweep.finished" in error["msg"]
    empty = hooks_client.post("/webhooks", headers=user_keys["alice"], json={
        "url": "http://127.0.0.1:9/", "events": []})
    assert empty.status_code == 422


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://localhost:8000/x", "http://10.1.2.3/", "http://192.168.0.1/",
    "http://169.254.169.254/latest/meta-data", "http://[::1]/", "http://[::ffff:127.0.0.1]/",
    "http://[fe80::1]/", "http://0.0.0.0/", "http://224.0.0.1/", "http://100.64.0.1/",
    "ftp://example.com/", "file:///etc/passwd", "http://user:pw@example.com/",
])
def test_private_addresses_and_other_schemes_are_refused(client, url):
    # `client`: the keyless app with the default settings (private addresses refused).
    refused = client.post("/webhooks", json={"url": url, "events": ["job.failed"]})
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["detail"]
    assert error["loc"] == ["body", "url"], error


def test_a_public_address_is_accepted(client):
    made = client.post("/webhooks", json={"url": "http://93.184.215.14/hook",
                                          "events": ["job.failed"]})
    assert made.status_code == 201, made.text


def test_the_sender_checks_the_address_again_before_each_send(store, tmp_path):
    # Registered while allowed (or a name that has since been re-pointed at 127.0.0.1: DNS
    # rebinding): with private addresses not allowed, the sender refuses to send.
    settings = fast_settings(tmp_path).model_copy(update={"webhooks_allow_private": False,
                                                          "webhooks_retry_for_seconds": 0.3})
    with Receiver() as receiver:
        hook = store.create_webhook("local", receiver.url.replace("127.0.0.1", "localhost"),
                                    ["job.cancelled"], SECRET)
        store.cancel_job(store.create_job(model="mlp", dataset="digits",
                                          hyperparameters=TINY_MLP).id)
        send_until(store, settings, lambda: store.list_webhook_deliveries(hook.id)[0].status
                   == "failed")
        assert receiver.requests == []
        [delivery] = store.list_webhook_deliveries(hook.id)
        assert delivery.last_error.startswith("refused: ") and "loopback" in delivery.last_error

"""GET /usage on SQLite and Postgres: per user, jobs by status, metric points, checkpoints
and their bytes, uploaded dataset bytes and log lines match what was stored; a user sees only
their own row, an admin every user's (or one with ?owner=)."""

from __future__ import annotations

import pytest

from tests.integration.lifecycle_runs import NAMES, finished_run

pytestmark = pytest.mark.postgres


def _users(answer):
    assert answer.status_code == 200, answer.text
    return {u["owner"]: u for u in answer.json()["users"]}


def test_usage_matches_what_was_stored(keyed_client, store, user_keys):
    finished_run(store, owner="alice", status="succeeded", steps=100, checkpoint_bytes=1000,
                 log_lines=4)
    finished_run(store, owner="alice", status="failed", steps=30, checkpoint_bytes=500,
                 log_lines=2)
    finished_run(store, owner="bob", status="cancelled", steps=10, checkpoint_bytes=7,
                 log_lines=0)
    store.create_job("mlp", "mnist", {"lr": 0.1}, "cpu", owner="alice")
    store.add_dataset("notes", "text", b"hello world " * 100, owner="alice")

    alice = _users(keyed_client.get("/usage", headers=user_keys["alice"]))
    assert list(alice) == ["alice"]  # a user sees only their own row
    row = alice["alice"]
    assert row["jobs"] == {"succeeded": 1, "failed": 1, "queued": 1}
    assert row["jobs_total"] == 3
    assert row["metric_points"] == len(NAMES) * (100 + 30)
    assert (row["checkpoints"], row["checkpoint_bytes"]) == (2, 1500)
    assert (row["datasets"], row["dataset_bytes"]) == (1, 1200)
    assert row["log_lines"] == 6

    assert keyed_client.get("/usage?owner=bob", headers=user_keys["alice"]).status_code == 403
    bob = _users(keyed_client.get("/usage", headers=user_keys["bob"]))["bob"]
    assert (bob["metric_points"], bob["checkpoint_bytes"], bob["log_lines"]) == (30, 7, 0)


def test_an_admin_sees_every_user_or_one(client, store):
    finished_run(store, owner="alice", steps=20)
    finished_run(store, owner="bob", steps=10)
    everyone = _users(client.get("/usage"))  # keyless local access is an admin
    assert set(everyone) == {"alice", "bob"}
    assert everyone["bob"]["metric_points"] == 30
    one = _users(client.get("/usage?owner=alice"))
    assert list(one) == ["alice"] and one["alice"]["metric_points"] == 60
    nobody = _users(client.get("/usage?owner=carol"))
    assert nobody["carol"]["jobs_total"] == 0
    database = client.get("/usage").json()["database"]
    assert (database.get("auto_vacuum") == 2) == (store.dialect == "sqlite")

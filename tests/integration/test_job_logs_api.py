"""GET /jobs/{id}/logs and Client.logs: incremental reads with `after`, validated bounds, and
another user's job answered 404 (SQLite and Postgres)."""

from __future__ import annotations

import datetime as dt

import httpx

from trainyard.client import Client

TINY = {"epochs": 1, "hidden_sizes": [8, 8], "steps_per_epoch": 2}


def add_lines(store, job_id, texts, attempt=1, level="INFO"):
    now = dt.datetime.now(dt.UTC)
    store.add_job_logs(job_id, [(attempt, now, level, "trainyard.worker", t) for t in texts])


def test_reads_are_incremental_from_after(client, store):
    job = store.create_job(model="mlp", dataset="digits", hyperparameters=TINY)
    empty = client.get(f"/jobs/{job.id}/logs")
    assert empty.status_code == 200
    assert empty.json() == {"lines": [], "next_after": 0, "job_status": "queued"}

    add_lines(store, job.id, ["claimed", "data loaded", "<script>alert(1)</script>"])
    first = client.get(f"/jobs/{job.id}/logs", params={"limit": 2}).json()
    assert [line["message"] for line in first["lines"]] == ["claimed", "data loaded"]
    line = first["lines"][0]
    assert set(line) == {"id", "time", "level", "source", "attempt", "message"}
    assert (line["level"], line["source"], line["attempt"]) == ("INFO", "trainyard.worker", 1)
    assert dt.datetime.fromisoformat(line["time"]).tzinfo is not None
    assert first["next_after"] == first["lines"][-1]["id"]

    rest = client.get(f"/jobs/{job.id}/logs", params={"after": first["next_after"]}).json()
    assert [line["message"] for line in rest["lines"]] == ["<script>alert(1)</script>"]
    nothing = client.get(f"/jobs/{job.id}/logs", params={"after": rest["next_after"]}).json()
    assert nothing["lines"] == [] and nothing["next_after"] == rest["next_after"]

    add_lines(store, job.id, ["job succeeded"], attempt=2)
    store.claim_job(job.id, worker="w")
    store.finish_job(job.id, "succeeded")
    last = client.get(f"/jobs/{job.id}/logs", params={"after": rest["next_after"]}).json()
    assert [(x["message"], x["attempt"]) for x in last["lines"]] == [("job succeeded", 2)]
    assert last["job_status"] == "succeeded"


def test_after_and_limit_are_validated_naming_the_field(client, store):
    job = store.create_job(model="mlp", dataset="digits", hyperparameters=TINY)
    for params, field, words in (({"after": -1}, "after", "greater than or equal to 0"),
                                 ({"limit": 0}, "limit", "greater than or equal to 1"),
                                 ({"limit": 5001}, "limit", "less than or equal to 5000"),
                                 ({"after": 2**63}, "after", "less than or equal to"),
                                 ({"after": "x"}, "after", "integer")):
        answer = client.get(f"/jobs/{job.id}/logs", params=params)
        assert answer.status_code == 422, params
        detail = answer.json()["detail"][0]
        assert detail["loc"] == ["query", field] and words in detail["msg"], detail
    assert client.get("/jobs/999999/logs").status_code == 404


def test_another_users_job_log_is_a_404(keyed_client, store, user_keys):
    job = store.create_job(model="mlp", dataset="digits", hyperparameters=TINY, owner="alice")
    add_lines(store, job.id, ["alice's secret line"])
    mine = keyed_client.get(f"/jobs/{job.id}/logs", headers=user_keys["alice"])
    assert mine.status_code == 200
    assert [x["message"] for x in mine.json()["lines"]] == ["alice's secret line"]
    theirs = keyed_client.get(f"/jobs/{job.id}/logs", headers=user_keys["bob"])
    assert theirs.status_code == 404 and "secret" not in theirs.text
    assert keyed_client.get(f"/jobs/{job.id}/logs").status_code == 401


def test_client_logs_follows_with_after(client, store):
    job = store.create_job(model="mlp", dataset="digits", hyperparameters=TINY)
    add_lines(store, job.id, ["one", "two"])
    sdk = Client("http://127.0.0.1:8000")
    sdk._http = httpx.Client(transport=client._transport, base_url="http://127.0.0.1:8000")
    page = sdk.logs(job.id)
    assert [x["message"] for x in page["lines"]] == ["one", "two"]
    add_lines(store, job.id, ["three"])
    later = sdk.logs(job.id, after=page["next_after"])
    assert [x["message"] for x in later["lines"]] == ["three"]

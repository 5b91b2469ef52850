"""`trainyard delete` and `trainyard usage` against `trainyard up` (real API, worker and
broker processes on SQLite): runs trained by the real worker are deleted by id and by filter
(dry run first, refused without --yes off a terminal), a running one is refused until
cancelled, and usage counts what is stored before and after."""

from __future__ import annotations

import pytest

from trainyard.client import Client

pytestmark = pytest.mark.e2e

SMALL = {"epochs": 1, "hidden_sizes": [16, 16], "seed": 1}
LONG = {"epochs": 50, "hidden_sizes": [16, 16], "seed": 1}


def test_cli_deletes_by_id_and_by_filter_and_shows_usage(embedded_service):
    service = embedded_service
    with Client(service.url) as client:
        jobs = [client.submit("mlp", "digits", {**SMALL, "lr": lr}, device="cpu")
                for lr in (0.01, 0.02, 0.03)]
        for job in jobs:
            done = client.wait(job["id"], timeout=240)
            assert done["status"] == "succeeded", done.get("error")
        before = client.usage()["users"][0]
        assert before["owner"] == "local" and before["jobs"]["succeeded"] == 3
        assert before["metric_points"] > 0 and before["checkpoint_bytes"] > 0

        usage = service.cli("usage")
        assert usage.returncode == 0, usage.stderr
        assert "local" in usage.stdout and "database file" in usage.stdout

        first = jobs[0]["id"]
        deleted = service.cli("delete", str(first))
        assert deleted.returncode == 0, deleted.stderr
        assert f"deleted job {first}" in deleted.stdout
        again = service.cli("delete", str(first))
        assert again.returncode == 2 and "404" in again.stderr

        long = client.submit("mlp", "digits", LONG, device="cpu")
        service.wait_for(lambda: client.job(long["id"])["status"] == "running", "running")
        refused = service.cli("delete", str(long["id"]))
        assert refused.returncode == 2 and "cancel it first" in refused.stderr

        dry = service.cli("delete", "--status", "succeeded", "--model", "mlp", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "2 finished jobs match; 2 can be deleted" in dry.stdout
        unasked = service.cli("delete", "--status", "succeeded")  # stdin is no terminal
        assert unasked.returncode == 1 and "--yes" in unasked.stderr
        assert client.job(jobs[1]["id"])["status"] == "succeeded"
        bulk = service.cli("delete", "--status", "succeeded", "--older-than", "0", "--yes")
        assert bulk.returncode == 0, bulk.stderr
        assert "deleted 2 jobs" in bulk.stdout

        client.cancel(long["id"])
        service.wait_for(lambda: client.job(long["id"])["status"] == "cancelled", "cancelled")
        assert service.cli("delete", str(long["id"])).returncode == 0
        assert client.usage()["users"] == []  # nothing stored by anyone any more
        assert client.jobs()["total"] == 0

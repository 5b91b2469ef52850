"""Security with real processes: a public bind that requires keys, pickle on the broker, secrets.

`trainyard api --host 0.0.0.0` and a Celery worker on Postgres and Redis. The database URL
carries a password (the test server trusts local connections, so any password connects) and
the admin key comes from TRAINYARD_ADMIN_KEY, as in compose. After a session of normal use,
failures and wrong keys, neither secret may appear in any log, any HTTP answer or any job record.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
import time

import httpx
import pytest
from sqlalchemy import make_url, text

from db.store import Store
from trainyard.local_service import LocalService, free_port
from core.settings import Settings
from worker.celery_app import RUN_JOB_TASK, make_celery, queue_for_device

pytestmark = pytest.mark.e2e

TINY = {"epochs": 1, "hidden_sizes": [16, 16], "steps_per_epoch": 3}


class TouchOnUnpickle:
    """What an attacker would put on the broker: unpickling it runs a shell command."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def test_public_bind_keys_pickle_and_secrets(tmp_path, fresh_postgres_url, redis_url):
    db_password = "dbpw-" + secrets.token_hex(8)
    database_url = make_url(fresh_postgres_url).set(password=db_password).render_as_string(
        hide_password=False)
    admin_key = "adm-" + secrets.token_urlsafe(32)
    service = LocalService(tmp_path, {"TRAINYARD_DATABASE_URL": database_url,
                                      "TRAINYARD_BROKER_URL": redis_url,
                                      "TRAINYARD_ADMIN_KEY": admin_key,
                                      "TRAINYARD_METRICS_FLUSH_SECONDS": "0.1"}, free_port())
    answers: list[str] = []

    def call(method: str, path: str, key: str | None = None, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = service.http.request(method, path, headers=headers, **kwargs)
        answers.append(f"{response.status_code} {response.headers} {response.text}")
        return response

    try:
        # Without any key, a public bind is refused (and says how to fix it).
        env_without_admin = {k: v for k, v in service.env.items() if k != "TRAINYARD_ADMIN_KEY"}
        refused = subprocess.run(
            [sys.executable, "-m", "trainyard", "api", "--host", "0.0.0.0",
             "--port", str(service.port)],
            env=env_without_admin, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0
        assert "trainyard keys create" in refused.stdout + refused.stderr
        answers.append(refused.stdout + refused.stderr)

        service.start("api", "api", "--host", "0.0.0.0", "--port", str(service.port))
        # cuda too: the cuda job below fails on this CPU machine, with an error text to check
        service.start("worker", "worker", "--name", "sec-worker@%h", "--queues", "cpu,cuda,auto")
        service.wait_healthy()
        created = service.cli("keys", "create", "--name", "alice")
        assert created.returncode == 0, created.stderr
        alice = created.stdout.strip().splitlines()[-1]
        assert alice.startswith("ty_")
        listed = service.cli("keys", "list")
        assert "alice" in listed.stdout and alice not in listed.stdout

        # Keys are required; the admin key from the environment works.
        assert call("GET", "/jobs").status_code == 401
        assert call("GET", "/jobs", "ty_wrong-" + admin_key[::-1]).status_code == 401
        assert call("GET", "/auth/session", admin_key).json()["is_admin"] is True

        # A pickle message on the broker is refused by the worker, never unpickled.
        marker = tmp_path / "pwned"
        settings = Settings(broker_url=redis_url, home=tmp_path / "sender")
        sender = make_celery(settings)
        try:
            sender.send_task(RUN_JOB_TASK, args=[TouchOnUnpickle(str(marker))],
                             queue=queue_for_device("cpu"), serializer="pickle")
        finally:
            sender.close()

        # Normal use after it: the worker is alive and consuming; a job that fails; bad input.
        ok = call("POST", "/jobs", alice, json={"model": "mlp", "dataset": "digits",
                                                "hyperparameters": TINY})
        assert ok.status_code == 201, ok.text
        bad = call("POST", "/jobs", alice, json={"model": "mlp", "dataset": "digits",
                                                 "device": "cuda", "hyperparameters": TINY})
        assert bad.status_code == 201
        assert call("POST", "/jobs", alice, json={"model": "mlp", "dataset": "nope"}
                    ).status_code == 422
        signed = call("POST", "/auth/session", json={"key": alice})
        assert signed.status_code == 201
        service.http.cookies.clear()
        for job_id, want in ((ok.json()["id"], "succeeded"), (bad.json()["id"], "failed")):
            deadline = time.monotonic() + 120
            while True:
                job = call("GET", f"/jobs/{job_id}", alice).json()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    break
                assert time.monotonic() < deadline, service.logs()
                time.sleep(0.3)
            assert job["status"] == want, job
        call("GET", f"/jobs/{ok.json()['id']}/metrics", alice)
        # the CLI sends TRAINYARD_API_KEY; without it, it says what is missing
        def cli_list(env):
            return subprocess.run([sys.executable, "-m", "trainyard", "list"], env=env,
                                  capture_output=True, text=True, timeout=60)

        signed_in = cli_list({**service.env, "TRAINYARD_API_KEY": alice})
        assert signed_in.returncode == 0 and "succeeded" in signed_in.stdout, signed_in.stderr
        anonymous = cli_list({k: v for k, v in service.env.items() if k != "TRAINYARD_API_KEY"})
        assert anonymous.returncode != 0 and "API key" in anonymous.stderr
        answers.extend([signed_in.stdout + signed_in.stderr, anonymous.stdout + anonymous.stderr])

        assert not marker.exists(), "the pickle payload ran on the worker"
        worker_log = (tmp_path / "worker.log").read_text(errors="replace")
        assert "pickle" in worker_log and "untrusted" in worker_log.lower(), worker_log[-3000:]
    finally:
        service.stop()

    # Neither secret anywhere: logs, answers, job records.
    logs = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("*.log"))
    with Store(fresh_postgres_url) as store, store.engine.connect() as conn:
        records = repr(conn.execute(text("SELECT * FROM jobs")).fetchall())
        records += repr(conn.execute(text("SELECT * FROM job_attempts")).fetchall())
        keys = repr(conn.execute(text("SELECT * FROM api_keys")).fetchall())
    for secret in (db_password, admin_key, alice):
        assert secret not in logs
        assert secret not in "\n".join(answers)
        assert secret not in records
        assert secret not in keys  # stored hashed
    assert "dbpw-" in database_url and "no authentication" not in logs
    assert "API keys required" in logs

"""What `trainyard up` prints: a banner with what a person needs, no library chatter (Alembic's
plugin set-up in every process), and, with TRAINYARD_LOG_FORMAT=json, JSON lines a log shipper
reads, from the API and the worker alike, a job's run included."""

from __future__ import annotations

import json
import logging
import time

import pytest

from core.logging_setup import JsonFormatter, configure_logging
from trainyard.local_service import LocalService

pytestmark = pytest.mark.e2e


def _lines(service: LocalService) -> list[str]:
    return (service.home / "up.log").read_text(errors="replace").splitlines()


def test_up_prints_a_banner_and_json_lines_and_no_alembic_chatter(tmp_path):
    service = LocalService.embedded(tmp_path, {"TRAINYARD_LOG_FORMAT": "json"})
    try:
        service.wait_healthy()
        job = service.http.post("/jobs", json={
            "model": "mlp", "dataset": "digits",
            "hyperparameters": {"epochs": 1, "hidden_sizes": [16, 16]}}).json()
        deadline = time.monotonic() + 120
        while service.http.get(f"/jobs/{job['id']}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.5)
        time.sleep(1)  # the worker's line about the finished task
        lines = _lines(service)
    finally:
        service.stop()

    banner = "\n".join(lines[:12])
    assert f"dashboard  {service.url}/" in banner
    assert f"API docs   {service.url}/docs" in banner
    assert "keys       not required" in banner
    assert f"state      {tmp_path}" in banner
    text = "\n".join(lines)
    for chatter in ("alembic.runtime.plugins", "setup plugin", "Context impl",
                    "No hostname was supplied", "Uvicorn running on", "[queues]"):
        assert chatter not in text, chatter
    records = [json.loads(line) for line in lines if line.startswith("{")]
    loggers = {r["logger"] for r in records}
    assert {"api.lifespan", "trainyard.worker"} <= loggers, loggers
    assert len({r["process"] for r in records}) >= 2, "the API's and the worker's lines"
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    # Nothing else but the banner and the JSON lines, bar Celery's shutdown notes.
    others = [line for line in lines[12:] if line.strip() and not line.startswith("{")
              and "Warm shutdown" not in line]
    assert others == [], others


def test_json_lines_carry_extra_fields_and_tracebacks(capsys):
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    configure_logging("INFO", "json")
    try:
        log = logging.getLogger("trainyard.test")
        log.info("job %s claimed", 7, extra={"job_id": 7})
        try:
            raise ValueError("broken")
        except ValueError:
            log.exception("failed")
        log.debug("not shown at INFO")
        records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    assert [r["message"] for r in records] == ["job 7 claimed", "failed"]
    assert records[0]["job_id"] == 7 and records[0]["level"] == "INFO"
    assert "ValueError: broken" in records[1]["exc_info"]
    assert JsonFormatter().format(logging.makeLogRecord({"msg": "x"})).startswith("{")


def test_a_wrong_log_level_is_refused_with_the_choices(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "trainyard", "--log-level", "loud", "list"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "DEBUG" in done.stderr and "'LOUD'" in done.stderr

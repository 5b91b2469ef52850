"""The embedded broker (worker/file_queue.py) under concurrent producers and bad files.

Why: kombu's file-system transport created a message file and wrote it in a
second step, so a consumer polling the folder could read it empty and die of the
JSONDecodeError, taking the only embedded worker with it. These tests use the real transport
through Celery's own connection, as the API (producer) and the worker (consumer) do.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import threading
from pathlib import Path
from queue import Empty

import pytest

from core.settings import Settings
from worker.celery_app import enqueue_job, make_celery


def _settings(home: Path) -> Settings:
    return Settings(home=home, broker_url=None, database_url=None, broker_poll_interval=0.001)


def _channel(settings: Settings):
    connection = make_celery(settings).connection_for_read()
    connection.connect()
    return connection, connection.default_channel


def _produce(home: str, first_id: int, count: int) -> None:
    """A producer process, like one API request handler after another."""
    app = make_celery(_settings(Path(home)))
    for job_id in range(first_id, first_id + count):
        enqueue_job(app, job_id, "cpu")
    app.close()


def _job_id(payload: dict) -> int:
    import base64

    body = payload["body"]
    if payload["properties"].get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args = json.loads(body)[0]
    return int(args[0])


def test_concurrent_producers_never_expose_a_partial_message(tmp_path: Path) -> None:
    """4 producer processes publish 4 x 250 messages while a consumer polls without pause:
    every message arrives once, whole."""
    settings = _settings(tmp_path)
    connection, channel = _channel(settings)
    producers = [multiprocessing.get_context("spawn").Process(
        target=_produce, args=(str(tmp_path), 1000 * (n + 1), 250)) for n in range(4)]
    for process in producers:
        process.start()
    received: list[int] = []
    try:
        while len(received) < 1000:
            try:
                received.append(_job_id(channel._get("cpu")))
            except Empty:
                if not any(p.is_alive() for p in producers) and len(received) < 1000:
                    # every producer is done: what is left must be in the folder now
                    try:
                        received.append(_job_id(channel._get("cpu")))
                    except Empty:
                        break
    finally:
        for process in producers:
            process.join(timeout=60)
        connection.release()
    expected = [1000 * (n + 1) + i for n in range(4) for i in range(250)]
    assert sorted(received) == expected


def test_a_malformed_message_is_dropped_and_the_next_one_is_read(tmp_path: Path, caplog) -> None:
    """An empty file, a truncated one and one that is JSON but no message sit before a real
    message: the consumer logs and drops each, then returns the real one."""
    settings = _settings(tmp_path)
    app = make_celery(settings)
    queue_dir = settings.broker_dir / "queue"
    queue_dir.mkdir(parents=True, exist_ok=True)
    (queue_dir / "1_empty.cpu.msg").write_bytes(b"")
    (queue_dir / "2_truncated.cpu.msg").write_bytes(b'{"body": "W1s0Ml0')
    (queue_dir / "3_not-a-message.cpu.msg").write_bytes(b'[1, 2, 3]')
    (queue_dir / "4_latin1.cpu.msg").write_bytes(b'\xff\xfe')
    enqueue_job(app, 42, "cpu")
    connection, channel = _channel(settings)
    try:
        with caplog.at_level(logging.ERROR, logger="trainyard.broker"):
            payload = channel._get("cpu")
        with pytest.raises(Empty):
            channel._get("cpu")
    finally:
        connection.release()
        app.close()
    assert _job_id(payload) == 42
    dropped = [r for r in caplog.records if "dropped a malformed message" in r.getMessage()]
    assert len(dropped) == 4
    assert not list(queue_dir.iterdir())  # nothing left behind to trip over again


def test_two_consumers_never_get_the_same_message(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    app = make_celery(settings)
    for job_id in range(300):
        enqueue_job(app, job_id, "auto")
    got: list[list[int]] = [[], []]

    def consume(into: list[int]) -> None:
        connection, channel = _channel(settings)
        try:
            while True:
                try:
                    into.append(_job_id(channel._get("auto")))
                except Empty:
                    return
        finally:
            connection.release()

    threads = [threading.Thread(target=consume, args=(got[i],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    app.close()
    assert sorted(got[0] + got[1]) == list(range(300))

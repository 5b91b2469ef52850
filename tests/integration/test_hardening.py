"""Input hardening: names validated whole, NUL kept out of the database and SQL out of
job errors, and a per-user queue cap that holds under concurrency. Real app, real SQLite and
Postgres (the `store` fixture runs each test on both), a real uvicorn where requests race."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn

from api.main import create_app
from models.registry import validate_hyperparameters
from trainyard.cli import build_parser, cmd_keys
from core.settings import Settings
from worker.runner import JobRunner

CORPUS = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
          "it was the age of foolishness, it was the epoch of belief. ") * 20
TINY_LM = {"epochs": 1, "steps_per_epoch": 3, "batch_size": 4, "seq_len": 16,
           "embedding_dim": 8, "hidden_size": 16, "seed": 1}


def upload(client, name: str, content: bytes):
    return client.post("/datasets", data={"name": name},
                       files={"file": ("corpus.txt", content, "text/plain")})


def error_at(response, loc: list) -> str:
    assert response.status_code == 422, response.text
    messages = [e["msg"] for e in response.json()["detail"] if e["loc"] == loc]
    assert messages, response.json()
    return messages[0]


# ---- a pattern validates the whole input, a final newline included -----------------


@pytest.mark.parametrize("name", ["pydocs\n", "digits\n", "mytext\n"])
def test_a_dataset_name_ending_in_a_newline_is_refused_at_upload(client, store, name):
    assert "a-z" in error_at(upload(client, name, CORPUS.encode()), ["body", "name"])
    assert store.list_datasets() == []


def test_a_job_on_a_dataset_name_ending_in_a_newline_is_refused(client, store):
    # A dataset stored under such a name (uploaded before the fix) is not found by it.
    store.add_dataset(name="mytext\n", kind="text", data=CORPUS.encode())
    for dataset in ("mytext\n", "pydocs\n", "digits\n"):
        response = client.post("/jobs", json={"model": "rnn_lm", "dataset": dataset})
        assert "unknown dataset" in error_at(response, ["body", "dataset"]), dataset
    assert store.list_jobs()[1] == 0


def test_keys_create_refuses_an_owner_name_ending_in_a_newline(sqlite_url, capsys):
    settings = Settings(database_url=sqlite_url)
    args = build_parser().parse_args(["keys", "create", "--name", "alice\n"])
    assert cmd_keys(args, settings) == 2
    assert "--name must be" in capsys.readouterr().err
    ok = build_parser().parse_args(["keys", "create", "--name", "alice"])
    assert cmd_keys(ok, settings) == 0
    from db.store import Store

    with Store(sqlite_url) as store:
        assert [k.owner for k in store.list_api_keys()] == ["alice"]


# ---- NUL never reaches a text column; SQL never reaches a job's error ---------------


def test_an_upload_with_a_nul_byte_is_refused_naming_its_offset(client, store):
    content = CORPUS.encode()[:200] + b"\x00" + CORPUS.encode()[200:]
    message = error_at(upload(client, "with-nul", content), ["body", "file"])
    assert "NUL" in message and "offset 200" in message
    assert store.list_datasets() == []


def _runner(store, tmp_path) -> JobRunner:
    settings = Settings(home=tmp_path, metrics_flush_seconds=0.05, db_retry_seconds=0.0)
    return JobRunner(store, settings, worker_name="test-worker")


def _lm_job(store, dataset: str):
    return store.create_job(model="rnn_lm", dataset=dataset, device="cpu",
                            hyperparameters=validate_hyperparameters("rnn_lm", TINY_LM))


def test_a_dataset_stored_with_nul_before_the_fix_still_trains(store, tmp_path):
    # Stored directly, as an upload accepted before uploads refused NUL. Its validation text
    # starts the sampled text, so the sample holds NUL, which Postgres text cannot store.
    store.add_dataset(name="old-upload", kind="text",
                      data=CORPUS.replace(" ", "\x00 ").encode())
    job = _lm_job(store, "old-upload")
    assert _runner(store, tmp_path).run(job.id) == "succeeded", store.get_job(job.id).error
    texts = store.list_texts(job.id)
    assert len(texts) == 1 and "\x00" not in texts[0]["text"]
    assert "\ufffd" in texts[0]["text"]  # where the model wrote NUL


@pytest.fixture
def texts_refused(store):
    """The database refuses every sampled text: a real error of the statement (not of the
    connection), raised by the server itself from a trigger."""
    with store.engine.begin() as conn:
        if store.dialect == "postgresql":
            conn.exec_driver_sql(
                "CREATE FUNCTION test_refuse_texts() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION 'texts are refused here' USING ERRCODE = 'data_exception'; "
                "END $$")
            conn.exec_driver_sql("CREATE TRIGGER test_no_texts BEFORE INSERT ON job_texts "
                                 "FOR EACH ROW EXECUTE FUNCTION test_refuse_texts()")
        else:  # json() of a non-JSON text fails at run time: "malformed JSON"
            conn.exec_driver_sql("CREATE TRIGGER test_no_texts BEFORE INSERT ON job_texts "
                                 "BEGIN SELECT json('texts are refused here'); END")
    try:
        yield "texts are refused here" if store.dialect == "postgresql" else "malformed JSON"
    finally:
        with store.engine.begin() as conn:
            if store.dialect == "postgresql":
                conn.exec_driver_sql("DROP TRIGGER test_no_texts ON job_texts")
                conn.exec_driver_sql("DROP FUNCTION test_refuse_texts()")
            else:
                conn.exec_driver_sql("DROP TRIGGER test_no_texts")


def test_a_database_error_fails_the_job_without_sql_in_its_error(store, tmp_path, texts_refused):
    store.add_dataset(name="corpus", kind="text", data=CORPUS.encode())
    job = _lm_job(store, "corpus")
    assert _runner(store, tmp_path).run(job.id) == "failed"
    error = store.get_job(job.id).error
    assert error.startswith("database error"), error
    assert texts_refused in error  # the server's own words: the first line of its message
    for sql in ("INSERT", "SELECT", "[SQL:", "[parameters:", "job_texts (", "VALUES"):
        assert sql not in error, error
    assert "best of times" not in error  # nor the row's data


# ---- the per-user queue cap holds under concurrent submissions ---------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_api(store, api_settings):
    """The real app on a real uvicorn (its own thread), queue cap 5; yields its URL."""
    settings = api_settings.model_copy(update={"max_queued_jobs_per_user": 5})
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, store=store), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _submit_concurrently(url: str, count: int, headers: dict | None = None) -> list:
    start = threading.Barrier(count)
    body = {"model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": 1}}

    def submit(_: int):
        start.wait()
        response = http.post("/jobs", json=body, headers=headers or {})
        return response.status_code, response.json()

    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    with httpx.Client(base_url=url, timeout=120, limits=limits) as http:
        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(submit, range(count)))


def test_two_hundred_concurrent_submits_leave_exactly_the_cap_queued(store, live_api):
    results = _submit_concurrently(live_api, 200)
    codes = Counter(code for code, _ in results)
    assert codes == {201: 5, 429: 195}, codes
    assert store.list_jobs(status="queued", owner="local")[1] == 5
    refused = next(body for code, body in results if code == 429)
    assert "the limit is 5" in refused["detail"]


def test_concurrent_retries_of_one_request_get_its_job_even_at_the_cap(store, live_api):
    # Four queued already: the key's job is the fifth, and each retry of it is answered with
    # it (a retry is not a new job), never with 429.
    for _ in range(4):
        store.create_job("mlp", "digits", {"epochs": 1}, owner="local")
    results = _submit_concurrently(live_api, 50, headers={"Idempotency-Key": "once"})
    codes = Counter(code for code, _ in results)
    assert codes == {201: 1, 200: 49}, codes
    assert len({body["id"] for _, body in results}) == 1
    assert store.list_jobs(status="queued", owner="local")[1] == 5

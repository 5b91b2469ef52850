"""The HTTP API against a real database (SQLite and Postgres) and a real Celery broker.

No training happens here: where a test needs metrics, texts or checkpoints it writes them
through the Store, as a worker would, and reads them back over HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from db.store import Store
from core.settings import Settings
from worker.celery_app import WAKE_TASK, make_celery

UPLOAD_LIMIT = 4096  # the api_settings fixture's max_upload_bytes
JOB_FIELDS = {
    "id", "name", "model", "dataset", "hyperparameters", "device", "status", "progress",
    "attempts", "error", "created_at", "started_at", "finished_at",
}
PROGRESS_FIELDS = {"epoch", "total_epochs", "step", "total_steps", "eta_seconds"}
CORPUS = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, "
    "it was the age of foolishness, it was the epoch of belief, it was the epoch of "
    "incredulity, it was the season of Light, it was the season of Darkness.\n"
) * 4


def broker_messages(settings: Settings) -> list[dict]:
    """The messages waiting on the embedded broker: [{"task", "args", "queue"}], oldest first.

    kombu's file-system transport keeps one JSON file per message, named
    `<time>_<uuid>.<queue>.msg`, with the Celery (protocol 2) body base64-encoded.
    """
    messages = []
    folder = settings.broker_dir / "queue"
    for path in sorted(folder.glob("*.msg"), key=lambda p: int(p.name.split("_")[0])):
        envelope = json.loads(path.read_text())
        assert envelope["properties"]["body_encoding"] == "base64"
        assert envelope["content-type"] == "application/json"
        args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        messages.append(
            {
                "task": envelope["headers"]["task"],
                "args": args,
                "kwargs": kwargs,
                "queue": path.name.split(".")[-2],
            }
        )
    return messages


def submit(client: TestClient, **body) -> dict:
    body.setdefault("model", "mlp")
    body.setdefault("dataset", "digits")
    response = client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def assert_422(response, loc: list, *words: str) -> None:
    """A FastAPI-shaped validation error naming `loc`, its message containing `words`."""
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert isinstance(errors, list) and errors
    matching = [e for e in errors if e["loc"] == loc]
    assert matching, f"no error at {loc}: {errors}"
    for word in words:
        assert word in matching[0]["msg"], matching[0]
    assert {"loc", "msg", "type"} <= set(matching[0])


def upload(client: TestClient, name: str, content: bytes, **extra):
    return client.post(
        "/datasets",
        data={"name": name, **extra},
        files={"file": ("corpus.txt", content, "text/plain")},
    )


# ---- health, catalogue, dashboard, docs ----------------------------------------------------


def test_healthz_reports_database_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "storage": "ok", "queues": {},
                               "problems": []}


def test_healthz_is_503_when_the_database_is_down(api_settings):
    # Nothing listens on port 1; no lifespan here, so the app starts without migrating.
    down = Store("postgresql+psycopg://postgres@127.0.0.1:1/nothing")
    try:
        client = TestClient(create_app(api_settings, store=down), raise_server_exceptions=False)
        response = client.get("/healthz")
    finally:
        down.close()
    assert response.status_code == 503
    assert response.json()["status"] == "error"
    assert response.json()["database"] != "ok"


def test_models_catalogue_names_every_stable_hyperparameter(client):
    response = client.get("/models")
    assert response.status_code == 200
    catalogue = response.json()
    assert set(catalogue) == {"mlp", "cnn", "rnn_lm"}
    common = {"epochs", "batch_size", "lr", "optimizer", "weight_decay", "seed"}
    expected = {
        "mlp": common | {"hidden_sizes", "activation", "dropout"},
        "cnn": common | {"channels", "kernel_size", "pooling", "activation", "dropout"},
        "rnn_lm": common
        | {"cell", "embedding_dim", "hidden_size", "num_layers", "seq_len", "tokenizer",
           "tie_weights", "dropout"},
    }
    for model, names in expected.items():
        entry = catalogue[model]
        assert names <= set(entry["hyperparameters"]), model
        for param in entry["hyperparameters"].values():
            assert {"type", "default", "minimum", "maximum", "choices", "description"} <= set(param)
    assert catalogue["mlp"]["datasets_kind"] == "images"
    assert catalogue["rnn_lm"]["datasets_kind"] == "text"
    assert catalogue["rnn_lm"]["hyperparameters"]["tokenizer"]["choices"] == ["char", "word"]
    lr = catalogue["cnn"]["hyperparameters"]["lr"]
    assert lr["minimum"] == 0 and lr["maximum"] == 10


def test_dashboard_placeholder_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "no jobs yet" in page.text.lower()
    assert "trainyard submit" in page.text and "curl" in page.text
    # The shell, the jobs page (the landing page) and the shared state it polls with.
    scripts = {path: client.get(f"/static/{path}") for path in
               ("app.js", "js/jobs.js", "js/state.js")}
    assert all(script.status_code == 200 for script in scripts.values())
    assert all("innerHTML" not in script.text for script in scripts.values())
    assert "textContent" in scripts["app.js"].text and "textContent" in scripts["js/jobs.js"].text
    assert "jobs?" in scripts["js/jobs.js"].text and "2000" in scripts["js/state.js"].text
    assert client.get("/static/style.css").status_code == 200


def test_openapi_documents_every_route_with_a_response_model(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    expected = {
        ("post", "/jobs"), ("get", "/jobs"), ("get", "/jobs/{job_id}"),
        ("post", "/jobs/{job_id}/cancel"), ("get", "/jobs/{job_id}/metrics"),
        ("get", "/jobs/{job_id}/texts"), ("get", "/jobs/{job_id}/checkpoints"),
        ("get", "/jobs/{job_id}/checkpoints/{checkpoint_id}/download"), ("get", "/compare"),
        ("get", "/models"), ("get", "/datasets"), ("post", "/datasets"), ("get", "/healthz"),
    }
    found = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert expected <= found
    for method, path in expected:
        responses = spec["paths"][path][method]["responses"]
        ok = responses.get("200") or responses.get("201")
        assert ok, (method, path)
        content = ok["content"]
        if path.endswith("/download"):
            assert "application/octet-stream" in content
        else:
            schema = content["application/json"]["schema"]
            assert schema != {}, (method, path)  # a real model, not "any"


# ---- submitting jobs ----------------------------------------------------------------------


def test_submit_job_stores_it_and_puts_its_id_on_the_broker(client, store, api_settings):
    job = submit(
        client, model="cnn", dataset="digits", hyperparameters={"lr": 0.01, "epochs": 3},
        name="cnn baseline", device="cpu",
    )
    assert JOB_FIELDS | {"latest_metrics"} <= set(job)
    assert job["status"] == "queued" and job["attempts"] == 0
    assert job["name"] == "cnn baseline" and job["device"] == "cpu"
    hp = job["hyperparameters"]
    assert hp["lr"] == 0.01 and hp["epochs"] == 3
    assert {"batch_size", "optimizer", "channels", "kernel_size", "pooling"} <= set(hp)  # defaults
    assert set(job["progress"]) >= PROGRESS_FIELDS
    assert job["progress"]["total_epochs"] == 3
    assert job["started_at"] is None and job["finished_at"] is None

    # The database is the truth...
    record = store.get_job(job["id"])
    assert record is not None and record.status == "queued" and record.hyperparameters == hp
    # ...and the broker carries only a wake-up naming it, on the queue of the job's device.
    assert broker_messages(api_settings) == [
        {"task": WAKE_TASK, "args": [job["id"]], "kwargs": {}, "queue": "cpu"}
    ]


def test_submit_defaults_device_auto_and_a_name(client, api_settings):
    job = submit(client, model="rnn_lm", dataset="pydocs", hyperparameters={"cell": "gru"})
    assert job["device"] == "auto"
    assert job["name"]  # the store names unnamed jobs
    assert job["hyperparameters"]["tokenizer"] in ("char", "word")
    messages = broker_messages(api_settings)
    assert [(m["args"], m["queue"]) for m in messages] == [([job["id"]], "auto")]


def test_submit_is_201_even_when_the_broker_is_down(store, api_settings, caplog):
    dead_broker = make_celery(
        Settings(home=api_settings.home, broker_url="redis://127.0.0.1:1/0")
    )
    app = create_app(api_settings, store=store, celery_app=dead_broker)
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1") as client:
        with caplog.at_level(logging.WARNING):
            response = client.post("/jobs", json={"model": "mlp", "dataset": "digits"})
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        assert client.get(f"/jobs/{job_id}").json()["status"] == "queued"
    # the reconciler will find it here
    assert sorted(j.id for j in store.list_jobs(status="queued", limit=1000)[0]) == [job_id]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"job {job_id}" in message for message in warnings)


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"model": "transformer"}, ["body", "model"], ("mlp", "cnn", "rnn_lm")),
        ({"hyperparameters": {"learning_rate": 0.1}}, ["body", "hyperparameters", "learning_rate"],
         ("lr",)),
        ({"hyperparameters": {"lr": 0}}, ["body", "hyperparameters", "lr"], ("> 0", "10")),
        ({"hyperparameters": {"lr": -1}}, ["body", "hyperparameters", "lr"], ("range",)),
        ({"hyperparameters": {"epochs": 0}}, ["body", "hyperparameters", "epochs"], ("1", "1000")),
        ({"hyperparameters": {"activation": "gelu"}}, ["body", "hyperparameters", "activation"],
         ("relu", "sigmoid", "tanh")),
        ({"hyperparameters": {"hidden_sizes": [64]}}, ["body", "hyperparameters", "hidden_sizes"],
         ("entries",)),
        ({"model": "rnn_lm", "dataset": "digits"}, ["body", "dataset"], ("text",)),
        ({"model": "cnn", "dataset": "pydocs"}, ["body", "dataset"], ("images",)),
        ({"dataset": "imagenet"}, ["body", "dataset"], ("imagenet", "/datasets")),
        ({"device": "tpu"}, ["body", "device"], ()),
    ],
)
def test_submit_rejects_bad_specs_naming_the_field(client, store, api_settings, body, loc, words):
    payload = {"model": "mlp", "dataset": "digits", **body}
    assert_422(client.post("/jobs", json=payload), loc, *words)
    assert store.list_jobs()[1] == 0
    assert broker_messages(api_settings) == []


GARBAGE_BODIES = [
    b"not json at all",
    b"{\"model\": \"mlp\", ",
    b"[1, 2, 3]",
    b"null",
    b"42",
    b'{"model": null, "dataset": "digits"}',
    b'{"model": 5, "dataset": ["digits"]}',
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": "fast"}',
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": null}',
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"lr": null}}',
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"lr": "0.1"}}',
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"lr": NaN}}',
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"lr": Infinity}}',
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"lr": 1e400}}',
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": 1e308}}',
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": '
    + b"9" * 200 + b"}}",
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": ' + b"9" * 5000 + b"}}",
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": true}}',
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"hidden_sizes": [1e9, -5]}}',
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"hidden_sizes": [[1], {"a": 2}]}}',
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"hidden_sizes": "abc"}}',
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"batch_size": 99999999999}}',
    b'{"model": "rnn_lm", "dataset": "pydocs", "hyperparameters": {"tie_weights": "yes"}}',
    b'{"model": "rnn_lm", "dataset": "pydocs", '
    b'"hyperparameters": {"batch_size": 4096, "seq_len": 4096}}',
    b'{"model": "mlp", "dataset": "digits", "name": "' + b"x" * 10_000 + b'"}',
    b'{"model": "mlp", "dataset": "' + b"d" * 10_000 + b'"}',
    b'{"model": "mlp", "dataset": "digits", "device": null}',
    b'{"model": "mlp", "dataset": "digits", "surprise": 1}',
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"lr": 0.1, "lr": "x"}}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"hidden_sizes": '
    + b"[" * 900 + b"]" * 900 + b"}}",
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": ' + b"[" * 500 + b"]" * 500 + b"}",
    b'{"model": "\xff\xfe", "dataset": "digits"}',
    # Text no database can store: NUL (Postgres) and lone surrogates (not UTF-8 at all).
    b'{"model": "mlp", "dataset": "digits", "name": "a\\u0000b"}',
    b'{"model": "mlp", "dataset": "digits", "name": "a\\ud800b"}',
    b'{"model": "mlp", "dataset": "\\ud800"}',
    b'{"model": "mlp", "dataset": "digits\\u0000"}',
    b'{"model": "mlp\\ud800", "dataset": "digits"}',
    b'{"model": "mlp", "dataset": "digits", "device": "\\udfff"}',
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"\\ud800": 1}}',
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"activation": "re\\u0000lu"}}',
    b'{"model": "mlp", "dataset": "digits", "hyperparameters": {"hidden_sizes": ["\\ud800"]}}',
]


def test_garbage_input_gets_4xx_never_500(client, store, api_settings):
    for raw in GARBAGE_BODIES:
        response = client.post("/jobs", content=raw, headers={"Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, (raw[:80], response.status_code, response.text)
        assert "detail" in response.json()
    # No Content-Type, a form instead of JSON, an empty body.
    for kwargs in ({"content": b'{"model": "mlp"}'}, {"data": {"model": "mlp"}}, {}):
        response = client.post("/jobs", **kwargs)
        assert 400 <= response.status_code < 500, (kwargs, response.text)
    assert store.list_jobs()[1] == 0
    assert broker_messages(api_settings) == []

    job = submit(client)
    bad_requests = [
        "/jobs?limit=abc", "/jobs?limit=0", "/jobs?limit=201", "/jobs?offset=-1",
        "/jobs?offset=99999999999999999999999", "/jobs?status=done", "/jobs?model=resnet",
        "/jobs/abc", "/jobs/1.5", "/jobs/99999999999999999999999", "/jobs/-1", "/jobs/0",
        f"/jobs/{2**31}", f"/jobs/{2**63 - 1}", f"/jobs/{2**31}/metrics", f"/jobs/{2**63}/texts",
        f"/jobs/{job['id']}/checkpoints/{2**31}/download",
        f"/compare?ids={job['id']},{2**31}", f"/compare?ids={2**63 - 1},{2**63}",
        f"/jobs/{job['id']}/metrics?max_points=1", f"/jobs/{job['id']}/metrics?max_points=10001",
        f"/jobs/{job['id']}/metrics?max_points=x",
        f"/jobs/{job['id']}/metrics?names=" + ",".join(f"m{i}" for i in range(500)),
        f"/jobs/{job['id']}/checkpoints/abc/download",
        f"/jobs/{job['id']}/checkpoints/99999999999999999999999/download",
        "/jobs/99999999999999999999999/checkpoints", "/jobs/99999999999999999999999/metrics",
        "/compare", "/compare?ids=", "/compare?ids=a,b", f"/compare?ids={job['id']}",
        "/compare?ids=1,99999999999999999999999", "/compare?ids=-1,-2",
        "/compare?ids=" + ",".join(str(i) for i in range(1, 1002)),
        "/jobs?model=%00", "/jobs?model=%ED%A0%80", "/jobs?status=%00",
        f"/jobs/{job['id']}/metrics?names=a%00b", "/compare?ids=1,%00", "/compare?ids=%ED%A0%80,1",
    ]
    for url in bad_requests:
        response = client.get(url)
        assert 400 <= response.status_code < 500, (url, response.status_code, response.text)
    # Not UTF-8: decoded with replacement characters, so simply a name with no series.
    odd = client.get(f"/jobs/{job['id']}/metrics?names=%ED%A0%80")
    assert odd.status_code == 200 and odd.json() == {"series": {}}
    for url in ("/jobs/abc/cancel", f"/jobs/{10**23}/cancel", f"/jobs/{2**31}/cancel"):
        assert 400 <= client.post(url).status_code < 500, url


# ---- reading jobs -------------------------------------------------------------------------


def test_list_jobs_newest_first_with_filters_and_pages(client):
    first = submit(client, model="mlp")
    second = submit(client, model="cnn")
    third = submit(client, model="mlp", name="third")
    client.post(f"/jobs/{second['id']}/cancel")

    page = client.get("/jobs").json()
    assert set(page) == {"items", "total", "limit", "offset"}
    assert [j["id"] for j in page["items"]] == [third["id"], second["id"], first["id"]]
    assert page["total"] == 3 and page["limit"] == 50 and page["offset"] == 0
    assert JOB_FIELDS <= set(page["items"][0])

    only_mlp = client.get("/jobs", params={"model": "mlp"}).json()
    assert [j["id"] for j in only_mlp["items"]] == [third["id"], first["id"]]
    assert only_mlp["total"] == 2
    cancelled = client.get("/jobs", params={"status": "cancelled"}).json()
    assert [j["id"] for j in cancelled["items"]] == [second["id"]]
    both = client.get("/jobs", params={"status": "queued", "model": "cnn"}).json()
    assert both == {"items": [], "total": 0, "limit": 50, "offset": 0}

    paged = client.get("/jobs", params={"limit": 1, "offset": 1}).json()
    assert [j["id"] for j in paged["items"]] == [second["id"]]
    assert paged["total"] == 3 and paged["limit"] == 1 and paged["offset"] == 1
    assert client.get("/jobs", params={"offset": 10}).json()["items"] == []

    assert_422(client.get("/jobs", params={"limit": 201}), ["query", "limit"])
    assert_422(client.get("/jobs", params={"status": "finished"}), ["query", "status"])
    assert_422(client.get("/jobs", params={"model": "resnet"}), ["query", "model"], "mlp")


def test_get_job_shows_progress_latest_metrics_and_timestamps(client, store):
    job = submit(client, hyperparameters={"epochs": 4})
    store.claim_job(job["id"], worker="test-worker")
    store.update_progress(job["id"], epoch=2, total_epochs=4, step=50, total_steps=100,
                          eta_seconds=12.5)
    store.add_metrics(job["id"], [
        ("train_loss", 49, 2, 0.9, None), ("train_loss", 50, 2, 0.7, None),
        ("val_accuracy", 50, 2, 0.81, None), ("val_loss", 50, 2, float("nan"), None),
    ])

    got = client.get(f"/jobs/{job['id']}")
    assert got.status_code == 200
    body = got.json()
    assert body["status"] == "running" and body["attempts"] == 1
    assert body["progress"] == {"epoch": 2, "total_epochs": 4, "step": 50, "total_steps": 100,
                                "eta_seconds": 12.5}
    assert body["latest_metrics"] == {"train_loss": 0.7, "val_accuracy": 0.81, "val_loss": None}
    assert body["started_at"] is not None and body["finished_at"] is None
    assert body["created_at"] <= body["started_at"]
    assert body["error"] is None

    store.finish_job(job["id"], "failed", error="CUDA out of memory")
    failed = client.get(f"/jobs/{job['id']}").json()
    assert failed["status"] == "failed" and failed["error"] == "CUDA out of memory"
    assert failed["finished_at"] is not None


def test_unknown_job_is_404_everywhere(client):
    for url in ("/jobs/424242", "/jobs/424242/metrics", "/jobs/424242/texts",
                "/jobs/424242/checkpoints", "/jobs/424242/checkpoints/1/download"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.json() == {"detail": "job 424242 not found"}
    response = client.post("/jobs/424242/cancel")
    assert response.status_code == 404
    assert response.json() == {"detail": "job 424242 not found"}


# ---- cancel -------------------------------------------------------------------------------


def test_cancel_queued_and_running_jobs_and_409_for_finished(client, store):
    queued = submit(client)
    response = client.post(f"/jobs/{queued['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None
    assert store.get_status(queued["id"]) == "cancelled"

    again = client.post(f"/jobs/{queued['id']}/cancel")
    assert again.status_code == 409
    assert "cancelled" in again.json()["detail"]

    running = submit(client)
    store.claim_job(running["id"], worker="w")
    assert client.post(f"/jobs/{running['id']}/cancel").json()["status"] == "cancelled"

    done = submit(client)
    store.claim_job(done["id"], worker="w")
    store.finish_job(done["id"], "succeeded")
    refused = client.post(f"/jobs/{done['id']}/cancel")
    assert refused.status_code == 409
    assert "succeeded" in refused.json()["detail"]
    assert store.get_status(done["id"]) == "succeeded"


# ---- metrics, texts, checkpoints ----------------------------------------------------------


def test_metrics_series_filtered_and_downsampled(client, store):
    job = submit(client)
    points = [("train_loss", step, step // 100, 2.0 - step / 1000, None) for step in range(1, 501)]
    points += [("val_loss", 100 * e, e, 1.0 / e, None) for e in range(1, 6)]
    points += [("val_accuracy", 100 * e, e, 0.5 + e / 20, None) for e in range(1, 6)]
    points += [("lr", 1, 0, float("inf"), None)]
    store.add_metrics(job["id"], points)

    everything = client.get(f"/jobs/{job['id']}/metrics")
    assert everything.status_code == 200
    series = everything.json()["series"]
    assert set(series) == {"train_loss", "val_loss", "val_accuracy", "lr"}
    assert len(series["train_loss"]) == 500  # under the default max_points of 1000
    assert series["val_loss"][0] == {"step": 100, "epoch": 1, "value": 1.0}
    assert series["lr"] == [{"step": 1, "epoch": 0, "value": None}]  # inf is not JSON

    chosen = client.get(f"/jobs/{job['id']}/metrics", params={"names": "val_loss, val_accuracy"})
    assert set(chosen.json()["series"]) == {"val_loss", "val_accuracy"}
    assert [p["epoch"] for p in chosen.json()["series"]["val_accuracy"]] == [1, 2, 3, 4, 5]

    small = client.get(f"/jobs/{job['id']}/metrics",
                       params={"names": "train_loss", "max_points": 50}).json()["series"]
    curve = small["train_loss"]
    assert 2 <= len(curve) <= 50
    steps = [p["step"] for p in curve]
    assert steps == sorted(steps) and steps[-1] == 500
    assert curve[-1]["value"] == pytest.approx(2.0 - 0.5)  # the true final value
    assert curve[0]["value"] > curve[-1]["value"]

    assert client.get(f"/jobs/{job['id']}/metrics", params={"names": "nope"}).json() == {
        "series": {}
    }
    empty_job = submit(client)
    assert client.get(f"/jobs/{empty_job['id']}/metrics").json() == {"series": {}}
    assert_422(client.get(f"/jobs/{job['id']}/metrics", params={"max_points": 1}),
               ["query", "max_points"])


def test_a_long_curve_is_the_same_on_its_job_page_and_in_a_comparison(client, store):
    """GET /jobs/{id}/metrics downsamples as GET /compare/series does (from the rollups once a
    curve is long), so a run reads the same wherever it is drawn, and ends on its final value."""
    job = submit(client)
    store.add_metrics(job["id"], [("train_loss", step, step // 1000, 3.0 - step / 10_000, None)
                                  for step in range(1, 20_001)])
    for max_points in (50, 1000):
        page = client.get(f"/jobs/{job['id']}/metrics",
                          params={"max_points": max_points}).json()["series"]["train_loss"]
        compared = client.get("/compare/series", params={
            "ids": str(job["id"]), "names": "train_loss", "max_points": max_points}).json()
        curve = compared["series"][str(job["id"])]["train_loss"]
        assert [p["step"] for p in page] == curve["step"]
        assert [p["epoch"] for p in page] == curve["epoch"]
        assert [p["value"] for p in page] == pytest.approx(curve["value"])
        assert len(page) <= max_points
        assert page[-1] == {"step": 20_000, "epoch": 20, "value": pytest.approx(1.0)}


def test_texts_sampled_per_epoch(client, store):
    job = submit(client, model="rnn_lm", dataset="pydocs")
    assert client.get(f"/jobs/{job['id']}/texts").json() == []
    store.add_text(job["id"], epoch=1, step=10, name="sample", text="the cat <sat>")
    store.add_text(job["id"], epoch=2, step=20, name="sample", text="the cat sat on")
    texts = client.get(f"/jobs/{job['id']}/texts").json()
    assert texts == [
        {"epoch": 1, "step": 10, "name": "sample", "text": "the cat <sat>"},
        {"epoch": 2, "step": 20, "name": "sample", "text": "the cat sat on"},
    ]


def test_checkpoints_listed_and_downloaded_with_checksum(client, store):
    job = submit(client)
    other = submit(client)
    blobs = [bytes(range(256)) * (epoch + 1) for epoch in range(2)]
    records = [
        store.add_checkpoint(job["id"], epoch=e + 1, step=10 * (e + 1), data=blob,
                             metrics={"val_loss": 1.0 / (e + 1)})
        for e, blob in enumerate(blobs)
    ]

    listed = client.get(f"/jobs/{job['id']}/checkpoints")
    assert listed.status_code == 200
    items = listed.json()
    assert [c["id"] for c in items] == [r.id for r in records]
    first = items[0]
    fields = {"id", "epoch", "step", "size", "sha256", "metrics", "created_at", "download_url"}
    assert fields <= set(first)
    assert first["epoch"] == 1 and first["step"] == 10 and first["size"] == 256
    assert first["sha256"] == hashlib.sha256(blobs[0]).hexdigest()
    assert first["metrics"] == {"val_loss": 1.0}
    assert client.get(f"/jobs/{other['id']}/checkpoints").json() == []

    for item, blob in zip(items, blobs, strict=True):
        download = client.get(item["download_url"])
        assert download.status_code == 200
        assert download.content == blob
        assert download.headers["content-type"] == "application/octet-stream"
        assert download.headers["x-checksum-sha256"] == hashlib.sha256(blob).hexdigest()
        assert download.headers["etag"] == f'"{item["sha256"]}"'
        disposition = download.headers["content-disposition"]
        assert disposition.startswith("attachment;") and 'filename="' in disposition
        assert f"epoch{item['epoch']}" in disposition

    # A checkpoint id of another job, or no checkpoint at all: 404.
    wrong_job = client.get(f"/jobs/{other['id']}/checkpoints/{records[0].id}/download")
    assert wrong_job.status_code == 404
    assert str(records[0].id) in wrong_job.json()["detail"]
    assert client.get(f"/jobs/{job['id']}/checkpoints/999999/download").status_code == 404


# ---- compare ------------------------------------------------------------------------------


def test_compare_runs_final_best_and_differing_keys(client, store):
    a = submit(
        client, model="mlp", hyperparameters={"lr": 0.01, "activation": "sigmoid", "epochs": 3},
    )
    b = submit(
        client, model="mlp", hyperparameters={"lr": 0.001, "activation": "relu", "epochs": 3},
    )
    c = submit(client, model="cnn", hyperparameters={"lr": 0.001, "epochs": 3})
    for job, losses, accs in ((a, [1.0, 0.6, 0.7], [0.5, 0.8, 0.7]),
                              (b, [0.9, 0.4, 0.3], [0.6, 0.9, 0.95])):
        store.add_metrics(job["id"], [
            *(("val_loss", e, e, v, None) for e, v in enumerate(losses, 1)),
            *(("val_accuracy", e, e, v, None) for e, v in enumerate(accs, 1)),
        ])

    response = client.get("/compare", params={"ids": f"{a['id']},{b['id']}"})
    assert response.status_code == 200
    body = response.json()
    runs = body["runs"]
    assert [r["id"] for r in runs] == [a["id"], b["id"]]
    fields = {"id", "name", "model", "dataset", "status", "hyperparameters", "final", "best"}
    assert fields <= set(runs[0])
    assert runs[0]["final"] == {"val_loss": 0.7, "val_accuracy": 0.7}
    assert runs[0]["best"] == {"val_loss": 0.6, "val_accuracy": 0.8}
    assert runs[1]["best"] == {"val_loss": 0.3, "val_accuracy": 0.95}
    assert runs[0]["hyperparameters"]["activation"] == "sigmoid"
    assert set(body["differing"]) == {"lr", "activation"}

    # Order follows the request; an MLP against a CNN differs in model and in the
    # hyperparameters only one of them has. A run without metrics has empty final/best.
    three = client.get("/compare", params={"ids": f"{c['id']}, {a['id']},{b['id']}"}).json()
    assert [r["id"] for r in three["runs"]] == [c["id"], a["id"], b["id"]]
    assert three["runs"][0]["final"] == {} and three["runs"][0]["best"] == {}
    differing = three["differing"]
    assert differing[0] == "model"
    only_one_has = {"hidden_sizes", "channels", "kernel_size", "pooling"}
    assert {"lr", "activation"} | only_one_has <= set(differing)
    assert "dataset" not in differing and "epochs" not in differing

    rnn = submit(client, model="rnn_lm", dataset="pydocs")
    with_rnn = client.get("/compare", params={"ids": f"{a['id']},{rnn['id']}"}).json()
    assert with_rnn["differing"][:2] == ["model", "dataset"]


def test_compare_404_names_the_missing_ids_and_422_on_bad_lists(client):
    a = submit(client)
    b = submit(client)
    missing = client.get("/compare", params={"ids": f"{a['id']},777,{b['id']},888"})
    assert missing.status_code == 404
    detail = missing.json()["detail"]
    assert "777" in detail and "888" in detail and str(a["id"]) not in detail

    assert_422(client.get("/compare", params={"ids": str(a["id"])}), ["query", "ids"], "2")
    assert_422(client.get("/compare", params={"ids": f"{a['id']},{a['id']}"}), ["query", "ids"])
    assert_422(client.get("/compare", params={"ids": f"{a['id']},x"}), ["query", "ids"], "x")
    too_many = ",".join(str(i) for i in range(1, 1002))
    assert_422(client.get("/compare", params={"ids": too_many}), ["query", "ids"], "1000")
    assert_422(client.get("/compare"), ["query", "ids"])


# ---- datasets -----------------------------------------------------------------------------


def test_list_builtin_datasets(client):
    response = client.get("/datasets")
    assert response.status_code == 200
    datasets = {d["name"]: d for d in response.json()}
    assert datasets["digits"]["kind"] == "images" and datasets["digits"]["source"] == "builtin"
    assert datasets["pydocs"]["kind"] == "text"
    for item in datasets.values():
        assert {"name", "kind", "size_bytes", "source", "description"} <= set(item)


def test_upload_text_dataset_then_train_a_language_model_on_it(client, store, api_settings):
    response = upload(client, "my-corpus", CORPUS.encode(), description="Dickens")
    assert response.status_code == 201, response.text
    created = response.json()
    assert {k: created[k] for k in ("name", "kind", "source", "size_bytes", "description",
                                    "owner", "version", "ref")} == {
        "name": "my-corpus", "kind": "text", "source": "uploaded",
        "size_bytes": len(CORPUS.encode()), "description": "Dickens", "owner": "local",
        "version": 1, "ref": "my-corpus@1"}
    assert created["sha256"] == hashlib.sha256(CORPUS.encode()).hexdigest()
    assert created["summary"]["characters"] == len(CORPUS)
    assert store.get_dataset_data("my-corpus").decode() == CORPUS  # any worker can read it

    listed = {d["name"]: d for d in client.get("/datasets").json()}
    assert listed["my-corpus"]["source"] == "uploaded"

    job = submit(client, model="rnn_lm", dataset="my-corpus")
    assert job["dataset"] == "my-corpus"
    assert broker_messages(api_settings)[-1]["args"] == [job["id"]]
    assert_422(client.post("/jobs", json={"model": "mlp", "dataset": "my-corpus"}),
               ["body", "dataset"], "images")

    # the name again: its next version (tests/integration/test_dataset_versions.py)
    again = upload(client, "my-corpus", CORPUS.encode())
    assert again.status_code == 201 and again.json()["ref"] == "my-corpus@2"


def test_upload_rejections(client, store):
    # mnist and cifar10 are reserved even where their files are absent.
    for builtin in ("digits", "pydocs", "mnist", "cifar10"):
        response = upload(client, builtin, CORPUS.encode())
        assert response.status_code == 409, builtin
        assert builtin in response.json()["detail"]
    for bad_name in ("My Corpus", "-leading-dash", "", "a" * 65, "dots.txt", "../etc", "ünïcode"):
        response = upload(client, bad_name, CORPUS.encode())
        assert response.status_code == 422, (bad_name, response.text)
    assert_422(upload(client, "latin1", CORPUS.encode() + "caf\xe9".encode("latin-1")),
               ["body", "file"], "UTF-8")
    assert_422(upload(client, "tiny", b"too short"), ["body", "file"], "short")
    assert_422(upload(client, "empty", b""), ["body", "file"])
    assert_422(upload(client, "binary", bytes(range(32)) * 20), ["body", "file"])
    assert_422(upload(client, "pictures", CORPUS.encode(), kind="images"), ["body", "kind"], "text")

    too_big = upload(client, "big", b"word " * (UPLOAD_LIMIT // 5 + 10))
    assert too_big.status_code == 413
    assert str(UPLOAD_LIMIT) in too_big.json()["detail"]
    way_too_big = upload(client, "huge", b"word " * 100_000)  # refused from Content-Length
    assert way_too_big.status_code == 413
    assert str(UPLOAD_LIMIT) in way_too_big.json()["detail"]

    nul = upload(client, "nul", CORPUS.encode(), description="a\x00b")
    assert_422(nul, ["body", "description"], "NUL")
    assert 400 <= upload(client, "nul\x00name", CORPUS.encode()).status_code < 500
    missing_file = client.post("/datasets", data={"name": "nofile"})
    assert missing_file.status_code == 422
    not_multipart = client.post("/datasets", json={"name": "x", "file": "abc"})
    assert 400 <= not_multipart.status_code < 500
    assert store.list_datasets() == []

"""Fuzzing the HTTP API from its own OpenAPI document (schemathesis, in-process over ASGI).

One test per operation that /openapi.json describes. Each gets a bounded, deterministic set of
requests: the examples the schema gives, the coverage phase's edge cases (boundaries, missing
and mistyped parameters, unsupported methods) and FUZZ_EXAMPLES generated ones, valid and
invalid. Every answer must be:

- no server error (no 5xx, no exception escaping the app),
- a status code the operation declares,
- a Content-Type the operation declares for that status,
- a body that validates against the schema declared for that status.

The app is the real one (`create_app`) on a SQLite file and the embedded file-system broker
under a temporary home (no worker: submitted jobs stay queued), seeded with jobs that have
metrics, texts and a checkpoint, and an uploaded dataset, so that ids hit real rows as well as
missing ones. The larger run is bench/fuzz.py; its figures are in bench/README.md.

Not fuzzed, because they are not in the schema: the dashboard's page and its static files
(`include_in_schema=False`, HTML and JavaScript, no parameters). No route streams forever.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from celery import Celery
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.main import create_app
from db.store import Store
from trainyard.settings import Settings

FUZZ_EXAMPLES = 50  # generated cases per operation, on top of the examples and coverage phases
SEED = 5
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def seed_rows(store: Store) -> None:
    """Jobs 1-3 and an uploaded dataset (bench/fuzz.py seeds the same rows).

    1: a finished MLP run with metrics (one NaN), a sampled text and a checkpoint;
    2: a queued RNN-LM job on the uploaded corpus; 3: a running CNN job.
    """
    done = store.create_job("mlp", "digits", {"epochs": 2, "lr": 0.01}, device="cpu",
                            name="fuzz-mlp")
    store.claim_job(done.id, "fuzz-worker")
    store.add_metrics(done.id, [("train_loss", step, step // 5, 2.0 / (step + 1))
                                for step in range(10)])
    store.add_metrics(done.id, [("val_accuracy", 4, 0, 0.5), ("val_accuracy", 9, 1, 0.75),
                                ("val_loss", 9, 1, float("nan"))])
    store.add_text(done.id, 1, 9, "sample", "to be or not")
    store.add_checkpoint(done.id, 1, 9, b"\x00checkpoint bytes", {"val_accuracy": 0.75})
    store.finish_job(done.id, "succeeded")
    store.add_dataset("fuzz-corpus", "text", b"to be or not to be\n" * 20, "a tiny corpus")
    store.create_job("rnn_lm", "fuzz-corpus", {"epochs": 1}, name="fuzz-queued")
    running = store.create_job("cnn", "digits", {"epochs": 3})
    store.claim_job(running.id, "fuzz-worker")


def openapi_document() -> dict[str, Any]:
    """The app's OpenAPI document, read at collection time to make one test per operation.

    That app is never started: an in-memory database and a Celery app without a broker, no file.
    """
    store = Store("sqlite://")
    try:
        app = create_app(Settings(home=Path("/nonexistent/trainyard-openapi-only")),
                         store=store, celery_app=Celery("openapi-only"))
        return app.openapi()
    finally:
        store.close()


@pytest.fixture
def fuzz_headers() -> dict[str, str]:
    """Headers sent with every fuzzed request. None are needed today.

    When authentication lands, return {"Authorization": "Bearer <a key made for the test>"}
    here, so that the fuzzer reaches the routes instead of stopping at 401s (and add a separate
    check that requests without it are refused)."""
    return {}


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("fuzz")
    # Explicit paths: TRAINYARD_* variables of the shell cannot point the app at real state.
    app_settings = Settings(home=root / "home", database_url=None, broker_url=None,
                            data_dir=root / "data")
    with Store(app_settings.resolved_database_url) as store:
        store.migrate()
        seed_rows(store)
    app = create_app(app_settings)  # owns its Store and Celery app: closed by its lifespan
    try:
        yield app
    finally:
        # schemathesis starts the app's lifespan on the first request and keeps it for the
        # process; end it here, so the app closes its database before the folder goes away.
        asgi.shutdown_lifespans()


schema = schemathesis.openapi.from_dict(
    openapi_document(),
    config=schemathesis.Config.from_dict({
        "seed": SEED,
        "generation": {"max-examples": FUZZ_EXAMPLES, "deterministic": True, "database": "none"},
        # Sequences of calls are bench/fuzz.py's job; here each operation is tried alone.
        "phases": {"stateful": {"enabled": False}},
    }),
)


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_answers_within_its_schema(case, fuzz_app, fuzz_headers):
    case.call_and_validate(app=fuzz_app, headers=fuzz_headers, checks=CHECKS)

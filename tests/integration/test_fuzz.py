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
under a temporary home (no worker: submitted jobs stay queued), with API keys required, as on
any public address. Every request carries the `fuzz_headers`: a non-admin user's key. Its jobs
(metrics, texts, a checkpoint) and its uploaded dataset are seeded, and another user's job
too, so that ids hit the caller's rows, someone else's (404) and missing ones. Requests without
a key, and sessions, are tests/integration/test_auth.py's business. The larger run is
bench/fuzz.py; its figures are in bench/README.md.

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
from api.security import new_api_key
from db.store import Store
from core.settings import Settings

FUZZ_EXAMPLES = 50  # generated cases per operation, on top of the examples and coverage phases
SEED = 5
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ_USER = "fuzzer"  # the API key every fuzzed request carries is this user's


def seed_rows(store: Store, owner: str = FUZZ_USER) -> None:
    """Jobs 1-4 and an uploaded dataset (bench/fuzz.py seeds the same rows).

    `owner`'s: 1, a finished MLP run with metrics (one NaN), a sampled text, a checkpoint and
    a confusion matrix;
    2, a queued RNN-LM job on the uploaded corpus; 3, a running CNN job. 4: another user's.
    """
    done = store.create_job("mlp", "digits", {"epochs": 2, "lr": 0.01}, device="cpu",
                            name="fuzz-mlp", owner=owner)
    store.claim_job(done.id, "fuzz-worker")
    store.add_metrics(done.id, [("train_loss", step, step // 5, 2.0 / (step + 1))
                                for step in range(10)])
    store.add_metrics(done.id, [("val_accuracy", 4, 0, 0.5), ("val_accuracy", 9, 1, 0.75),
                                ("val_loss", 9, 1, float("nan"))])
    store.add_text(done.id, 1, 9, "sample", "to be or not")
    store.add_checkpoint(done.id, 1, 9, b"\x00checkpoint bytes", {"val_accuracy": 0.75})
    store.add_confusion(done.id, epoch=1, step=9, matrix=[[3, 1], [0, 4]])
    store.finish_job(done.id, "succeeded")
    store.add_dataset("fuzz-corpus", "text", b"to be or not to be\n" * 20, "a tiny corpus",
                      owner=owner)
    store.create_job("rnn_lm", "fuzz-corpus", {"epochs": 1}, name="fuzz-queued", owner=owner)
    running = store.create_job("cnn", "digits", {"epochs": 3}, owner=owner)
    store.claim_job(running.id, "fuzz-worker")
    store.create_job("mlp", "digits", {"epochs": 1}, name="not-yours", owner="someone-else")


def build_fuzz_app(root: Path) -> tuple[Any, dict[str, str]]:
    """The app under `root` (seeded, keys required) and the headers that sign a request in as
    FUZZ_USER. The app owns its Store and Celery app: its lifespan closes them."""
    # Explicit paths: TRAINYARD_* variables of the shell cannot point the app at real state.
    app_settings = Settings(
        home=root / "home", database_url=None, broker_url=None, data_dir=root / "data",
        require_keys=True,
        # Submitting stays possible for the whole run; the cap itself is test_auth's.
        max_queued_jobs_per_user=1_000_000,
    )
    with Store(app_settings.resolved_database_url) as store:
        store.migrate()
        seed_rows(store)
        key, prefix, digest = new_api_key()
        store.add_api_key(FUZZ_USER, prefix, digest)
    return create_app(app_settings), {"Authorization": f"Bearer {key}"}


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


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict]]:
    app, headers = build_fuzz_app(tmp_path_factory.mktemp("fuzz"))
    try:
        yield app, headers
    finally:
        # schemathesis starts the app's lifespan on the first request and keeps it for the
        # process; end it here, so the app closes its database before the folder goes away.
        asgi.shutdown_lifespans()


@pytest.fixture
def fuzz_app(fuzz_service: tuple[Any, dict]) -> Any:
    return fuzz_service[0]


@pytest.fixture
def fuzz_headers(fuzz_service: tuple[Any, dict]) -> dict[str, str]:
    """Headers sent with every fuzzed request: FUZZ_USER's API key (Authorization: Bearer),
    so that the fuzzer reaches the routes instead of stopping at 401s. Change the identity the
    fuzzer acts as here, and only here."""
    return dict(fuzz_service[1])


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

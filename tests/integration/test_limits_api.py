"""Limits before anything is queued: POST /jobs refuses a model that is too large (parameters)
or too hungry (activation memory of one batch) with a 422 naming the estimate and the cap, and
stores and enqueues nothing; jobs within the caps pass as before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import Settings

MAX_PARAMETERS = 1_000_000
MAX_ACTIVATION_BYTES = 64 * 2**20


@pytest.fixture
def limited_settings(tmp_path: Path) -> Settings:
    # Explicit values (as in conftest.api_settings), with caps small enough to reach.
    return Settings(home=tmp_path / "home", broker_url=None, database_url=None,
                    data_dir=tmp_path / "data", max_model_parameters=MAX_PARAMETERS,
                    max_activation_bytes=MAX_ACTIVATION_BYTES)


@pytest.fixture
def limited_client(store, limited_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(limited_settings, store=store),
                    raise_server_exceptions=False, base_url="http://127.0.0.1") as client:
        yield client


def refusal(response) -> str:
    """The message of a 422 at body.hyperparameters."""
    assert response.status_code == 422, response.text
    errors = [e for e in response.json()["detail"] if e["loc"] == ["body", "hyperparameters"]]
    assert errors, response.text
    return errors[0]["msg"]


def queued_messages(settings: Settings) -> list[Path]:
    return sorted((settings.broker_dir / "queue").glob("*.msg"))


def test_oversized_mlp_is_refused_naming_its_size_and_the_cap(limited_client, store,
                                                              limited_settings):
    hidden = [2048, 2048, 2048]
    response = limited_client.post("/jobs", json={
        "model": "mlp", "dataset": "digits", "hyperparameters": {"hidden_sizes": hidden}})
    # digits: 1x8x8 inputs, 10 classes; each layer is weights + biases
    widths = [64, *hidden, 10]
    params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    message = refusal(response)
    assert f"estimated {params:,} parameters" in message
    assert "the limit is 1,000,000 (TRAINYARD_MAX_MODEL_PARAMETERS)" in message
    # nothing stored, nothing sent to a worker
    assert store.list_jobs()[1] == 0
    assert queued_messages(limited_settings) == []


def test_a_batch_too_large_for_memory_is_refused_naming_the_estimate(limited_client, store):
    # few parameters, but 4096 maps of 64 x 8 x 8 per layer output: ~170 MB of activations
    response = limited_client.post("/jobs", json={
        "model": "cnn", "dataset": "digits",
        "hyperparameters": {"channels": [64], "batch_size": 4096}})
    message = refusal(response)
    assert "of activations" in message and "bytes" in message
    assert "the limit is 64.0 MiB (67,108,864 bytes, TRAINYARD_MAX_ACTIVATION_BYTES)" in message
    assert "batch_size" in message, "it says what to lower"
    assert store.list_jobs()[1] == 0


def test_jobs_within_the_caps_are_queued(limited_client, store, limited_settings):
    for body in ({"model": "mlp", "dataset": "digits"},
                 {"model": "cnn", "dataset": "digits"},
                 {"model": "rnn_lm", "dataset": "pydocs",
                  "hyperparameters": {"cell": "lstm", "tokenizer": "char"}}):
        response = limited_client.post("/jobs", json=body)
        assert response.status_code == 201, response.text
    assert store.list_jobs()[1] == 3
    assert len(queued_messages(limited_settings)) == 3


def test_word_level_vocabulary_is_bounded_by_max_vocab(limited_client):
    # The vocabulary is unknown until the text is tokenized: max_vocab bounds it. Embedding and
    # decoder of 50,000 tokens x 64 alone are 6.4M parameters.
    response = limited_client.post("/jobs", json={
        "model": "rnn_lm", "dataset": "pydocs",
        "hyperparameters": {"tokenizer": "word", "max_vocab": 50_000}})
    assert "TRAINYARD_MAX_MODEL_PARAMETERS" in refusal(response)
    response = limited_client.post("/jobs", json={
        "model": "rnn_lm", "dataset": "pydocs",
        "hyperparameters": {"tokenizer": "word", "max_vocab": 2_000}})
    assert response.status_code == 201, response.text


def test_default_caps_refuse_the_largest_language_model(client):
    # With the default caps (conftest.api_settings) the catalogue's largest word-level LSTM
    # LM, ~136M parameters, does not pass; the defaults do.
    response = client.post("/jobs", json={
        "model": "rnn_lm", "dataset": "pydocs",
        "hyperparameters": {"tokenizer": "word", "max_vocab": 50_000, "cell": "lstm",
                            "embedding_dim": 1024, "hidden_size": 1024, "num_layers": 4,
                            "batch_size": 16}})
    assert "the limit is 100,000,000 (TRAINYARD_MAX_MODEL_PARAMETERS)" in refusal(response)
    assert client.post("/jobs", json={"model": "rnn_lm", "dataset": "pydocs"}).status_code == 201

"""GET /models tells a client (the dashboard) each family's headline metric and the metrics it
reports with which way is better, so no client has to hard-code them."""

from __future__ import annotations


def test_models_carry_their_headline_metric_and_metric_goals(client):
    response = client.get("/models")
    assert response.status_code == 200
    catalogue = response.json()
    assert {name: entry["headline_metric"] for name, entry in catalogue.items()} == {
        "mlp": "val_accuracy", "cnn": "val_accuracy", "rnn_lm": "val_perplexity"}
    for name in ("mlp", "cnn"):
        assert catalogue[name]["metrics"] == {
            "train_loss": "min", "val_loss": "min", "val_accuracy": "max", "lr": None,
            "samples_per_s": None}
    assert catalogue["rnn_lm"]["metrics"] == {
        "train_loss": "min", "val_loss": "min", "val_perplexity": "min", "lr": None,
        "tokens_per_s": None}


def test_the_openapi_schema_declares_the_new_fields(client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]["ModelInfo"]
    assert {"headline_metric", "metrics"} <= set(schema["required"])
    goal = schema["properties"]["metrics"]["additionalProperties"]
    assert {"min", "max"} <= {v for option in goal["anyOf"] for v in option.get("enum", [])}

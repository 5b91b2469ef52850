"""GET /jobs/{id}/inspect/... against the real app and store (SQLite and Postgres), on networks
really trained once per module: what each view shows is checked against the checkpoint itself
(the filters are blocks.0.conv's weights, block 0's maps are that block run on the image, the
units are layers.0's rows, the mistakes agree with the stored val_accuracy, neighbours are the
nearest embeddings), and every bad request gets the 4xx it should, never a 500."""

from __future__ import annotations

import math
import time

import pytest
import torch
from fastapi.testclient import TestClient

from db.store import Store
from models.checkpoints import model_from_checkpoint
from models.data import load_image_dataset
from models.inspection import pca_2d, plain, shown, token_id, validation_predictions
from tests.integration.trained_runs import checkpoints_of, submit_with_checkpoints

CNN_HP = {"channels": [8, 16], "epochs": 2, "steps_per_epoch": 10, "seed": 1, "lr": 0.01}
MLP_HP = {"hidden_sizes": [32, 16], "epochs": 2, "steps_per_epoch": 10, "seed": 1, "lr": 0.01}
LM_HP = {"epochs": 1, "steps_per_epoch": 5, "hidden_size": 32, "embedding_dim": 16}


def train(model: str, dataset: str, hp: dict) -> dict:
    return {"model": model, "dataset": dataset, "hp": hp,
            "taken": checkpoints_of(model, dataset, hp)}


@pytest.fixture(scope="module")
def cnn_run() -> dict:
    run = train("cnn", "digits", CNN_HP)
    accuracy = [m["val_accuracy"] for *_, m in run["taken"]]
    assert accuracy[1] > accuracy[0], "the tests of the default checkpoint need epoch 2 best"
    return run


@pytest.fixture(scope="module")
def mlp_run() -> dict:
    return train("mlp", "digits", MLP_HP)


@pytest.fixture(scope="module")
def lm_run() -> dict:
    return train("rnn_lm", "pydocs", LM_HP)


@pytest.fixture(scope="module")
def digits_val() -> tuple[torch.Tensor, torch.Tensor]:
    """The validation split the seed-1 jobs were measured on."""
    data = load_image_dataset("digits", seed=1)
    return data.x_val, data.y_val


def make_job(client: TestClient, store: Store, run: dict, headers=None) -> tuple[dict, list]:
    return submit_with_checkpoints(client, store, run["model"], run["dataset"], run["hp"],
                                   run["taken"], headers)


def network(run: dict, i: int = -1) -> torch.nn.Module:
    return model_from_checkpoint(run["taken"][i][2])[0].eval()


def get(client: TestClient, job: dict, view: str, **params):
    return client.get(f"/jobs/{job['id']}/inspect/{view}", params=params)


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def refused(response, loc: list) -> str:
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == loc, error
    return error["msg"]


def close(sent, expected: torch.Tensor, digits: int = 5) -> bool:
    """`sent` (JSON lists) is `expected` rounded to `digits` significant digits."""
    got = torch.tensor(sent, dtype=torch.float64)
    want = expected.double()
    return got.shape == want.shape and torch.allclose(
        got, want, rtol=10.0 ** (1 - digits), atol=1e-12)


# ---- CNN: filters and feature maps -----------------------------------------------------------


def test_filters_are_the_first_convolutions_weights(client, store, cnn_run):
    job, records = make_job(client, store, cnn_run)
    body = ok(get(client, job, "filters"))
    # the default is the best checkpoint by val_accuracy: epoch 2's
    assert (body["checkpoint"], body["epoch"]) == (records[1].id, 2)
    weight = network(cnn_run).blocks[0].conv.weight.detach()
    assert body["layer"] == "blocks.0.conv" and body["shape"] == [8, 1, 3, 3]
    assert close(body["filters"], weight)
    assert math.isclose(body["min"], weight.min(), rel_tol=1e-4)
    assert math.isclose(body["max"], weight.max(), rel_tol=1e-4)

    first = ok(get(client, job, "filters", checkpoint=records[0].id))
    assert (first["checkpoint"], first["epoch"]) == (records[0].id, 1)
    assert close(first["filters"], network(cnn_run, 0).blocks[0].conv.weight.detach())
    assert first["filters"] != body["filters"], "training moved the filters"

    three = ok(get(client, job, "filters", limit=3))
    assert three["shape"] == [8, 1, 3, 3] and three["filters"] == body["filters"][:3]
    for bad in (0, 513):
        refused(get(client, job, "filters", limit=bad), ["query", "limit"])


def test_feature_maps_are_each_blocks_output_for_the_image(client, store, cnn_run, digits_val):
    job, _ = make_job(client, store, cnn_run)
    x_val, y_val = digits_val
    model = network(cnn_run)
    for index in (0, 7, len(y_val) - 1):
        body = ok(get(client, job, "feature-maps", index=index))
        image = x_val[index]
        assert body["index"] == index and body["label"] == int(y_val[index])
        assert body["validation_size"] == len(y_val)
        assert torch.allclose(torch.tensor(body["image"]), image, atol=5e-4)
        with torch.no_grad():
            block0 = model.blocks[0](image[None])[0]  # conv, activation, pool: (8, 4, 4)
            block1 = model.blocks[1](block0[None])[0]  # (16, 2, 2)
            predicted = int(model(image[None])[0].argmax())
        assert [b["name"] for b in body["blocks"]] == ["blocks.0", "blocks.1"]
        assert [b["shape"] for b in body["blocks"]] == [[8, 4, 4], [16, 2, 2]]
        assert [b["maps_shape"] for b in body["blocks"]] == [[8, 4, 4], [16, 2, 2]]
        assert close(body["blocks"][0]["maps"], block0)
        assert close(body["blocks"][1]["maps"], block1)
        assert body["predicted"] == predicted and 0 < body["confidence"] <= 1

    n = len(y_val)
    msg = refused(get(client, job, "feature-maps", index=n), ["query", "index"])
    assert f"between 0 and {n - 1}" in msg
    refused(get(client, job, "feature-maps", index=-1), ["query", "index"])


def test_payloads_stay_small_for_a_digits_cnn(client, store, cnn_run):
    job, _ = make_job(client, store, cnn_run)
    sizes = {view: len(get(client, job, view, **params).content) for view, params in
             [("filters", {}), ("feature-maps", {"index": 3}), ("mistakes", {"limit": 100})]}
    assert sizes["filters"] < 5_000 and sizes["feature-maps"] < 10_000, sizes
    assert sizes["mistakes"] < 100 * 800, sizes  # 64 pixels of at most 5 characters each


# ---- MLP: units ------------------------------------------------------------------------------


def test_units_are_first_layer_rows_shaped_as_the_input(client, store, mlp_run):
    job, _ = make_job(client, store, mlp_run)
    weight = network(mlp_run).layers[0].weight.detach()  # (32, 64)
    body = ok(get(client, job, "units"))
    assert body["layer"] == "layers.0" and body["shape"] == [1, 8, 8]
    assert body["total_units"] == 32 and len(body["units"]) == 32  # default 64: all of them
    assert close(body["units"], weight.reshape(32, 1, 8, 8))

    five = ok(get(client, job, "units", limit=5))
    assert close(five["units"], weight[:5].reshape(5, 1, 8, 8))
    assert five["min"] <= min(map(min, torch.tensor(five["units"]).flatten(1).tolist()))
    for bad in (0, 257):
        refused(get(client, job, "units", limit=bad), ["query", "limit"])


# ---- classifiers: mistakes -------------------------------------------------------------------


@pytest.mark.parametrize("run_name", ["cnn_run", "mlp_run"])
def test_mistakes_are_wrong_most_confident_first_and_agree_with_accuracy(
        client, store, digits_val, request, run_name):
    run = request.getfixturevalue(run_name)
    job, records = make_job(client, store, run)
    x_val, y_val = digits_val
    body = ok(get(client, job, "mistakes", limit=100))
    best = max(records, key=lambda r: r.metrics["val_accuracy"])
    assert body["checkpoint"] == best.id
    assert body["validation_size"] == len(y_val) and body["shape"] == [1, 8, 8]
    expected_wrong = len(y_val) * (1 - best.metrics["val_accuracy"])
    assert abs(body["wrong"] - expected_wrong) <= 1, (body["wrong"], expected_wrong)

    items = body["items"]
    assert len(items) == min(100, body["wrong"]) and len(items) > 0
    confidences = [item["confidence"] for item in items]
    assert confidences == sorted(confidences, reverse=True)
    for item in items:
        assert item["predicted"] != item["label"] == int(y_val[item["index"]])
        assert 0 <= item["label_probability"] <= item["confidence"] <= 1
        assert torch.allclose(torch.tensor(item["image"]), x_val[item["index"]], atol=5e-4)
    assert len({item["index"] for item in items}) == len(items)
    # the model agrees: its most confident wrong answer has that confidence
    with torch.no_grad():
        top = items[0]
        p = torch.softmax(network(run, records.index(best))(x_val[top["index"]][None])[0], -1)
    assert int(p.argmax()) == top["predicted"]
    assert math.isclose(float(p.max()), top["confidence"], rel_tol=1e-4)

    # the answers are kept per checkpoint: a smaller limit shows the same first mistakes
    assert ok(get(client, job, "mistakes"))["items"] == items[:16]
    assert ok(get(client, job, "mistakes", limit=100)) == body
    for bad in (0, 101):
        refused(get(client, job, "mistakes", limit=bad), ["query", "limit"])


# ---- language model: embeddings, neighbours, next token ---------------------------------------


def test_embeddings_place_the_first_tokens(client, store, lm_run):
    job, _ = make_job(client, store, lm_run)
    model, ckpt = model_from_checkpoint(lm_run["taken"][-1][2])
    vocab = ckpt["vocab"]
    body = ok(get(client, job, "embeddings", limit=50))
    assert body["method"] == "pca" and body["vocab_size"] == len(vocab)
    points = body["points"]
    assert [p["id"] for p in points] == list(range(1, 51))  # <unk> (id 0) left out
    assert all(p["token"] == vocab[p["id"]] for p in points)
    xs, ys = (torch.tensor([p[a] for p in points]) for a in "xy")
    assert xs.var() >= ys.var() > 0  # the first component spreads them most
    share = body["explained_variance"]
    assert share[0] >= share[1] > 0 and sum(share) <= 1 + 1e-6
    # the same projection of the same rows, computed here
    mine, _ = pca_2d(model.embedding.weight.detach()[1:51])
    assert close([[p["x"], p["y"]] for p in points], mine)

    everything = ok(get(client, job, "embeddings", limit=2000))
    assert len(everything["points"]) == len(vocab) - 1

    tsne = ok(get(client, job, "embeddings", method="tsne", limit=40))
    assert tsne["method"] == "tsne" and len(tsne["points"]) == 40
    assert tsne["explained_variance"] is None
    assert ok(get(client, job, "embeddings", method="tsne", limit=40)) == tsne  # fixed seed

    assert "method=tsne" in refused(get(client, job, "embeddings", method="tsne", limit=501),
                                    ["query", "limit"])
    for bad in (1, 2001):
        refused(get(client, job, "embeddings", limit=bad), ["query", "limit"])
    refused(get(client, job, "embeddings", method="umap"), ["query", "method"])


def test_neighbours_are_the_nearest_embeddings(client, store, lm_run):
    job, _ = make_job(client, store, lm_run)
    model, ckpt = model_from_checkpoint(lm_run["taken"][-1][2])
    vocab = ckpt["vocab"]
    body = ok(get(client, job, "neighbours", token="e", k=10))
    assert body["token"] == "e" and body["id"] == vocab.index("e")
    found = body["neighbours"]
    similarities = [n["similarity"] for n in found]
    assert len(found) == 10 and similarities == sorted(similarities, reverse=True)
    assert all(-1 <= s <= 1 for s in similarities)
    assert not {"e", "<unk>"} & {n["token"] for n in found}
    weight = torch.nn.functional.normalize(model.embedding.weight.detach(), dim=1)
    cosine = weight @ weight[body["id"]]
    for n in found:
        assert n["token"] == vocab[n["id"]]
        assert math.isclose(n["similarity"], float(cosine[n["id"]]), rel_tol=1e-4)
    others = [cosine[i] for i in range(1, len(vocab)) if i != body["id"]]
    assert math.isclose(similarities[0], float(max(others)), rel_tol=1e-4)

    assert len(ok(get(client, job, "neighbours", token=" ", k=100))["neighbours"]) == 100
    msg = refused(get(client, job, "neighbours", token="\u2603"), ["query", "token"])
    assert "not in the vocabulary" in msg
    for bad in (0, 101):
        refused(get(client, job, "neighbours", token="e", k=bad), ["query", "k"])
    refused(get(client, job, "neighbours"), ["query", "token"])


def test_next_token_probabilities(client, store, lm_run):
    job, _ = make_job(client, store, lm_run)
    model, ckpt = model_from_checkpoint(lm_run["taken"][-1][2])
    body = ok(get(client, job, "next-token", prompt="def \u2603f"))
    assert body["prompt"] == "def \u2603f" and body["unknown"] == ["\u2603"]
    probabilities = [t["probability"] for t in body["tokens"]]
    assert len(probabilities) == 20 and probabilities == sorted(probabilities, reverse=True)
    assert all(p > 0 for p in probabilities) and sum(probabilities) <= 1 + 1e-6
    index = {tok: i for i, tok in enumerate(ckpt["vocab"])}
    with torch.no_grad():
        logits, _ = model.eval().next_token_logits([index[c] for c in "def f"])
    expected = torch.softmax(logits[0], -1)
    for t in body["tokens"]:
        assert math.isclose(t["probability"], float(expected[index[t["token"]]]), rel_tol=1e-4)

    # every token of the vocabulary: the whole distribution (5-digit rounding aside)
    everything = ok(get(client, job, "next-token", prompt="", top=100))["tokens"]
    assert len(everything) == min(100, len(ckpt["vocab"]))
    assert sum(t["probability"] for t in everything) <= 1 + 1e-4
    refused(get(client, job, "next-token", prompt="x" * 2001), ["query", "prompt"])
    for bad in (0, 101):
        refused(get(client, job, "next-token", top=bad), ["query", "top"])


# ---- what is refused ---------------------------------------------------------------------------


def test_views_of_another_family_are_refused(client, store, cnn_run, mlp_run, lm_run):
    cnn, _ = make_job(client, store, cnn_run)
    mlp, _ = make_job(client, store, mlp_run)
    lm, _ = make_job(client, store, lm_run)
    wrong = [(mlp, "filters", {}), (mlp, "feature-maps", {}), (cnn, "units", {}),
             (lm, "units", {}), (lm, "mistakes", {}), (cnn, "embeddings", {}),
             (mlp, "neighbours", {"token": "e"}), (cnn, "next-token", {})]
    for job, view, params in wrong:
        response = get(client, job, view, **params)
        assert response.status_code == 422, (view, response.text)
        [error] = response.json()["detail"]
        assert view in error["msg"] and repr(job["model"]) in error["msg"], error


def test_checkpoints_missing_or_of_another_job(client, store, cnn_run, lm_run):
    cnn, _ = make_job(client, store, cnn_run)
    other, other_records = make_job(client, store, cnn_run)
    lm, _ = make_job(client, store, lm_run)
    theirs = other_records[0].id
    for job, view, params in [(cnn, "filters", {}), (cnn, "mistakes", {}),
                              (lm, "next-token", {}), (lm, "neighbours", {"token": "e"})]:
        response = get(client, job, view, checkpoint=theirs, **params)
        assert response.status_code == 404, response.text
        assert response.json()["detail"] == f"checkpoint {theirs} of job {job['id']} not found"
        refused(get(client, job, view, checkpoint=0, **params), ["query", "checkpoint"])

    bare = client.post("/jobs", json={"model": "cnn", "dataset": "digits",
                                      "hyperparameters": CNN_HP}).json()
    for view in ("filters", "feature-maps", "mistakes"):
        response = get(client, bare, view)
        assert response.status_code == 409, response.text
        assert f"job {bare['id']} has no checkpoint yet" in response.json()["detail"]
    assert client.get("/jobs/999999/inspect/filters").status_code == 404


def test_another_users_job_is_not_found(store, keyed_client, user_keys, cnn_run):
    client, headers = keyed_client, user_keys
    job, _ = make_job(client, store, cnn_run, headers["alice"])
    path = f"/jobs/{job['id']}/inspect/filters"
    assert client.get(path, headers=headers["alice"]).status_code == 200
    theirs = client.get(path, headers=headers["bob"])
    assert theirs.status_code == 404 and theirs.json()["detail"] == f"job {job['id']} not found"


# ---- the computations alone ---------------------------------------------------------------------


def test_pca_puts_the_widest_spread_first_with_a_fixed_sign():
    # 4 points at +-10 along u = (1, 1, 0)/sqrt 2, +-1 along z, +-0.1 along (1, -1, 0)/sqrt 2
    # (the three columns orthogonal, so these are exactly the principal axes), shifted by 5
    basis = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, -1.0, 0.0]]) / torch.tensor(
        [[2 ** 0.5], [1.0], [2 ** 0.5]])
    along = torch.tensor([[10.0, 1.0, 0.1], [10.0, -1.0, -0.1], [-10.0, 1.0, -0.1],
                          [-10.0, -1.0, 0.1]])
    points = along @ basis + 5.0
    coords, explained = pca_2d(points)
    # the first component is u and the second z, each with its largest loading positive
    assert torch.allclose(coords, along[:, :2].double(), atol=1e-9)
    assert coords[:, 0].var() == pytest.approx(100 * coords[:, 1].var())
    assert explained == pytest.approx([100 / 101.01, 1 / 101.01])
    flipped, _ = pca_2d(-points)  # the same axes, whatever signs the SVD returns
    assert torch.allclose(flipped, -coords, atol=1e-9)
    assert torch.equal(pca_2d(points)[0], coords)
    assert pca_2d(torch.ones(1, 4))[0].tolist() == [[0.0, 0.0]]


def test_a_pass_over_the_validation_set_stops_at_its_deadline(cnn_run, digits_val):
    x_val, y_val = digits_val
    with pytest.raises(TimeoutError, match=f"stopped after 0 of {len(y_val)} validation"):
        validation_predictions(network(cnn_run), x_val, y_val, deadline=time.monotonic() - 1)
    found = validation_predictions(network(cnn_run), x_val, y_val, rows=7,
                                   deadline=time.monotonic() + 60)
    assert found.predicted.shape == found.confidence.shape == y_val.shape


def test_rounding_pooling_and_lookup():
    assert plain(torch.tensor([0.123456789, -98765.4321, 0.0, 1e-9])) == \
        [0.12346, -98765.0, 0.0, 1e-9]
    assert plain(torch.tensor([float("nan"), float("inf"), 2.0])) == [None, None, 2.0]
    assert plain(torch.tensor(123456789.0)) == 123460000.0
    assert shown(torch.rand(3, 64, 64)).shape == (3, 64, 64)
    assert shown(torch.ones(3, 100, 65)).shape == (3, 50, 33)  # pooled by 2, aspect kept
    assert shown(torch.rand(1, 300, 20)).shape == (1, 60, 4)
    assert token_id(["<unk>", "the", "cat"], "word", "The") == 1
    with pytest.raises(ValueError, match="not in the vocabulary"):
        token_id(["<unk>", "a"], "char", "A")

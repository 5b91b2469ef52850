"""GET /jobs/{id}/export, against the real app and store (SQLite and Postgres): the downloaded
file runs without Trainyard and computes what the service does. An MLP's and a CNN's ONNX
file (in onnxruntime) and TorchScript file (torch.jit.load) give the probabilities POST
/jobs/{id}/predict gives; a language model's give its network's logits, for any batch size and
sequence length, and carry its vocabulary; bad requests get 422, 404 or 409, never a 500.

The networks are trained for real once per module (a few optimizer steps); each test submits
a job over HTTP with the same hyperparameters and stores the checkpoints as its worker would.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.checkpoints import model_from_checkpoint
from models.export import export_model
from tests.integration.trained_runs import checkpoints_of, submit_with_checkpoints

TOLERANCE = 1e-4
JOBS = {
    # 2 epochs x 2 steps: two checkpoints, so a named one differs from the default (the best)
    "mlp": ("digits", {"epochs": 2, "steps_per_epoch": 2, "hidden_sizes": [16, 16], "seed": 1}),
    "cnn": ("digits", {"epochs": 1, "steps_per_epoch": 2, "channels": [4, 8], "seed": 1}),
    "rnn_lm": ("pydocs", {"epochs": 1, "steps_per_epoch": 3, "hidden_size": 16,
                          "embedding_dim": 8, "seed": 1}),
}
META_KEYS = ("trainyard.model", "trainyard.job", "trainyard.checkpoint", "trainyard.input",
             "trainyard.input_shape", "trainyard.output", "trainyard.vocab",
             "trainyard.tokenizer")


@pytest.fixture(scope="module")
def trained() -> dict[str, list]:
    """model -> the (epoch, step, bytes, metrics) of a real run's checkpoints."""
    return {model: checkpoints_of(model, dataset, hp) for model, (dataset, hp) in JOBS.items()}


def make_job(client, store, trained, model: str, headers=None) -> tuple[dict, list]:
    dataset, hp = JOBS[model]
    return submit_with_checkpoints(client, store, model, dataset, hp, trained[model], headers)


def download(client, job_id: int, fmt: str, checkpoint: int | None = None, headers=None):
    params = {"format": fmt} | ({"checkpoint": checkpoint} if checkpoint else {})
    return client.get(f"/jobs/{job_id}/export", params=params, headers=headers or {})


def file_of(response, job_id: int, checkpoint_id: int, suffix: str) -> bytes:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == \
        f'attachment; filename="trainyard-job{job_id}-ckpt{checkpoint_id}{suffix}"'
    assert response.headers["x-checksum-sha256"] == hashlib.sha256(response.content).hexdigest()
    return response.content


def onnx_session(data: bytes) -> tuple[ort.InferenceSession, dict[str, str]]:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session, session.get_modelmeta().custom_metadata_map


def torchscript_module(data: bytes) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    extra = dict.fromkeys(META_KEYS, "")
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; users still load it
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(io.BytesIO(data), _extra_files=extra)
    return module, {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items()}


def predicted(client, job_id: int, images: torch.Tensor, checkpoint: int) -> np.ndarray:
    response = client.post(f"/jobs/{job_id}/predict",
                           json={"inputs": images.tolist(), "checkpoint": checkpoint})
    assert response.status_code == 200, response.text
    return np.array([p["probabilities"] for p in response.json()["predictions"]])


# ---- classifiers: the file answers what predict answers --------------------------------------


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_a_classifier_file_gives_predicts_probabilities(client, store, trained, model):
    job, records = make_job(client, store, trained, model)
    best = max(records, key=lambda r: (r.metrics["val_accuracy"], r.step))
    images = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(7))  # digits: 8x8

    # ONNX, the default checkpoint (the best), in onnxruntime
    data = file_of(download(client, job["id"], "onnx"), job["id"], best.id, ".onnx")
    session, meta = onnx_session(data)
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    [probabilities] = session.run(None, {"images": images.numpy()})
    want = predicted(client, job["id"], images, best.id)
    assert np.abs(probabilities - want).max() <= TOLERANCE
    assert (meta["trainyard.model"], meta["trainyard.job"], meta["trainyard.checkpoint"]) == \
        (model, str(job["id"]), str(best.id))
    assert json.loads(meta["trainyard.input_shape"]) == ["batch", 1, 8, 8]
    assert json.loads(meta["trainyard.output_shape"]) == ["batch", 10]

    # downloading it again is served from the cache: the same bytes, no second export
    cache = client.app.state.inference.cache
    hits = cache.hits
    assert download(client, job["id"], "onnx").content == data and cache.hits > hits

    # TorchScript of a named checkpoint (the first), through torch.jit.load
    first = records[0]
    data = file_of(download(client, job["id"], "torchscript", first.id), job["id"], first.id,
                   ".pt")
    module, meta = torchscript_module(data)
    with torch.no_grad():
        probabilities = module(images).numpy()
    assert np.abs(probabilities - predicted(client, job["id"], images, first.id)).max() \
        <= TOLERANCE
    assert meta["trainyard.checkpoint"] == str(first.id) and meta["trainyard.vocab"] == ""


# ---- a language model: the file computes the network's logits --------------------------------


def test_a_language_model_file_gives_the_networks_logits_and_vocabulary(client, store,
                                                                        trained):
    job, [record] = make_job(client, store, trained, "rnn_lm")
    net, ckpt = model_from_checkpoint(trained["rnn_lm"][-1][2])
    vocab = len(ckpt["vocab"])
    gen = torch.Generator().manual_seed(3)
    batches = [torch.randint(0, vocab, shape, generator=gen) for shape in [(1, 1), (3, 17)]]

    data = file_of(download(client, job["id"], "onnx"), job["id"], record.id, ".onnx")
    session, meta = onnx_session(data)
    for tokens in batches:
        [logits] = session.run(["logits"], {"tokens": tokens.numpy()})
        with torch.no_grad():
            want = net(tokens)[0].numpy()
        assert logits.shape == want.shape and np.abs(logits - want).max() <= TOLERANCE
    assert json.loads(meta["trainyard.vocab"]) == ckpt["vocab"]
    assert meta["trainyard.tokenizer"] == ckpt["tokenizer"] == "char"
    assert json.loads(meta["trainyard.input_shape"]) == ["batch", "time"]

    data = file_of(download(client, job["id"], "torchscript"), job["id"], record.id, ".pt")
    module, meta = torchscript_module(data)
    for tokens in batches:
        with torch.no_grad():
            assert torch.allclose(module(tokens), net(tokens)[0], atol=TOLERANCE, rtol=0)
    assert json.loads(meta["trainyard.vocab"]) == ckpt["vocab"]
    assert meta["trainyard.model"] == "rnn_lm" and meta["trainyard.job"] == str(job["id"])


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_every_recurrent_cell_exports_without_changing_the_network(cell):
    """The Elman cell and a two-layer LSTM with tied weights (and the projection that tying
    different sizes adds), straight through models/export.py: any batch size and length."""
    taken = checkpoints_of("rnn_lm", "pydocs", {
        "epochs": 1, "steps_per_epoch": 1, "hidden_size": 12, "embedding_dim": 8, "cell": cell,
        "num_layers": 2, "tie_weights": True, "dropout": 0.2})
    net, ckpt = model_from_checkpoint(taken[-1][2])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    tokens = torch.randint(0, len(ckpt["vocab"]), (2, 31), generator=torch.Generator())
    with torch.no_grad():
        want = net(tokens)[0]

    session, _ = onnx_session(export_model(net, ckpt, "onnx", job_id=1, checkpoint_id=1))
    [logits] = session.run(None, {"tokens": tokens.numpy()})
    assert np.abs(logits - want.numpy()).max() <= TOLERANCE
    module, _ = torchscript_module(export_model(net, ckpt, "torchscript", job_id=1,
                                                checkpoint_id=1))
    with torch.no_grad():
        assert torch.allclose(module(tokens), want, atol=TOLERANCE, rtol=0)

    # the shared network is as it was: eval mode, trainable, the same weights
    assert not net.training and all(p.requires_grad for p in net.parameters())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert net.decoder.weight is net.embedding.weight


# ---- bad requests --------------------------------------------------------------------------


def error_of(response) -> tuple[list, str]:
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    return error["loc"], error["msg"]


def test_bad_export_requests_are_refused(client, store, trained):
    job, _ = make_job(client, store, trained, "cnn")
    loc, msg = error_of(download(client, job["id"], "pdf"))
    assert loc == ["query", "format"] and "onnx" in msg and "torchscript" in msg
    loc, _ = error_of(download(client, job["id"], "onnx", checkpoint=-1))
    assert loc == ["query", "checkpoint"]

    other, [other_checkpoint] = make_job(client, store, trained, "cnn")
    response = download(client, job["id"], "onnx", other_checkpoint.id)
    assert response.status_code == 404
    assert response.json()["detail"] == \
        f"checkpoint {other_checkpoint.id} of job {job['id']} not found"

    missing = download(client, 987_654, "onnx")
    assert missing.status_code == 404 and missing.json()["detail"] == "job 987654 not found"

    bare = client.post("/jobs", json={"model": "mlp", "dataset": "digits"}).json()
    response = download(client, bare["id"], "torchscript")
    assert response.status_code == 409 and "no checkpoint" in response.json()["detail"]


def test_another_users_model_cannot_be_exported(keyed_client, store, user_keys, trained):
    secured, keys = keyed_client, user_keys
    job, _ = make_job(secured, store, trained, "cnn", headers=keys["alice"])
    refused = download(secured, job["id"], "torchscript", headers=keys["bob"])
    assert refused.status_code == 404 and refused.json()["detail"] == \
        f"job {job['id']} not found"
    assert download(secured, job["id"], "torchscript", headers=keys["alice"]).status_code == 200

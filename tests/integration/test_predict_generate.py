"""Using trained networks over HTTP, against the real app and store (SQLite and Postgres):
a digits CNN predicts its validation set at the accuracy it reported, through JSON arrays and
through PNG files alike (any size, either ground); a language model continues a prompt, the same
seed giving the same text; bad inputs get the right 4xx, another user's job is a 404."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models.data import load_image_dataset
from tests.integration.trained_runs import checkpoints_of, submit_with_checkpoints

CNN_HP = {"epochs": 5, "channels": [8, 16], "seed": 1, "dropout": 0.0, "lr": 4e-3}
LM_HP = {"epochs": 1, "steps_per_epoch": 8, "hidden_size": 32, "embedding_dim": 16,
         "seq_len": 32, "seed": 2}


@pytest.fixture(scope="module")
def cnn_run() -> list:
    return checkpoints_of("cnn", "digits", CNN_HP)


@pytest.fixture(scope="module")
def lm_run() -> list:
    return checkpoints_of("rnn_lm", "pydocs", LM_HP)


def trained_job(client, store, model, dataset, hp, run, headers=None) -> dict:
    job, records = submit_with_checkpoints(client, store, model, dataset, hp, run, headers)
    return {**job, "checkpoints": records}


def png(pixels: np.ndarray) -> bytes:
    """(H, W) floats in [0, 1] -> an 8-bit grey PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def error_of(response) -> tuple[list, str]:
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    return error["loc"], error["msg"]


@pytest.fixture(scope="module")
def validation():
    data = load_image_dataset("digits", seed=CNN_HP["seed"])
    return data.x_val, data.y_val


# ---- predict ---------------------------------------------------------------------------------


def test_the_cnn_predicts_its_validation_set_at_its_reported_accuracy(
        client, store, cnn_run, validation):
    job = trained_job(client, store, "cnn", "digits", CNN_HP, cnn_run)
    x_val, y_val = validation
    best = max(job["checkpoints"], key=lambda c: (c.metrics["val_accuracy"], c.step))

    json_labels, json_probs = [], []
    for start in range(0, len(y_val), 200):
        images = x_val[start:start + 200, 0].tolist()  # H x W each (one channel)
        response = client.post(f"/jobs/{job['id']}/predict", json={"inputs": images})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["checkpoint"], answer["epoch"]) == (best.id, best.epoch)
        json_labels += [p["label"] for p in answer["predictions"]]
        json_probs += [p["probabilities"] for p in answer["predictions"]]
    accuracy = float(np.mean(np.array(json_labels) == y_val.numpy()))
    assert accuracy == pytest.approx(best.metrics["val_accuracy"], abs=1 / len(y_val))
    assert accuracy > 0.8, "the run learned"
    probs = np.array(json_probs)
    assert probs.shape == (len(y_val), 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)

    # The same images as PNG files (8-bit, so within 1/510 of the arrays) give the same labels.
    png_labels, png_probs = [], []
    for start in range(0, len(y_val), 200):
        files = [("files", (f"val{i}.png", png(x_val[i, 0].numpy()), "image/png"))
                 for i in range(start, min(start + 200, len(y_val)))]
        response = client.post(f"/jobs/{job['id']}/predict", files=files)
        assert response.status_code == 200, response.text
        png_labels += [p["label"] for p in response.json()["predictions"]]
        png_probs += [p["probabilities"] for p in response.json()["predictions"]]
    agree = np.mean(np.array(png_labels) == np.array(json_labels))
    assert agree >= 0.99, f"JSON and PNG predictions agree on only {agree:.1%}"
    assert np.abs(np.array(png_probs) - probs).max() < 0.05


def test_image_files_are_prepared_the_way_the_dataset_was(client, store, cnn_run, validation):
    """A digit 8x larger (each pixel a block: the box filter averages it back exactly), or drawn
    dark on a light ground, or as RGB JPEG-free PNG with alpha, reads as the same digit."""
    job = trained_job(client, store, "cnn", "digits", CNN_HP, cnn_run)
    x_val, _ = validation
    digit = x_val[7, 0].numpy()
    big = np.kron(digit, np.ones((8, 8)))  # 64 x 64
    on_paper = 1.0 - big
    rgba = Image.fromarray(np.round(on_paper * 255).astype(np.uint8)).convert("RGBA")
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    wide = np.zeros((8, 16))  # not square: padded with its ground, then resized
    wide[:, 4:12] = digit
    files = [("files", ("small.png", png(digit), "image/png")),
             ("files", ("big.png", png(big), "image/png")),
             ("files", ("paper.png", png(on_paper), "image/png")),
             ("files", ("rgba.png", buf.getvalue(), "image/png"))]
    response = client.post(f"/jobs/{job['id']}/predict", files=files)
    assert response.status_code == 200, response.text
    probs = np.array([p["probabilities"] for p in response.json()["predictions"]])
    assert len({p["label"] for p in response.json()["predictions"]}) == 1
    assert np.abs(probs - probs[0]).max() < 0.02
    json_answer = client.post(f"/jobs/{job['id']}/predict",
                              json={"inputs": [digit.tolist()]}).json()
    assert json_answer["predictions"][0]["label"] == response.json()["predictions"][0]["label"]
    # an older checkpoint, asked for by id, answers instead of the best one
    first = job["checkpoints"][0]
    older = client.post(f"/jobs/{job['id']}/predict", files=files[:1],
                        data={"checkpoint": str(first.id)})
    assert older.status_code == 200 and older.json()["checkpoint"] == first.id


def test_bad_predict_inputs_get_the_right_4xx(client, store, cnn_run, lm_run):
    job = trained_job(client, store, "cnn", "digits", CNN_HP, cnn_run)
    url = f"/jobs/{job['id']}/predict"
    blank = [[0.0] * 8] * 8

    loc, msg = error_of(client.post(url, json={"inputs": [blank, [[0.0] * 7] * 8]}))
    assert loc == ["body", "inputs", 1] and "8 x 7" in msg and "8 x 8" in msg
    loc, msg = error_of(client.post(url, json={"inputs": [[[1.5] * 8] * 8]}))
    assert loc == ["body", "inputs", 0] and "[0, 1]" in msg
    loc, msg = error_of(client.post(url, json={"inputs": [[["a"] * 8] * 8]}))
    assert loc == ["body", "inputs", 0]
    loc, msg = error_of(client.post(url, json={"inputs": []}))
    assert loc == ["body", "inputs"]
    loc, msg = error_of(client.post(url, json={"inputs": [blank] * 257}))
    assert loc == ["body", "inputs"] and "256" in msg
    loc, _ = error_of(client.post(url, json={"inputs": [blank], "checkpoint": 0}))
    assert loc == ["body", "checkpoint"]

    loc, msg = error_of(client.post(url, files=[("files", ("x.png", b"\x89PNG\r\n\x1a\nbroken",
                                                          "image/png"))]))
    assert loc == ["body", "files", 0] and "x.png" in msg
    gif = io.BytesIO()
    Image.new("L", (8, 8)).save(gif, "GIF")
    loc, msg = error_of(client.post(url, files=[("files", ("a.gif", gif.getvalue(), "image/gif"))]))
    assert "PNG or JPEG" in msg
    # A decompression bomb: a few kilobytes that declare 30 million pixels, refused unread.
    bomb = io.BytesIO()
    Image.new("L", (6000, 5000)).save(bomb, "PNG", optimize=True)
    assert len(bomb.getvalue()) < 200_000
    loc, msg = error_of(client.post(url, files=[("files", ("bomb.png", bomb.getvalue(),
                                                          "image/png"))]))
    assert loc == ["body", "files", 0] and "6000 x 5000" in msg and "25,000,000" in msg
    too_big = client.post(url, content=b"x" * (17 * 2**20),
                          headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413
    assert client.post(url, content=b"inputs", headers={"Content-Type": "text/plain"}
                       ).status_code == 415

    # the wrong job for the use, a checkpoint of another job, a job with no checkpoint
    lm = trained_job(client, store, "rnn_lm", "pydocs", LM_HP, lm_run)
    loc, msg = error_of(client.post(f"/jobs/{lm['id']}/predict", json={"inputs": [blank]}))
    assert loc == ["path", "job_id"] and "rnn_lm" in msg
    loc, msg = error_of(client.post(f"/jobs/{job['id']}/generate", json={"prompt": "hi"}))
    assert loc == ["path", "job_id"] and "cnn" in msg
    other_checkpoint = lm["checkpoints"][0].id
    missing = client.post(url, json={"inputs": [blank], "checkpoint": other_checkpoint})
    assert missing.status_code == 404
    assert missing.json()["detail"] == f"checkpoint {other_checkpoint} of job {job['id']} not found"
    fresh = client.post("/jobs", json={"model": "cnn", "dataset": "digits"}).json()
    waiting = client.post(f"/jobs/{fresh['id']}/predict", json={"inputs": [blank]})
    assert waiting.status_code == 409 and "no checkpoint yet" in waiting.json()["detail"]
    assert client.post("/jobs/999999/predict", json={"inputs": [blank]}).status_code == 404


# ---- generate --------------------------------------------------------------------------------


def test_generate_is_seeded_and_continues_the_prompt(client, store, lm_run):
    job = trained_job(client, store, "rnn_lm", "pydocs", LM_HP, lm_run)
    url = f"/jobs/{job['id']}/generate"
    body = {"prompt": "The object ", "max_tokens": 120, "temperature": 0.9, "seed": 5}
    first, again = client.post(url, json=body), client.post(url, json=body)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer == again.json(), "the same seed gives the same text"
    assert answer["tokens"] == 120 and len(answer["continuation"]) == 120  # char level
    assert answer["text"] == "The object " + answer["continuation"]
    assert answer["seed"] == 5 and answer["tokenizer"] == "char" and answer["unknown"] == []
    other = client.post(url, json={**body, "seed": 6}).json()
    assert other["text"] != answer["text"]
    # top_k=1 is greedy: every seed gives the likeliest continuation
    greedy = [client.post(url, json={**body, "top_k": 1, "seed": s}).json()["text"]
              for s in (1, 2)]
    assert greedy[0] == greedy[1]
    # without a seed one is drawn and returned, and repeats the text when sent back
    drawn = client.post(url, json={"prompt": "a", "max_tokens": 30}).json()
    assert client.post(url, json={"prompt": "a", "max_tokens": 30, "seed": drawn["seed"]}
                       ).json()["text"] == drawn["text"]
    # characters the model never saw are dropped and said
    snow = client.post(url, json={**body, "prompt": "snow \u2603 man \u2603"}).json()
    assert snow["unknown"] == ["\u2603"] and snow["text"].startswith("snow \u2603 man \u2603")


def test_bad_generate_inputs_get_the_right_4xx(client, store, lm_run):
    job = trained_job(client, store, "rnn_lm", "pydocs", LM_HP, lm_run)
    url = f"/jobs/{job['id']}/generate"
    loc, msg = error_of(client.post(url, json={"prompt": "word " * 2000}))  # 10,000 tokens
    assert loc == ["body", "prompt"] and "10,000 tokens" in msg and "2,000" in msg
    loc, _ = error_of(client.post(url, json={"prompt": "x" * 20_001}))
    assert loc == ["body", "prompt"]
    for field, value in (("max_tokens", 2001), ("max_tokens", -1), ("temperature", 0),
                         ("temperature", 2.5), ("top_k", 0), ("seed", -1),
                         ("checkpoint", 0)):
        loc, _ = error_of(client.post(url, json={"prompt": "a", field: value}))
        assert loc == ["body", field], (field, value)
    loc, _ = error_of(client.post(url, json={"prompt": "a", "colour": "red"}))
    assert loc == ["body", "colour"]


# ---- another user's job --------------------------------------------------------------------


def test_another_users_model_is_not_found(keyed_client, store, user_keys, cnn_run, lm_run):
    secured, alice, bob = keyed_client, user_keys["alice"], user_keys["bob"]
    cnn = trained_job(secured, store, "cnn", "digits", CNN_HP, cnn_run, headers=alice)
    lm = trained_job(secured, store, "rnn_lm", "pydocs", LM_HP, lm_run, headers=alice)
    blank = [[0.0] * 8] * 8
    assert secured.post(f"/jobs/{cnn['id']}/predict", json={"inputs": [blank]},
                        headers=alice).status_code == 200
    for url, body in ((f"/jobs/{cnn['id']}/predict", {"inputs": [blank]}),
                      (f"/jobs/{lm['id']}/generate", {"prompt": "a"})):
        refused = secured.post(url, json=body, headers=bob)
        assert refused.status_code == 404, refused.text
        assert secured.post(url, json=body).status_code == 401


# ---- the time limit --------------------------------------------------------------------------


def test_a_model_use_past_its_time_limit_answers_503(store, api_settings, lm_run):
    from fastapi.testclient import TestClient

    from api.main import create_app

    # A limit no model use can meet: every one answers 503, whatever the machine's speed.
    settings = api_settings.model_copy(update={"inference_timeout_seconds": 1e-6})
    with TestClient(create_app(settings, store=store), raise_server_exceptions=False,
                    base_url="http://127.0.0.1:8000") as client:
        job = trained_job(client, store, "rnn_lm", "pydocs", LM_HP, lm_run)
        late = client.post(f"/jobs/{job['id']}/generate", json={"prompt": "a"})
        assert late.status_code == 503
        assert "TRAINYARD_INFERENCE_TIMEOUT_SECONDS" in late.json()["detail"]
        assert client.get(f"/jobs/{job['id']}").status_code == 200  # the rest still answers


def test_a_generation_stops_at_its_deadline(lm_run):
    """The limit stops the work, not only the wait: the sampling loop checks the deadline."""
    import time

    from models.checkpoints import model_from_checkpoint
    from models.inference import generate_text

    model, ckpt = model_from_checkpoint(lm_run[-1][2])
    with pytest.raises(TimeoutError, match="after 0 tokens"):
        generate_text(model, ckpt["vocab"], "char", "a", 2000, deadline=time.monotonic() - 1)
    done = generate_text(model, ckpt["vocab"], "char", "a", 50,
                         deadline=time.monotonic() + 600)
    assert done["tokens"] == 50

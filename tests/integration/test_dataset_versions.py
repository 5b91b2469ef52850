"""Users' datasets through the real API on SQLite and Postgres: versions (name@2), what jobs
record, deletion (refused while used, forced by an admin), the quota, privacy between users,
image uploads and their samples, failed uploads, and the upgrade of a database from 0012."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient
from sqlalchemy import text

from api.main import create_app
from api.security import new_api_key
from db.store import Store
from tests.integration.dataset_files import CORPUS_A, CORPUS_B, digits_zip, upload

RNN = {"epochs": 1, "seq_len": 16, "hidden_size": 16, "embedding_dim": 8}


def chunk_count(store: Store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM dataset_chunks")).scalar_one()


def submit(client, dataset: str, headers: dict | None = None, **body):
    return client.post("/jobs", json={"model": "rnn_lm", "dataset": dataset,
                                      "hyperparameters": RNN, **body}, headers=headers or {})


def test_versions_and_what_jobs_record(client, store):
    first = upload(client, "novel", CORPUS_A.encode())
    second = upload(client, "novel", CORPUS_B.encode())
    assert first.status_code == 201 and second.status_code == 201, second.text
    assert (first.json()["ref"], second.json()["ref"]) == ("novel@1", "novel@2")
    sha = {1: first.json()["sha256"], 2: second.json()["sha256"]}
    assert sha[2] == hashlib.sha256(CORPUS_B.encode()).hexdigest()
    listed = [d["ref"] for d in client.get("/datasets").json() if d["name"] == "novel"]
    assert listed == ["novel@1", "novel@2"]

    newest = submit(client, "novel").json()
    pinned = submit(client, "novel@1").json()
    assert (newest["dataset"], newest["dataset_version"], newest["dataset_sha256"]) == \
        ("novel", 2, sha[2])
    assert (pinned["dataset"], pinned["dataset_version"], pinned["dataset_sha256"]) == \
        ("novel", 1, sha[1])
    shown = client.get(f"/jobs/{pinned['id']}").json()
    assert (shown["dataset_version"], shown["dataset_sha256"]) == (1, sha[1])
    compared = client.get("/compare", params={"ids": f"{newest['id']},{pinned['id']}"}).json()
    assert [r["dataset_version"] for r in compared["runs"]] == [2, 1]
    assert "dataset_version" in compared["differing"]
    assert submit(client, "novel@3").status_code == 422  # no such version

    detail = client.get("/datasets/novel").json()
    assert [(v["ref"], v["jobs"]) for v in detail["versions"]] == [
        ("novel@1", [pinned["id"]]), ("novel@2", [newest["id"]])]
    samples = client.get("/datasets/novel/versions/1/samples").json()
    assert samples["sample"].startswith("It was the best") and samples["vocab"]["char"] > 10

    # a third upload does not move what the submitted jobs train on
    upload(client, "novel", CORPUS_A.encode() + b"more\n")
    assert store.get_job(newest["id"]).dataset_version == 2


def test_delete_is_refused_while_used_and_forced_by_an_admin(keyed_client, store, user_keys):
    alice = user_keys["alice"]
    assert upload(keyed_client, "mine", CORPUS_A.encode(), headers=alice).status_code == 201
    assert upload(keyed_client, "mine", CORPUS_B.encode(), headers=alice).status_code == 201
    job = submit(keyed_client, "mine@1", headers=alice).json()
    chunks = chunk_count(store)

    # a user's force is ignored: the 409 names the job
    refused = keyed_client.delete("/datasets/mine/versions/1", params={"force": "true"},
                                  headers=alice)
    assert refused.status_code == 409 and str(job["id"]) in refused.json()["detail"]
    assert store.get_dataset("mine", "alice", 1) is not None and chunk_count(store) == chunks

    # an unused version goes at once, its chunks with it
    assert keyed_client.delete("/datasets/mine/versions/2", headers=alice).status_code == 204
    assert store.get_dataset("mine", "alice", 2) is None and chunk_count(store) == chunks - 1

    key, prefix, digest = new_api_key()
    store.add_api_key("root", prefix, digest, is_admin=True)
    admin = {"Authorization": f"Bearer {key}"}
    assert keyed_client.delete("/datasets/mine/versions/1", headers=admin).status_code == 404
    forced = keyed_client.delete("/datasets/mine/versions/1",
                                 params={"force": "true", "owner": "alice"}, headers=admin)
    assert forced.status_code == 204, forced.text
    assert store.list_datasets("alice") == [] and chunk_count(store) == 0
    kept = store.get_job(job["id"])  # the job keeps the record of what it trained on
    assert (kept.dataset_version, kept.dataset_sha256) == (
        1, hashlib.sha256(CORPUS_A.encode()).hexdigest())
    assert keyed_client.get("/datasets/mine", headers=alice).status_code == 404


def test_another_users_dataset_is_404_everywhere(keyed_client, store, user_keys):
    alice, bob = user_keys["alice"], user_keys["bob"]
    assert upload(keyed_client, "private", CORPUS_A.encode(), headers=alice).status_code == 201
    assert "private" not in {d["name"] for d in keyed_client.get("/datasets", headers=bob).json()}
    for path in ("/datasets/private", "/datasets/private/versions/1/samples",
                 "/datasets/private?owner=alice"):
        assert keyed_client.get(path, headers=bob).status_code == 404, path
    assert keyed_client.delete("/datasets/private/versions/1",
                               headers=bob).status_code == 404
    assert keyed_client.delete("/datasets/private/versions/1", params={"owner": "alice"},
                               headers=bob).status_code == 404
    for ref in ("private", "private@1"):  # as a job's dataset: as unknown as any name
        refused = submit(keyed_client, ref, headers=bob)
        assert refused.status_code == 422 and "unknown dataset" in refused.text
    assert store.get_dataset("private", "alice") is not None


def test_over_the_quota_is_413_and_stores_nothing(store, api_settings):
    settings = api_settings.model_copy(update={"dataset_quota_bytes": 2 * len(CORPUS_A)})
    with TestClient(create_app(settings, store=store), raise_server_exceptions=False,
                    base_url="http://127.0.0.1:8000") as client:
        assert upload(client, "a", CORPUS_A.encode()).status_code == 201
        assert upload(client, "b", CORPUS_A.encode()).status_code == 201
        over = upload(client, "c", CORPUS_A.encode())
    assert over.status_code == 413
    assert "TRAINYARD_DATASET_QUOTA_BYTES" in over.json()["detail"]
    assert [d.ref for d in store.list_datasets()] == ["a@1", "b@1"]
    assert store.dataset_bytes("local") == 2 * len(CORPUS_A) and chunk_count(store) == 2


def test_an_upload_ingest_refuses_leaves_nothing(big_client, store, api_settings):
    lone_png = b"\x89PNG\r\n\x1a\n" + bytes(100)
    refused = upload(big_client, "picture", lone_png, filename="one.png")
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "file"]
    assert "one.png" in refused.json()["detail"][0]["msg"]
    mismatch = upload(big_client, "words", CORPUS_A.encode(), kind="images")
    assert mismatch.status_code == 422 and mismatch.json()["detail"][0]["loc"] == ["body", "kind"]
    assert store.list_datasets() == [] and chunk_count(store) == 0
    # nor any scratch file under the home folder
    assert not any((api_settings.home / "uploads").iterdir())


def test_an_image_folder_upload_and_its_samples(big_client, store):
    created = upload(big_client, "mydigits", digits_zip(), filename="digits.zip")
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["kind"], body["ref"], body["examples"]) == ("images", "mydigits@1", 1797)
    assert (body["summary"]["channels"], body["summary"]["height"],
            body["summary"]["width"]) == (1, 8, 8)
    samples = big_client.get("/datasets/mydigits/versions/1/samples",
                             params={"per_class": 3}).json()
    classes = samples["classes"]
    assert [c["name"] for c in classes] == [str(i) for i in range(10)]
    assert sum(c["count"] for c in classes) == 1797
    assert all(len(c["images"]) == 3 for c in classes)
    assert len(classes[0]["images"][0]) == 1 and len(classes[0]["images"][0][0]) == 8
    # an image job on it is sized by its shape and records its version; text models refuse it
    job = big_client.post("/jobs", json={"model": "cnn", "dataset": "mydigits",
                                         "hyperparameters": {"epochs": 1}})
    assert job.status_code == 201, job.text
    assert job.json()["dataset_version"] == 1
    assert submit(big_client, "mydigits").status_code == 422


def _upgrade_from_0012_keeps_a_text_dataset(url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from db.store import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "0012")
    data = CORPUS_A.encode()
    with Store(url) as old, old.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO datasets (name, kind, data, size, sha256, description, created_at, "
            "owner) VALUES ('old', 'text', :data, :size, :sha, '', '2026-01-01', 'alice')"),
            {"data": data, "size": len(data), "sha": hashlib.sha256(data).hexdigest()})
        conn.execute(text(
            "INSERT INTO jobs (name, model, dataset, hyperparameters, device, status, "
            "created_at, updated_at, epoch, step, attempts, infra_failures, owner) VALUES "
            "('j', 'rnn_lm', 'old', '{}', 'cpu', 'succeeded', '2026-01-01', '2026-01-01', 0, "
            "0, 1, 0, 'alice')"))
    with Store(url) as store:
        store.migrate()
        record = store.get_dataset("old", "alice")
        assert (record.version, record.size, record.kind) == (1, len(data), "text")
        assert record.summary["characters"] == len(CORPUS_A)
        assert store.get_dataset_data("old", "alice") == data
        assert chunk_count(store) == 1
        job = store.list_jobs()[0][0]
        assert (job.dataset_version, job.dataset_sha256) == (None, None)
        assert store.jobs_using_dataset("alice", "old", 1) == [job.id]  # from before 0013
        assert store.add_dataset("old", "text", b"newer", owner="alice").version == 2


def test_upgrade_from_0012_keeps_a_text_dataset_sqlite(sqlite_url):
    _upgrade_from_0012_keeps_a_text_dataset(sqlite_url)


def test_upgrade_from_0012_keeps_a_text_dataset_postgres(fresh_postgres_url):
    _upgrade_from_0012_keeps_a_text_dataset(fresh_postgres_url)

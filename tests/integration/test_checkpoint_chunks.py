"""Checkpoints bigger than one database value (migration 0019): the first piece in the
checkpoint's row, the rest in checkpoint_chunks, on SQLite and Postgres. Small pieces stand in for
the real 16 MiB ones where only the arithmetic matters; one test trains a model whose
checkpoints are two real pieces and resumes a job from one of them."""

from __future__ import annotations

import hashlib
import math
import os

import httpx
import pytest
import torch
from sqlalchemy import text

from core.settings import Settings
from db.store import Store
from db.tables import CHECKPOINT_CHUNK_BYTES
from models.train import load_checkpoint
from trainyard.client import ApiError, Client
from worker.runner import JobRunner

PIECE = 1000  # bytes per piece in the tests that set it
HP = {"epochs": 1, "hidden_sizes": [16, 16]}


def piece_rows(store: Store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM checkpoint_chunks")).scalar_one()


def test_checkpoints_of_every_size_come_back_whole(store):
    store.CHECKPOINT_CHUNK_BYTES = PIECE
    job = store.create_job("mlp", "digits", HP)
    sizes = [0, 1, PIECE - 1, PIECE, PIECE + 1, 2 * PIECE, 3 * PIECE + 500]
    blobs = [os.urandom(n) for n in sizes]
    records = [store.add_checkpoint(job.id, 1, step, blob, {})
               for step, blob in enumerate(blobs, start=1)]
    for record, blob in zip(records, blobs):
        assert (record.size, record.sha256) == (len(blob), hashlib.sha256(blob).hexdigest())
        assert store.get_checkpoint_data(job.id, record.id) == (record, blob)
        streamed_record, pieces = store.iter_checkpoint_data(job.id, record.id)
        streamed = list(pieces)
        assert streamed_record == record and b"".join(streamed) == blob
        assert all(len(p) == PIECE for p in streamed[:-1]), "every piece but the last is full"
    # the row keeps the first piece; each further piece is a row of checkpoint_chunks
    assert piece_rows(store) == sum(max(0, math.ceil(n / PIECE) - 1) for n in sizes)
    assert store.latest_checkpoint(job.id) == (records[-1], blobs[-1])
    other = store.create_job("mlp", "digits", HP)
    assert store.get_checkpoint_data(other.id, records[-1].id) is None  # not that job's
    assert store.iter_checkpoint_data(other.id, records[-1].id) is None


def test_pruning_and_deleting_a_job_take_the_pieces_too(store):
    store.CHECKPOINT_CHUNK_BYTES = PIECE
    job = store.create_job("mlp", "digits", HP)
    for epoch in range(1, 4):
        store.add_checkpoint(job.id, epoch, epoch, os.urandom(3 * PIECE), {}, keep_last=1)
    assert [c.epoch for c in store.list_checkpoints(job.id)] == [3]
    assert piece_rows(store) == 2, "the pruned checkpoints' pieces went with them"
    store.cancel_job(job.id)
    store.delete_job(job.id)
    assert piece_rows(store) == 0


def test_a_download_streams_every_piece(client, store):
    store.CHECKPOINT_CHUNK_BYTES = PIECE
    job = client.post("/jobs", json={"model": "mlp", "dataset": "digits",
                                     "hyperparameters": HP}).json()
    blob = os.urandom(3 * PIECE + 17)
    record = store.add_checkpoint(job["id"], 1, 3, blob, {})
    got = client.get(f"/jobs/{job['id']}/checkpoints/{record.id}/download")
    assert got.status_code == 200 and got.content == blob
    assert got.headers["content-length"] == str(len(blob))
    assert got.headers["x-checksum-sha256"] == hashlib.sha256(blob).hexdigest()
    assert got.headers["content-type"] == "application/octet-stream"
    assert client.get(f"/jobs/{job['id']}/checkpoints/{record.id + 1}/download"
                      ).status_code == 404


def test_the_client_saves_a_checkpoint_to_a_file_and_refuses_a_damaged_one(client, store,
                                                                          tmp_path):
    store.CHECKPOINT_CHUNK_BYTES = PIECE
    job = client.post("/jobs", json={"model": "mlp", "dataset": "digits",
                                     "hyperparameters": HP}).json()
    blob = os.urandom(4 * PIECE + 3)
    record = store.add_checkpoint(job["id"], 1, 4, blob, {})
    sdk = Client("http://127.0.0.1:8000")
    sdk._http = httpx.Client(transport=client._transport, base_url="http://127.0.0.1:8000")
    out = tmp_path / "out"
    out.mkdir()
    saved = sdk.save_checkpoint(job["id"], record.id, out / "ckpt.pt")
    assert saved.read_bytes() == blob and sdk.download_checkpoint(job["id"], record.id) == blob
    with pytest.raises(ApiError) as missing:
        sdk.save_checkpoint(job["id"], record.id + 1, out / "none.pt")
    assert missing.value.status_code == 404
    # a piece damaged in the database (same length, other bytes): the file is not kept
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE checkpoint_chunks SET data = :d WHERE seq = 2"),
                     {"d": bytes(PIECE)})
    with pytest.raises(ValueError, match="sha256"):
        sdk.save_checkpoint(job["id"], record.id, out / "damaged.pt")
    assert [p.name for p in out.iterdir()] == ["ckpt.pt"], "nothing kept of either"


# An MLP whose checkpoint (weights and Adam's two moments, ~1.6M parameters) is about 19 MB:
# two real pieces of CHECKPOINT_CHUNK_BYTES.
TWO_PIECE_MLP = {"epochs": 4, "hidden_sizes": [1200, 1200], "steps_per_epoch": 2, "seed": 5,
                 "batch_size": 16}


def test_a_model_whose_checkpoints_are_two_pieces_resumes_from_one_exactly(store, tmp_path):
    settings = Settings(home=tmp_path, metrics_flush_seconds=0.05)
    reference = store.create_job("mlp", "digits", TWO_PIECE_MLP, device="cpu")
    assert JobRunner(store, settings, "ref").run(reference.id) == "succeeded"
    checkpoints = store.list_checkpoints(reference.id)
    assert all(CHECKPOINT_CHUNK_BYTES < c.size <= 2 * CHECKPOINT_CHUNK_BYTES for c in checkpoints)
    final_record, final_blob = store.latest_checkpoint(reference.id)
    assert hashlib.sha256(final_blob).hexdigest() == final_record.sha256

    # A job whose worker died after epoch 2: its checkpoint there (read back from its two
    # pieces, as the worker wrote it) and the metrics up to it; the next worker resumes it.
    halfway = next(c for c in checkpoints if c.epoch == 2)
    _, blob = store.get_checkpoint_data(reference.id, halfway.id)
    job = store.create_job("mlp", "digits", TWO_PIECE_MLP, device="cpu")
    store.add_checkpoint(job.id, halfway.epoch, halfway.step, blob, halfway.metrics)
    assert JobRunner(store, settings, "next").run(job.id) == "succeeded"
    assert store.list_attempts(job.id)[0]["resumed_from_epoch"] == 2

    def after_halfway(job_id):
        return {name: [(p["step"], p["value"]) for p in points if p["step"] > halfway.step]
                for name, points in store.get_metrics(job_id).items()
                if not name.endswith("_per_s")}

    assert after_halfway(job.id) == after_halfway(reference.id), "every later step the same"
    resumed_final = load_checkpoint(store.latest_checkpoint(job.id)[1])
    reference_final = load_checkpoint(final_blob)
    assert resumed_final["step"] == reference_final["step"]
    for name, tensor in reference_final["model_state"].items():
        assert torch.equal(resumed_final["model_state"][name], tensor), name


def _upgrade_keeps_checkpoints_and_downgrade_joins_them(url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from db.store import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "0018")
    old = os.urandom(5000)
    with Store(url) as store, store.engine.begin() as conn:
        # rows as 0018 knew them (raw SQL: the live store names later columns)
        conn.execute(text(
            "INSERT INTO jobs (name, model, dataset, hyperparameters, device, status, "
            "created_at, updated_at, epoch, step, attempts, infra_failures, owner) VALUES "
            "('j', 'mlp', 'digits', '{}', 'cpu', 'succeeded', '2026-01-01', '2026-01-01', 1, "
            "1, 1, 0, 'local')"))
        job_id = conn.execute(text("SELECT id FROM jobs")).scalar_one()
        conn.execute(text(
            "INSERT INTO checkpoints (job_id, epoch, step, data, sha256, size, metrics, "
            "created_at) VALUES (:job, 1, 1, :data, :sha, :size, '{}', '2026-01-01')"),
            {"job": job_id, "data": old, "sha": hashlib.sha256(old).hexdigest(),
             "size": len(old)})
    with Store(url) as store:
        store.migrate()
        first = store.list_checkpoints(job_id)[0]
        assert store.get_checkpoint_data(job_id, first.id) == (first, old)
        store.CHECKPOINT_CHUNK_BYTES = PIECE
        new = os.urandom(3 * PIECE + 1)
        second = store.add_checkpoint(job_id, 2, 2, new, {})
        assert piece_rows(store) == 3
    command.downgrade(config, "0018")
    with Store(url) as store, store.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, data FROM checkpoints ORDER BY id")).all()
        assert [(r[0], bytes(r[1])) for r in rows] == [(first.id, old), (second.id, new)]
    command.upgrade(config, "head")


def test_upgrade_and_downgrade_keep_checkpoints_sqlite(sqlite_url):
    _upgrade_keeps_checkpoints_and_downgrade_joins_them(sqlite_url)


@pytest.mark.postgres
def test_upgrade_and_downgrade_keep_checkpoints_postgres(fresh_postgres_url):
    _upgrade_keeps_checkpoints_and_downgrade_joins_them(fresh_postgres_url)

"""Retention, the reconciler's last step, on SQLite and Postgres: with
TRAINYARD_RETENTION_FAILED_DAYS and _CANCELLED_DAYS set, only failed and cancelled jobs that
finished longer ago go (with all their rows); succeeded ones, recent ones, live ones, forks'
parents and running sweeps' trials stay; the work per pass is bounded; no setting, no deletion."""

from __future__ import annotations

import pytest

from core.settings import Settings
from tests.integration.lifecycle_runs import age, finished_run, rows_by_table
from worker.reconciler import reconcile_once

pytestmark = pytest.mark.postgres


def _settings(tmp_path, **retention) -> Settings:
    return Settings(home=tmp_path / "home", compare_summaries=False, **retention)


def _pass(store, settings):
    sent = []
    report = reconcile_once(store, lambda job_id, device: sent.append(job_id), settings)
    return report.retention_deleted


def test_retention_deletes_only_old_failed_and_cancelled_jobs(store, tmp_path):
    old_failed = finished_run(store, status="failed", steps=40)
    old_cancelled = finished_run(store, status="cancelled", steps=40)
    old_succeeded = finished_run(store, status="succeeded", steps=40)
    new_failed = finished_run(store, status="failed", steps=40)
    parent = finished_run(store, status="failed", steps=40)
    fork = finished_run(store, status="succeeded", steps=40, parent_job_id=parent.id)
    running = store.create_job("mlp", "mnist", {"lr": 0.1}, "cpu")
    store.claim_job(running.id, "w")
    for job in (old_failed, old_cancelled, old_succeeded, parent, fork):
        age(store, job.id, 10)
    age(store, new_failed.id, 2)

    assert _pass(store, _settings(tmp_path)) == []  # the default keeps everything
    assert store.get_job(old_failed.id) is not None

    settings = _settings(tmp_path, retention_failed_days=7, retention_cancelled_days=7)
    deleted = _pass(store, settings)
    assert sorted(deleted) == sorted([old_failed.id, old_cancelled.id])
    for job in (old_failed, old_cancelled):
        assert all(n == 0 for n in rows_by_table(store, job.id).values())
    for job in (old_succeeded, new_failed, parent, fork, running):
        assert store.get_job(job.id) is not None, job.id
    assert _pass(store, settings) == []  # the parent stays while its fork does

    store.delete_job(fork.id)
    assert _pass(store, settings) == [parent.id]


def test_retention_work_per_pass_is_bounded(store, tmp_path):
    jobs = [finished_run(store, status="failed", steps=10, log_lines=0) for _ in range(5)]
    for job in jobs:
        age(store, job.id, 3)
    settings = _settings(tmp_path, retention_failed_days=1, retention_jobs_per_pass=2)
    assert len(_pass(store, settings)) == 2
    assert len(_pass(store, settings)) == 2
    assert len(_pass(store, settings)) == 1
    assert all(store.get_job(j.id) is None for j in jobs)


def test_retention_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINYARD_RETENTION_FAILED_DAYS", "30")
    monkeypatch.setenv("TRAINYARD_RETENTION_SUCCEEDED_DAYS", "0")
    settings = Settings(home=tmp_path)
    from worker.retention import retention_days

    assert retention_days(settings) == {"failed": 30.0}
    monkeypatch.setenv("TRAINYARD_RETENTION_FAILED_DAYS", "-1")
    with pytest.raises(ValueError, match="retention_failed_days"):
        Settings(home=tmp_path)

"""A job's log (worker/job_log.py, db/store/logs.py) with the real runner against a real
database (SQLite and Postgres): the events of a run in order, across a drain and resume, a
failure's traceback, a cancel, two jobs at once in one process, and the per-job bound."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from core.settings import Settings
from db.store.logs import MARKER_SOURCE, MESSAGE_MAX_BYTES
from worker import runner as runner_module
from worker.job_log import JobLogCapture
from worker.runner import JobRunner

TINY_MLP = {"epochs": 3, "hidden_sizes": [16, 16], "steps_per_epoch": 6, "seed": 3}


def new_job(store, dataset="digits", **hp):
    return store.create_job(model="mlp", dataset=dataset, hyperparameters={**TINY_MLP, **hp},
                            device="cpu")


def settings(tmp_path, **extra) -> Settings:
    return Settings(home=tmp_path, metrics_flush_seconds=0.05, cancel_check_seconds=0.0,
                    heartbeat_seconds=0.05, **extra)


def messages(lines) -> list[str]:
    return [line["message"] for line in lines]


def index_of(lines, text: str, start: int = 0) -> int:
    """The index of the first line from `start` that holds `text` (fails when none does)."""
    for i, line in enumerate(lines[start:], start):
        if text in line["message"]:
            return i
    raise AssertionError(f"no line with {text!r} after line {start}: {messages(lines)}")


def test_a_jobs_log_tells_its_run_in_order(store, tmp_path):
    job = new_job(store)
    assert JobRunner(store, settings(tmp_path), "logger-worker").run(job.id) == "succeeded"
    lines = store.job_log_lines(job.id)

    # what the worker did and what training logged, in the order it happened
    at = index_of(lines, f"job {job.id} (priority 0, owner local) claimed by logger-worker "
                         "(attempt 1)")
    at = index_of(lines, "data loaded: dataset digits: 1,438 training and 359 validation "
                         "images, 10 classes, 1 x 8 x 8", at + 1)
    at = index_of(lines, "started fresh", at + 1)
    at = index_of(lines, "training mlp on cpu", at + 1)
    for epoch, step in ((1, 6), (2, 12), (3, 18)):
        at = index_of(lines, f"epoch {epoch}/3 done at step {step}: val_accuracy", at + 1)
        at = index_of(lines, f"checkpoint written at epoch {epoch}, step {step}", at + 1)
    last = index_of(lines, f"job {job.id} succeeded: train_loss", at + 1)
    assert last == len(lines) - 1, "how it ended is the last line"

    assert [line["id"] for line in lines] == sorted(line["id"] for line in lines)
    assert {line["attempt"] for line in lines} == {1}
    assert {line["level"] for line in lines} == {"INFO"}
    assert {line["source"] for line in lines} == {"trainyard.worker", "trainyard.train"}
    times = [line["time"] for line in lines]
    assert times == sorted(times)
    finished = store.get_job(job.id).finished_at
    assert times[-1] <= finished + dt.timedelta(seconds=1), "written before the job ended"


def test_a_failing_jobs_log_holds_its_traceback(store, tmp_path):
    job = new_job(store, dataset="no-such-dataset")
    assert JobRunner(store, settings(tmp_path), "w").run(job.id) == "failed"
    lines = store.job_log_lines(job.id)
    failure = lines[-1]
    assert failure["level"] == "ERROR" and failure["source"] == "trainyard.worker"
    assert failure["message"].startswith(f"job {job.id} failed: ValueError: unknown image "
                                         "dataset 'no-such-dataset'")
    assert "Traceback (most recent call last):" in failure["message"]
    assert 'File "' in failure["message"] and "in load_data" in failure["message"]
    assert "no-such-dataset" in store.get_job(job.id).error


def test_logs_stay_in_order_across_a_drain_and_its_resume(store, tmp_path):
    # Long enough that the drain lands in the middle on a loaded machine (the first checkpoint
    # comes after ~2 % of the run), short enough that the resumed attempt is quick.
    job = new_job(store, epochs=60)

    def sigterm_after_a_checkpoint():  # what the worker_shutting_down signal does
        deadline = time.monotonic() + 60
        while not store.list_checkpoints(job.id) and time.monotonic() < deadline:
            time.sleep(0.005)
        runner_module.DRAINING.set()

    thread = threading.Thread(target=sigterm_after_a_checkpoint)
    thread.start()
    try:
        assert JobRunner(store, settings(tmp_path), "first").run(job.id) == "drained"
    finally:
        thread.join()
        runner_module.DRAINING.clear()
    assert JobRunner(store, settings(tmp_path), "second").run(job.id) == "succeeded"
    history = store.list_attempts(job.id)
    assert [a["outcome"] for a in history] == ["drained", "succeeded"]

    lines = store.job_log_lines(job.id)
    attempts = [line["attempt"] for line in lines]
    first_end = attempts.index(2)
    assert attempts == [1] * first_end + [2] * (len(lines) - first_end), \
        "every line of the second attempt comes after every line of the first"
    first, second = lines[:first_end], lines[first_end:]
    assert "claimed by first (attempt 1)" in first[0]["message"]
    assert "stopping at epoch" in " ".join(messages(first))
    assert "drained at step" in first[-1]["message"]
    assert "claimed by second (attempt 2)" in second[0]["message"]
    resumed = store.latest_checkpoint(job.id)  # any: the epoch said must be the resumed one
    assert resumed is not None
    resume_line = second[index_of(second, "resumed from epoch")]["message"]
    epoch = int(resume_line.split("resumed from epoch ")[1].split(",")[0])
    assert epoch >= 1
    assert not any("started fresh" in m for m in messages(second))
    assert f"job {job.id} succeeded" in second[-1]["message"]


def test_a_cancelled_job_says_so(store, tmp_path):
    job = new_job(store, epochs=1000)

    def cancel_after_a_checkpoint():
        deadline = time.monotonic() + 60
        while not store.list_checkpoints(job.id) and time.monotonic() < deadline:
            time.sleep(0.005)
        store.cancel_job(job.id)

    thread = threading.Thread(target=cancel_after_a_checkpoint)
    thread.start()
    assert JobRunner(store, settings(tmp_path), "w").run(job.id) == "stopped"
    thread.join()
    said = messages(store.job_log_lines(job.id))
    # the status check or the refused progress write, whichever saw it first
    assert any(f"job {job.id}" in m and "stopping at the next step" in m for m in said)
    assert f"job {job.id} cancelled: stopped at epoch" in said[-1]


def test_two_jobs_at_once_in_one_process_each_log_only_their_own(store, tmp_path):
    a, b = new_job(store, epochs=4), new_job(store, epochs=4, seed=9)
    noise = logging.getLogger("trainyard.worker")
    stop = threading.Event()

    def unrelated_thread():  # a thread of no job logs all along: in neither job's log
        while not stop.is_set():
            noise.warning("unrelated line from another thread")
            time.sleep(0.01)

    threads = [threading.Thread(target=lambda j=j, n=n: results.append(
        JobRunner(store, settings(tmp_path), n).run(j.id))) for j, n in ((a, "wa"), (b, "wb"))]
    results: list[str] = []
    other = threading.Thread(target=unrelated_thread)
    other.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    other.join()
    assert results == ["succeeded", "succeeded"]
    for job, mine, theirs in ((a, "wa", b), (b, "wb", a)):
        said = messages(store.job_log_lines(job.id))
        assert f"claimed by {mine} (attempt 1)" in said[0]
        assert not any(f"job {theirs.id}" in m for m in said)
        assert not any("unrelated" in m for m in said)
        assert sum("checkpoint written" in m for m in said) == 4


def test_the_log_keeps_its_newest_lines_and_says_how_many_were_dropped(store):
    job = new_job(store)
    now = dt.datetime.now(dt.UTC)
    written = 0
    for batch in range(10):  # 10 writes of 7 lines, a bound of 20
        lines = [(1, now, "INFO", "trainyard.train", f"line {written + i}") for i in range(7)]
        store.add_job_logs(job.id, lines, max_lines=20)
        written += 7
        assert store.job_log_count(job.id) <= 20
    lines = store.job_log_lines(job.id)
    marker, kept = lines[0], lines[1:]
    assert (marker["level"], marker["source"]) == ("WARNING", MARKER_SOURCE)
    dropped = int(marker["message"].split(" ")[0].replace(",", ""))
    assert marker["message"].endswith("a job's log keeps its newest 20 lines "
                                      "(TRAINYARD_JOB_LOG_MAX_LINES)")
    # the kept lines are the newest, in order, and with the dropped ones account for all
    assert messages(kept) == [f"line {i}" for i in range(written - len(kept), written)]
    assert dropped + len(kept) == written
    assert sum(line["source"] == MARKER_SOURCE for line in lines) == 1
    # trimmed in batches: well under the bound after a trim, not one line per write
    assert len(lines) < 20


def test_a_huge_message_is_cut_and_nul_is_storable(store, tmp_path):
    job = new_job(store)
    capture = JobLogCapture(job.id, 1).attach()
    try:
        logging.getLogger("trainyard.train").warning("x" * 200_000)
        logging.getLogger("trainyard.train").info("a NUL \x00 in a line")
        logging.getLogger("trainyard.train").debug("below the level: not kept")
    finally:
        capture.detach()
    capture.write_now(store)
    big, nul = store.job_log_lines(job.id)
    assert len(big["message"].encode()) <= MESSAGE_MAX_BYTES
    assert big["message"].startswith("xxxx") and "more bytes cut" in big["message"]
    assert nul["message"] == "a NUL \ufffd in a line"


def test_a_two_process_jobs_log_is_rank_zeros(sqlite_url, tmp_path):
    from db.store import Store

    store = Store(sqlite_url)
    store.migrate()
    try:
        job = store.create_job(model="mlp", dataset="digits", device="cpu", gpus=2,
                               hyperparameters={**TINY_MLP, "batch_size": 64})
        assert JobRunner(store, settings(tmp_path), "w").run(job.id) == "succeeded"
        said = messages(store.job_log_lines(job.id))
    finally:
        store.close()
    assert any("started 1 helper ranks for a 2-process gloo run" in m for m in said)
    # the helper rank trains too, but only rank 0 speaks: each event once
    assert sum("training mlp on cpu (2 processes)" in m for m in said) == 1
    for epoch in (1, 2, 3):
        assert sum(f"epoch {epoch}/3 done" in m for m in said) == 1
    assert f"job {job.id} succeeded" in said[-1]


def test_the_console_keeps_its_level_and_a_flood_between_writes_is_bounded():
    seen: list[str] = []

    class Console(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    console = Console()
    root, parent = logging.getLogger(), logging.getLogger("trainyard")
    before = parent.level
    root.addHandler(console)
    parent.setLevel(logging.WARNING)  # as a worker started with --log-level warning
    try:
        capture = JobLogCapture(1, 1, "INFO", max_lines=10).attach()
        try:
            for i in range(25):
                logging.getLogger("trainyard.train").info("step %d", i)
            logging.getLogger("trainyard.train").warning("a warning")
        finally:
            capture.detach()
        assert parent.level == logging.WARNING, "restored once detached"
    finally:
        root.removeHandler(console)
        parent.setLevel(before)
    assert seen == ["a warning"], "the console printed no more than its level allows"
    # 26 lines captured before any write: the newest 10 are held, with a line saying so
    held = capture.take()
    assert [line[4] for line in held] == [
        "16 lines dropped: logged faster than they could be written",
        *[f"step {i}" for i in range(16, 25)], "a warning"]
    assert [line[2] for line in held] == ["WARNING"] + ["INFO"] * 9 + ["WARNING"]
    assert not capture.pending()


def test_a_preempted_jobs_log_says_why_it_stopped(store, tmp_path):
    from sqlalchemy import update

    from db.tables import Job

    job = new_job(store, epochs=1000)

    def ask_for_its_worker():  # what the reconciler's preemption pass records
        deadline = time.monotonic() + 60
        while not store.list_checkpoints(job.id) and time.monotonic() < deadline:
            time.sleep(0.005)
        with store.engine.begin() as conn:
            conn.execute(update(Job).where(Job.id == job.id)
                         .values(preempt_requested_at=dt.datetime.now(dt.UTC)))

    thread = threading.Thread(target=ask_for_its_worker)
    thread.start()
    assert JobRunner(store, settings(tmp_path), "w").run(job.id) == "preempted"
    thread.join()
    lines = store.job_log_lines(job.id)
    at = index_of(lines, "preemption asked (a job of higher priority needs this worker)")
    # where it stopped: mid-epoch "with a checkpoint there", or at an epoch's first step, where
    # the epoch's own checkpoint is the resume point
    at = index_of(lines, "stopping at epoch", at + 1)
    assert index_of(lines, "preempted at step", at + 1) == len(lines) - 1
    assert store.get_status(job.id) == "queued"

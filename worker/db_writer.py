"""How a running job's database writes leave the training process: in order, bounded, and
never silently lost.

Two writers offer one interface (`StoreWriter`: `call` a Store method, `ask` for its answer
later, `drain`, `close`):

- `ProcessStoreWriter` (the default, `TRAINYARD_DB_WRITER=process`): the writes go, pickled,
  through a bounded multiprocessing queue to one writer process per worker process, which
  runs them on its own Store. SQLAlchemy's and the driver's Python work then never holds the
  trainer's GIL; the trainer only queues a message (one per step at most: an epoch end's
  metrics, checkpoint and progress leave together), and learns of replies from a shared
  counter, without a system call. The child is started ('spawn': safe after
  CUDA initialisation) at the first job and serves the worker's later jobs too, so a job does
  not pay for its start-up (about a second of imports).
- `ThreadStoreWriter` (`TRAINYARD_DB_WRITER=thread`, and the fallback where a child cannot be
  started: an in-memory database, a daemonic parent): a background thread in the trainer's
  process (`DatabaseWriter`), as before.

Both keep the same promises: writes land in submission order (metrics before the checkpoint
that follows them); the queue is bounded, so a slow database slows training instead of growing
memory; the first failed write is raised in the trainer at its next call or at drain/close, and
the rest of that job's writes are dropped; writes that find the database unreachable are
retried for `retry_seconds`; once `abandon` is set (the job is someone else's) queued writes
are dropped. The writer process exits when its parent dies (kill -9 included): it watches a
pipe only the parent holds open, and its parent's pid.

This module imports no torch: it is all the writer process imports (with db.store).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import itertools
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import types
from typing import Any, Protocol

from db.store import Conflict, NotFound, Store, StoreError, describe_db_error, is_connection_error

log = logging.getLogger("trainyard.worker")

WRITER_KINDS = ("process", "thread")
_SLOTS = 64  # abandon flags, one per session id modulo this (a worker runs few jobs at once)


def retry_while_unreachable(fn, *args, retry_seconds: float = 600.0, **kwargs):
    """Call `fn`, retrying with exponential backoff (0.1 s doubling to 5 s) for as long as the
    database is unreachable, up to `retry_seconds`; any other error is raised at once.

    Only for idempotent writes (metric upserts, guarded transitions, progress): a commit whose
    answer was lost may be applied twice."""
    deadline = time.monotonic() + retry_seconds
    delay = 0.1
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_connection_error(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("database unreachable (%s): retrying in %.1f s", type(exc).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class DatabaseWriter:
    """One background thread that performs writes (any callables), in the order submitted.

    Training never waits for a commit, and the order still guarantees that a checkpoint lands
    after the metrics that precede it. The queue is bounded, so a slow database slows training
    down instead of growing memory. The first failed write is re-raised in the submitting
    thread at the next submit or at drain()."""

    def __init__(self, name: str, max_pending: int = 1000, retry_seconds: float = 0.0,
                 abandon: threading.Event | None = None):
        # retry_seconds > 0: a write that finds the database unreachable is retried (in order,
        # so later writes wait behind it) for up to that long before it counts as failed.
        # abandon, once set, drops every write still queued (the job is someone else's now).
        self.retry_seconds = retry_seconds
        self.abandon = abandon
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                abandoned = self.abandon is not None and self.abandon.is_set()
                # after a failure, drop the rest: the job is failing
                if self._error is None and not abandoned:
                    fn, args, kwargs = item
                    if self.retry_seconds > 0:
                        retry_while_unreachable(fn, *args, retry_seconds=self.retry_seconds,
                                                **kwargs)
                    else:
                        fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, fn, *args, **kwargs) -> None:
        self._raise_if_failed()
        self._queue.put((fn, args, kwargs))

    def drain(self) -> None:
        """Wait until every submitted write is done; raise the first failure."""
        self._queue.join()
        self._raise_if_failed()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class StoreWriter(Protocol):
    """A job's writes to its Store, performed elsewhere, in the order submitted."""

    def call(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Run store.<method>(*args, **kwargs) later; raises an earlier write's failure. A
        writer may hold calls until the next answers(), drain() or close() (the trainer asks
        for answers before every step)."""

    def ask(self, tag: str, method: str, *args: Any, **kwargs: Any) -> None:
        """As call(); its result comes back, tagged, from a later answers()."""

    def answers(self) -> list[tuple[str, Any]]:
        """The (tag, result) of asks done since the last call; never waits."""

    def drain(self) -> None:
        """Wait until every submitted write is done; raise the first failure."""

    def close(self) -> None:
        """Release the writer (after drain(); idempotent)."""


class ThreadStoreWriter:
    """A StoreWriter on a `DatabaseWriter` thread in this process."""

    def __init__(self, store: Store, name: str, retry_seconds: float = 0.0,
                 abandon: threading.Event | None = None, max_pending: int = 1000):
        self.store = store
        self._writer = DatabaseWriter(name, max_pending, retry_seconds, abandon)
        self._answers: collections.deque = collections.deque()  # appended by the thread

    def call(self, method: str, *args: Any, **kwargs: Any) -> None:
        self._writer.submit(getattr(self.store, method), *args, **kwargs)

    def ask(self, tag: str, method: str, *args: Any, **kwargs: Any) -> None:
        self._writer.submit(self._answer, tag, getattr(self.store, method), args, kwargs)

    def _answer(self, tag, fn, args, kwargs) -> None:
        self._answers.append((tag, fn(*args, **kwargs)))

    def answers(self) -> list[tuple[str, Any]]:
        found = []
        while self._answers:
            found.append(self._answers.popleft())
        return found

    def drain(self) -> None:
        self._writer.drain()

    def close(self) -> None:
        self._writer.close()


# ------------------------------------------------------------------ the writer process
# Parent -> child messages, on one bounded queue, in order:
#   ("open", sid, url, retry_seconds)  ("calls", sid, [(tag | None, method, args, kwargs), ...])
#   ("sync", sid, token)  ("close", sid)  None: exit
# Child -> parent: ("error", sid, exc)  ("answer", sid, tag, ok, value)  ("synced", sid, token),
# each counted in a shared `replied`, so the trainer looks at the queue only when one is due.
_BATCH_MAX = 64  # calls sent as one message at most (the trainer sends at every step anyway)


class WriterProcessDied(RuntimeError):
    pass


class _WriterProcess:
    """This process's writer child and its two queues. Replies are routed to their session
    (several jobs may write at once in one process: tests, threads)."""

    def __init__(self, max_pending: int):
        ctx = multiprocessing.get_context("spawn")  # never fork: CUDA may be initialised here
        self.owner = os.getpid()
        self.requests = ctx.Queue(maxsize=max_pending)
        self.replies = ctx.Queue()
        self.abandoned = ctx.RawArray("q", _SLOTS)
        self.replied = ctx.RawValue("q", 0)  # replies the child has sent
        self._received = 0
        watch, self._alive = ctx.Pipe(duplex=False)  # the child sees EOF when we die
        self.process = ctx.Process(
            target=serve, name="trainyard-db-writer", daemon=True,
            args=(self.requests, self.replies, self.replied, self.abandoned, watch,
                  self.owner))
        with _main_module_hidden():
            self.process.start()
        watch.close()
        self._lock = threading.Lock()  # one reader of `replies` at a time
        self._inbox: dict[int, collections.deque] = collections.defaultdict(collections.deque)
        self._sids = itertools.count(1)

    def new_session(self) -> int:
        sid = next(self._sids)
        self.abandoned[sid % _SLOTS] = 0
        return sid

    def put(self, message) -> None:
        # Bounded: blocks while the child is `max_pending` messages behind, unless it died.
        while True:
            try:
                self.requests.put(message, timeout=1.0)
                return
            except queue.Full:
                self.check_alive()

    def check_alive(self) -> None:
        if not self.process.is_alive():
            raise WriterProcessDied(f"the database writer process exited "
                                    f"(exit code {self.process.exitcode})")

    def take(self, sid: int, wait: float = 0.0) -> list:
        """Replies for session `sid`: those already here, or (wait > 0) the first to come
        within `wait` seconds."""
        inbox = self._inbox[sid]
        # Reading a shared counter costs nothing; Queue.empty() is a poll() system call.
        if not inbox and (wait > 0 or self.replied.value > self._received):
            with self._lock:
                deadline = time.monotonic() + wait
                while True:
                    while self._received < self.replied.value and not self.replies.empty():
                        self._route(self.replies.get())  # whatever arrived, for anyone
                    left = deadline - time.monotonic()
                    if inbox or left <= 0:
                        break
                    try:
                        self._route(self.replies.get(timeout=left))
                    except queue.Empty:
                        break
        found = []
        while inbox:  # popleft, not a copy and clear: another thread may be routing to us
            found.append(inbox.popleft())
        return found

    def _route(self, message) -> None:
        self._received += 1
        self._inbox[message[1]].append(message)

    def stop(self) -> None:
        if self.owner != os.getpid() or not self.process.is_alive():
            return
        try:
            self.requests.put(None, timeout=1.0)
            self.process.join(timeout=5)
        except Exception:  # exiting anyway: killed below
            log.debug("the writer process did not stop cleanly", exc_info=True)
        if self.process.is_alive():
            self.process.kill()
            self.requests.cancel_join_thread()  # nobody reads it any more: do not hang exit


@contextlib.contextmanager
def _main_module_hidden():
    """'spawn' re-imports the parent's __main__ in the child: a script without an
    `if __name__ == "__main__"` guard would run again there, and a CLI's imports cost time. The
    child needs nothing of it (its target lives here), so it is not told about it."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


_shared: _WriterProcess | None = None
_shared_lock = threading.Lock()


def _writer_process(max_pending: int) -> _WriterProcess:
    global _shared
    with _shared_lock:
        if _shared is None or _shared.owner != os.getpid() or not _shared.process.is_alive():
            _shared = _WriterProcess(max_pending)
            atexit.register(_shared.stop)  # before multiprocessing's own exit handler runs
        return _shared


class ProcessStoreWriter:
    """A StoreWriter whose writes run in this process's writer child, on a Store of `url`."""

    def __init__(self, url: str, retry_seconds: float = 0.0,
                 abandon: threading.Event | None = None, max_pending: int = 1000):
        self._proc = _writer_process(max_pending)
        self.sid = self._proc.new_session()
        self.abandon = abandon
        self._error: BaseException | None = None
        self._answers: list[tuple[str, Any]] = []
        self._asked = 0  # asks not answered yet: answers() looks for replies only then
        self._synced: set[int] = set()
        self._tokens = itertools.count(1)
        self._closed = False
        # Calls wait here until the trainer's next answers() (every step), drain() or close():
        # an epoch end's metrics, checkpoint and progress then leave as one message.
        self._batch: list[tuple] = []
        self._proc.put(("open", self.sid, url, retry_seconds))

    def _sync_abandon(self) -> None:
        # The heartbeat's `taken` is a thread event here; the child reads a shared flag.
        if self.abandon is not None and self.abandon.is_set():
            self._proc.abandoned[self.sid % _SLOTS] = self.sid

    def _receive(self, wait: float = 0.0) -> None:
        for message in self._proc.take(self.sid, wait):
            kind = message[0]
            if kind == "error":
                if self._error is None:
                    self._error = message[2]
            elif kind == "answer":
                self._asked -= 1
                _, _, tag, ok, value = message
                if ok:
                    self._answers.append((tag, value))
            elif kind == "synced":
                self._synced.add(message[2])

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _submit(self, tag: str | None, method: str, args, kwargs) -> None:
        self._sync_abandon()
        self._receive()
        self._raise_if_failed()
        self._batch.append((tag, method, args, kwargs))
        if len(self._batch) >= _BATCH_MAX:
            self._send()

    def _send(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self._proc.put(("calls", self.sid, batch))

    def call(self, method: str, *args: Any, **kwargs: Any) -> None:
        self._submit(None, method, args, kwargs)

    def ask(self, tag: str, method: str, *args: Any, **kwargs: Any) -> None:
        self._submit(tag, method, args, kwargs)
        self._asked += 1

    def answers(self) -> list[tuple[str, Any]]:
        self._sync_abandon()
        self._send()
        if self._asked:
            self._receive()
        found, self._answers = self._answers, []
        return found

    def drain(self) -> None:
        self._sync_abandon()
        self._send()
        token = next(self._tokens)
        self._proc.put(("sync", self.sid, token))
        while token not in self._synced:
            self._receive(wait=1.0)
            if token not in self._synced:
                self._sync_abandon()
                self._proc.check_alive()
        self._synced.discard(token)
        self._raise_if_failed()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._proc._inbox.pop(self.sid, None)
        if self._proc.process.is_alive():
            self._send()  # normally empty: close() comes after drain()
            self._proc.put(("close", self.sid))


def open_store_writer(store: Store, name: str, kind: str = "process", retry_seconds: float = 0.0,
                      abandon: threading.Event | None = None,
                      max_pending: int = 1000) -> StoreWriter:
    """A writer for a job's writes to `store`: its own process where it can have one."""
    database = store.url.database or ""
    in_memory = store.url.get_backend_name() == "sqlite" and (
        database in ("", ":memory:") or "mode=memory" in database)
    if kind == "process" and not in_memory:  # a child cannot open our in-memory database
        try:
            return ProcessStoreWriter(store.url.render_as_string(hide_password=False),
                                      retry_seconds, abandon, max_pending)
        except Exception:  # e.g. a daemonic process may not have children
            log.warning("%s: no writer process; writing from a thread", name, exc_info=True)
    return ThreadStoreWriter(store, name, retry_seconds, abandon, max_pending)


# ------------------------------------------------------------------ in the child
class _Session:
    def __init__(self, url: str, retry_seconds: float):
        self.url, self.retry_seconds, self.failed = url, retry_seconds, False


def _perform(session: _Session, stores: dict[str, Store], method: str, args, kwargs):
    """Run one write: (True, its result), or (False, the exception)."""
    try:
        if session.url not in stores:  # migrated already, by the worker
            stores[session.url] = Store(session.url)
        fn = getattr(stores[session.url], method)
        if session.retry_seconds > 0:
            return True, retry_while_unreachable(fn, *args, retry_seconds=session.retry_seconds,
                                                 **kwargs)
        return True, fn(*args, **kwargs)
    except Exception as exc:  # handed to the trainer
        log.warning("%s failed", method, exc_info=True)
        return False, exc


def _reply(replies, replied, message) -> None:
    replies.put(message)
    replied.value += 1  # after the put: the parent never waits for a reply it was promised


class DatabaseWriteError(RuntimeError):
    """A write that failed in the writer process, told in words: an arbitrary exception (a
    driver's, with its connection state) may not survive the trip to the trainer."""


def _portable(exc: BaseException) -> BaseException:
    """`exc` when it is one of the store's plain errors (the trainer gets it as is), else a
    DatabaseWriteError that says the same without SQL (see describe_db_error)."""
    if type(exc) in (StoreError, NotFound, Conflict):  # message-only: rebuilt from args
        return exc
    return DatabaseWriteError(describe_db_error(exc) or f"{type(exc).__name__}: {exc}")


def _exit_with_parent(watch, parent_pid: int) -> None:
    # poll() turns true at EOF, when the parent's end closes (it exited or was killed); the
    # pid check covers a copy of that end kept open elsewhere (a fork of the parent).
    while not watch.poll(1.0) and os.getppid() == parent_pid:
        pass
    os._exit(0)


def serve(requests, replies, replied, abandoned, watch, parent_pid: int) -> None:
    """The writer process: run each session's writes in order until told to stop or the
    parent is gone."""
    # Ctrl-C or a SIGTERM sent to the worker's process group must not kill the writer while
    # the worker drains: the worker ends it (or its death does).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s[writer] %(message)s")
    threading.Thread(target=_exit_with_parent, args=(watch, parent_pid), daemon=True).start()
    sessions: dict[int, _Session] = {}
    stores: dict[str, Store] = {}
    while True:
        message = requests.get()
        if message is None:
            return
        kind, sid = message[0], message[1]
        if kind == "open":
            sessions[sid] = _Session(message[2], message[3])
        elif kind == "calls":
            session = sessions[sid]
            for tag, method, args, kwargs in message[2]:
                ok, value = False, None
                # after a failure, drop the rest: the job is failing; abandoned: not ours
                if not session.failed and abandoned[sid % _SLOTS] != sid:
                    ok, value = _perform(session, stores, method, args, kwargs)
                    if not ok:
                        session.failed = True
                        _reply(replies, replied, ("error", sid, _portable(value)))
                        value = None
                if tag is not None:
                    _reply(replies, replied, ("answer", sid, tag, ok, value))
        elif kind == "sync":
            _reply(replies, replied, ("synced", sid, message[2]))
        elif kind == "close":
            url = sessions.pop(sid).url
            if url in stores and all(s.url != url for s in sessions.values()):
                # no connections held between jobs (a test database may be dropped)
                stores.pop(url).engine.dispose()

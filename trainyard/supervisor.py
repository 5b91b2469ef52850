"""Keeps `trainyard up`'s worker process alive: a worker that dies is started again.

A worker can die of things outside its job's control (a crash in a library, the OOM killer, a
kill -9). In embedded mode it is the only worker, so without a restart every job would stay
queued. The supervisor waits on the process in a thread; when it ends while the service is not
stopping, the exit is logged and a new worker is started after a back-off (1 s, doubling up to
60 s while it keeps dying within a minute of its start; back to 1 s after a minute of life). The
job it was running is not lost: its lease runs out and a reconciler (the API's, or the new
worker's at start) requeues it; it resumes from its last checkpoint.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable

log = logging.getLogger("trainyard.supervisor")

SHORT_LIFE_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 60.0


class Supervisor:
    """Runs `start()` (which returns a Popen) and starts it again whenever the process ends."""

    def __init__(self, label: str, start: Callable[[], subprocess.Popen],
                 first_backoff: float = 1.0) -> None:
        self.label, self._start, self.first_backoff = label, start, first_backoff
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._thread = threading.Thread(target=self._watch, name=f"supervise-{label}",
                                        daemon=True)

    def start(self) -> Supervisor:
        with self._lock:
            self.process = self._start()
        self._thread.start()
        return self

    def _watch(self) -> None:
        backoff = self.first_backoff
        while not self._stopping.is_set():
            process = self.process
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            lived = time.monotonic() - started
            backoff = self.first_backoff if lived >= SHORT_LIFE_SECONDS else backoff
            log.error("%s (pid %s) exited with code %s after %.0f s; starting a new one in "
                      "%.0f s", self.label, process.pid, code, lived, backoff)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            with self._lock:
                if self._stopping.is_set():
                    return
                try:
                    self.process = self._start()
                except OSError:
                    log.exception("could not start %s; trying again", self.label)
                    continue
                self.restarts += 1
            log.warning("%s restarted (pid %s, restart %d)", self.label, self.process.pid,
                        self.restarts)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process (a worker drains its job), SIGKILL it after `timeout`."""
        with self._lock:
            self._stopping.set()
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

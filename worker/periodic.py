"""A pass repeated in a daemon thread: the reconciler's and the presence beat's shape."""

from __future__ import annotations

import threading
from typing import Self


class PeriodicThread:
    """Runs `tick()` at once and then every `interval` seconds in a daemon thread, until
    `stop()`. A tick handles its own errors: one that raises ends the thread."""

    def __init__(self, name: str, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            self.tick()
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

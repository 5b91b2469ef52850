"""Parameter importances of sweeps, kept per API process: computing them (Optuna's PED-ANOVA
over a rebuilt study) takes from a few milliseconds to a second or more with a thousand trials,
and a sweep page asks again whenever a trial moves. The answer depends only on the completed
trials, which never change once completed, so it is keyed by the sweep and how many of its
trials have completed (and been pruned, for the note)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

Key = tuple[int, int, int]  # (sweep id, completed trials, pruned trials)
Found = tuple[dict[str, float], int]


class ImportanceCache:
    """An LRU of at most `size` answers; safe to share between the API's threads."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._entries: OrderedDict[Key, Found] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Key, compute: Callable[[], Found]) -> Found:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        found = compute()  # outside the lock: two threads may both compute, once each
        with self._lock:
            self._entries[key] = found
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return found


IMPORTANCES = ImportanceCache()

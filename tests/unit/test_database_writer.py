"""The worker's background writer keeps order and never swallows a failed write."""

from __future__ import annotations

import threading

import pytest

from worker.runner import DatabaseWriter


def test_writes_happen_in_order_off_the_calling_thread():
    done, threads = [], set()
    writer = DatabaseWriter("test-writer")

    def write(i):
        threads.add(threading.current_thread().name)
        done.append(i)

    for i in range(500):
        writer.submit(write, i)
    writer.drain()
    writer.close()
    assert done == list(range(500))
    assert threads == {"test-writer"}


def test_a_failed_write_is_raised_to_the_caller_and_later_writes_are_dropped():
    done = []
    writer = DatabaseWriter("test-writer")
    writer.submit(done.append, 1)
    writer.submit(lambda: 1 / 0)
    writer.submit(done.append, 3)
    with pytest.raises(ZeroDivisionError):
        writer.drain()
    with pytest.raises(ZeroDivisionError):
        writer.submit(done.append, 4)
    writer.close()
    writer.close()  # closing twice is harmless
    assert done == [1]

"""The worker's background writer keeps order and never swallows a failed write."""

from __future__ import annotations

import threading

import pytest

from worker.db_writer import DatabaseWriter


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


def test_writes_are_retried_in_order_while_the_database_is_unreachable():
    from sqlalchemy.exc import IntegrityError, OperationalError

    done, failures = [], [2]

    def flaky(i):
        if i == 1 and failures[0]:  # the database is away for two tries of write 1
            failures[0] -= 1
            raise OperationalError("INSERT", {}, ConnectionError("server closed the connection"))
        done.append(i)

    writer = DatabaseWriter("test-writer", retry_seconds=10)
    for i in range(4):
        writer.submit(flaky, i)
    writer.drain()
    assert done == [0, 1, 2, 3], "nothing lost, order kept"

    def bad(_):  # not a connection problem: no retry would fix it
        raise IntegrityError("INSERT", {}, ValueError("duplicate"))

    writer.submit(bad, 0)
    with pytest.raises(IntegrityError):
        writer.drain()
    writer.close()

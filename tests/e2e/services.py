"""What every end-to-end fixture does around a service it started (imported by the fixtures;
conftest.py holds the shared fixtures themselves)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from trainyard.local_service import LocalService


def failed(request) -> bool:
    """Whether the test using the fixture failed (its report is kept by conftest.py's hook)."""
    report = getattr(request.node, "rep_call", None)
    return bool(report and report.failed)


@contextmanager
def serving(service: LocalService, request, timeout: float = 60) -> Iterator[LocalService]:
    """Wait until `service` answers, hand it to the test, then stop it, printing its logs
    first if the test failed."""
    try:
        service.wait_healthy(timeout)
        yield service
    finally:
        if failed(request):
            print(service.logs())
        service.stop()

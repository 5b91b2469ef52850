"""`trainyard api --workers 2`: two API processes on one port and one PostgreSQL database.

Which process answered a request is read from the kernel, not from the app: a keep-alive
connection belongs to the worker process that accepted it, found by matching the connection's
socket in /proc/net/tcp with the sockets each process holds (/proc/<pid>/fd).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.services import serving
from trainyard.local_service import LocalService, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.postgres,
              pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")]

ADMIN_KEY = "k" * 40


class Connection:
    """One keep-alive HTTP/1.1 connection: it stays with the process that accepted it."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.local_port = self.sock.getsockname()[1]
        self.reader = self.sock.makefile("rb")

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        payload = json.dumps(body).encode() if body is not None else b""
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
        self.sock.sendall(head.encode() + payload)
        status = int(self.reader.readline().split()[1])
        length = 0
        while (line := self.reader.readline().strip()):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, json.loads(self.reader.read(length) or b"null")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def worker_pids(parent: int) -> list[int]:
    """uvicorn's worker processes: the parent's children started by multiprocessing."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    pids = []
    for pid in map(int, children):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            pids.append(pid)
    return pids


def server_side_owner(api_port: int, pids: list[int]) -> dict[int, int]:
    """{client port: pid of the worker holding the server end} for open connections."""
    peer_of_inode = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == api_port:
                peer_of_inode[inode] = int(remote.rsplit(":", 1)[1], 16)
    owners = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            inode = target[len("socket:["):-1] if target.startswith("socket:[") else None
            if inode in peer_of_inode:
                owners[peer_of_inode[inode]] = pid
    return owners


@pytest.fixture
def two_process_api(tmp_path, fresh_postgres_url, redis_url, request):
    service = LocalService(tmp_path, {"TRAINYARD_DATABASE_URL": fresh_postgres_url,
                                      "TRAINYARD_BROKER_URL": redis_url,
                                      "TRAINYARD_ADMIN_KEY": ADMIN_KEY}, free_port())
    service.start("api", "api", "--port", str(service.port), "--workers", "2")
    with serving(service, request, timeout=90):
        yield service


def test_two_api_processes_serve_one_port_and_one_database(two_process_api, fresh_postgres_url):
    service = two_process_api
    parent = service.processes["api"].pid
    pids = service.wait_for(lambda: (p := worker_pids(parent)) and len(p) == 2 and p,
                            "two uvicorn worker processes")
    assert parent not in pids

    # Keep connecting until each process holds connections of its own, each having answered.
    by_pid: dict[int, list[Connection]] = {pid: [] for pid in pids}
    opened: list[Connection] = []
    try:
        deadline = time.monotonic() + 60
        while not all(by_pid.values()) and time.monotonic() < deadline:
            batch = [Connection(service.port) for _ in range(8)]
            opened += batch
            for conn in batch:
                status, health = conn.request("GET", "/healthz")
                assert status == 200 and health["database"] == "ok"
            owners = server_side_owner(service.port, pids)
            for conn in batch:
                if conn.local_port in owners:
                    by_pid[owners[conn.local_port]].append(conn)
        assert all(by_pid.values()), f"connections per process: {by_pid}"

        first, second = (by_pid[pid][0] for pid in pids)
        status, job = first.request("POST", "/jobs", {
            "model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": 1},
            "device": "cpu", "name": "seen-by-both"})
        assert status == 201
        status, seen = second.request("GET", f"/jobs/{job['id']}")
        assert status == 200
        assert (seen["id"], seen["name"], seen["status"]) == (job["id"], "seen-by-both", "queued")
        status, listed = second.request("GET", "/jobs")
        assert status == 200 and [j["id"] for j in listed["items"]] == [job["id"]]
    finally:
        for conn in opened:
            conn.close()

    # Both processes started against one database; the admin key was registered once.
    from db.store import Store

    store = Store(fresh_postgres_url)
    try:
        assert [k.owner for k in store.list_api_keys()] == ["admin"]
    finally:
        store.close()


def test_workers_refuse_a_public_address_without_keys(tmp_path, fresh_postgres_url):
    """The check happens once, before any worker process starts: the command exits."""
    env = {**os.environ, "TRAINYARD_HOME": str(tmp_path),
           "TRAINYARD_DATABASE_URL": fresh_postgres_url, "TRAINYARD_REQUIRE_KEYS": "0"}
    env.pop("TRAINYARD_ADMIN_KEY", None)
    done = subprocess.run([sys.executable, "-m", "trainyard", "api", "--host", "0.0.0.0",
                           "--port", str(free_port()), "--workers", "2"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "refusing to serve 0.0.0.0 without API keys" in done.stderr

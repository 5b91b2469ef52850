"""Start trainyard processes on this machine and talk to them over HTTP.

Used by the end-to-end tests and the benchmarks: each service is a real OS process (`trainyard
api`, `worker`, `up`) on a free port, reached exactly as a user reaches it. Logs go to files under
the service's home folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalService:
    """A set of trainyard processes sharing one environment."""

    def __init__(self, home: Path, env: dict[str, str], port: int):
        self.home = home
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, **env, "TRAINYARD_HOME": str(home),
                    "TRAINYARD_API_URL": self.url, "PYTHONUNBUFFERED": "1"}
        self.processes: dict[str, subprocess.Popen] = {}
        self.http = httpx.Client(base_url=self.url, timeout=30)

    @classmethod
    def embedded(cls, home: Path, env: dict[str, str] | None = None) -> LocalService:
        """`trainyard up` in `home`: SQLite and the file-system queue, whatever the shell's
        TRAINYARD_DATABASE_URL or TRAINYARD_BROKER_URL say."""
        service = cls(home, env or {}, free_port())
        service.start_embedded()
        return service

    @classmethod
    def distributed(cls, home: Path, database_url: str, broker_url: str, worker_name: str,
                    env: dict[str, str] | None = None) -> LocalService:
        """`trainyard api` and one `trainyard worker` on the given database and broker."""
        service = cls(home, {**(env or {}), "TRAINYARD_DATABASE_URL": database_url,
                             "TRAINYARD_BROKER_URL": broker_url}, free_port())
        service.start("api", "api", "--port", str(service.port))
        service.start("worker", "worker", "--name", worker_name)
        return service

    def start_embedded(self, label: str = "up") -> subprocess.Popen:
        """`trainyard up` on this service's port: SQLite and the file-system queue under its
        home, whatever the shell's TRAINYARD_DATABASE_URL or TRAINYARD_BROKER_URL say."""
        for key in ("TRAINYARD_DATABASE_URL", "TRAINYARD_BROKER_URL"):
            self.env.pop(key, None)
        return self.start(label, "up", "--port", str(self.port))

    def start(self, label: str, *args: str) -> subprocess.Popen:
        log = open(self.home / f"{label}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "trainyard", *args], env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[label] = proc
        return proc

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "trainyard", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for label, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{label} exited with {proc.returncode}:\n{self.logs()}")
            try:
                if self.http.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"service not healthy after {timeout} s:\n{self.logs()}")

    def wait_for(self, predicate, what: str, timeout: float = 90):
        """`predicate()`'s first truthy value, polled every 0.05 s; TimeoutError naming `what`
        (with the services' logs) after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"{what} after {timeout} s:\n{self.logs()}")

    def wait_status(self, job_id: int, statuses: set[str], timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        job: dict = {}
        while time.monotonic() < deadline:
            job = self.http.get(f"/jobs/{job_id}").json()
            if job["status"] in statuses:
                return job
            time.sleep(0.25)
        raise TimeoutError(f"job {job_id} is {job.get('status')} after {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for label in self.processes:
            path = self.home / f"{label}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"----- {label} -----\n{text[-6000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        self.http.close()
        for proc in self.processes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# ---------------------------------------------------------------- servers of our own
class PostgresServer:
    """A throw-away PostgreSQL server of our own, to stop and start under a running job."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="trainyard-pg-"))
        self.data, self.port = self.root / "data", free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        # Postgres refuses to run as root: run it as the postgres user then.
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.prefix:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _run(self, *args: str) -> None:
        subprocess.run([*self.prefix, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.root / "server.log"),
                  "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
                        " -c fsync=off", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")

    def remove(self) -> None:
        subprocess.run([*self.prefix, "pg_ctl", "-D", str(self.data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """A Redis server of our own without persistence: a restart comes back empty."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

"""A small Python client for the Trainyard HTTP API.

    from trainyard.client import Client
    client = Client("http://127.0.0.1:8000", api_key="ty_...")  # no key: a keyless local API
    job = client.submit("mlp", "digits", {"epochs": 5, "activation": "tanh"})
    client.wait(job["id"])
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from core.states import FINISHED  # the statuses a job ends in; the API answers them as text


class ApiError(RuntimeError):
    """An answer of 4xx/5xx from the API, with the server's own explanation."""

    def __init__(self, status_code: int, detail: Any):
        self.status_code = status_code
        self.detail = detail
        super().__init__(f"HTTP {status_code}: {format_detail(detail)}")


def format_detail(detail: Any) -> str:
    """Turn FastAPI's error detail (a string or a list of {loc, msg}) into one readable line."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


class Client:
    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            self._raise_for(response)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        """ApiError with the server's own explanation of a 4xx/5xx answer (read already)."""
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise ApiError(response.status_code, detail)

    # ---- jobs ----
    def submit(
        self,
        model: str,
        dataset: str,
        hyperparameters: dict | None = None,
        *,
        name: str | None = None,
        device: str = "auto",
        priority: int = 0,
        from_checkpoint: dict | None = None,
        gpus: int = 1,
    ) -> dict:
        """Queue a job. `from_checkpoint` forks a run: {"job": id, "checkpoint": id (default:
        the parent's newest), "resume_optimizer": bool}; hyperparameters not given are the
        parent's. `gpus`: how many GPUs (on CPU: processes) it trains on at once."""
        body = {"model": model, "dataset": dataset, "hyperparameters": hyperparameters or {},
                "device": device, "priority": priority, "gpus": gpus}
        if name:
            body["name"] = name
        if from_checkpoint is not None:
            body["from_checkpoint"] = from_checkpoint
        return self._call("POST", "/jobs", json=body)

    def jobs(self, *, status: str | None = None, model: str | None = None,
             limit: int = 50, offset: int = 0) -> dict:
        params = {k: v for k, v in
                  {"status": status, "model": model, "limit": limit, "offset": offset}.items()
                  if v is not None}
        return self._call("GET", "/jobs", params=params)

    def job(self, job_id: int) -> dict:
        return self._call("GET", f"/jobs/{job_id}")

    def set_priority(self, job_id: int, priority: int) -> dict:
        """Move a queued (or running) job in the queue: higher runs first."""
        return self._call("PATCH", f"/jobs/{job_id}", json={"priority": priority})

    def cancel(self, job_id: int) -> dict:
        return self._call("POST", f"/jobs/{job_id}/cancel")

    def metrics(self, job_id: int, names: list[str] | None = None,
                max_points: int | None = None) -> dict:
        params: dict[str, Any] = {}
        if names:
            params["names"] = ",".join(names)
        if max_points:
            params["max_points"] = max_points
        return self._call("GET", f"/jobs/{job_id}/metrics", params=params)["series"]

    def checkpoints(self, job_id: int) -> list[dict]:
        return self._call("GET", f"/jobs/{job_id}/checkpoints")

    def download_checkpoint(self, job_id: int, checkpoint_id: int) -> bytes:
        """One checkpoint's bytes, in memory (save_checkpoint writes a big one to a file)."""
        out = io.BytesIO()
        self._save_checkpoint(job_id, checkpoint_id, out)
        return out.getvalue()

    def save_checkpoint(self, job_id: int, checkpoint_id: int, path: str | Path) -> Path:
        """Stream one checkpoint to `path` (a piece at a time: a 1 GB checkpoint is never
        held in memory), checked against the size and SHA-256 the server announces; a
        download cut short or damaged raises ValueError and leaves no file. Returns the path."""
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        try:
            with partial.open("wb") as out:
                self._save_checkpoint(job_id, checkpoint_id, out)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return path

    def _save_checkpoint(self, job_id: int, checkpoint_id: int, out) -> None:
        url = f"/jobs/{job_id}/checkpoints/{checkpoint_id}/download"
        with self._http.stream("GET", url) as response:
            if response.status_code >= 400:
                response.read()
                self._raise_for(response)
            digest, size = hashlib.sha256(), 0
            for piece in response.iter_bytes():
                out.write(piece)
                digest.update(piece)
                size += len(piece)
            want_size = int(response.headers.get("content-length", size))
            want_sha = response.headers.get("x-checksum-sha256", digest.hexdigest())
        if size != want_size or digest.hexdigest() != want_sha:
            raise ValueError(f"checkpoint {checkpoint_id} of job {job_id}: got {size} bytes "
                             f"with sha256 {digest.hexdigest()}, the server announced "
                             f"{want_size} bytes with sha256 {want_sha}")

    # ---- using a trained model (README "Use a trained model") ----
    def predict(self, job_id: int, inputs: list | None = None, *,
                images: list[str | Path] | None = None, checkpoint: int | None = None) -> dict:
        """Classify arrays (`inputs`: each H x W or C x H x W, values in [0, 1]) or image files
        (`images`: PNG or JPEG paths, any size) with an MLP or CNN job's network; default
        checkpoint: the job's best. Answers {"checkpoint", "epoch", "predictions": [{"label",
        "probabilities"}]}."""
        if (inputs is None) == (images is None):
            raise ValueError("give either inputs (arrays) or images (file paths)")
        if inputs is not None:
            body: dict[str, Any] = {"inputs": inputs}
            if checkpoint is not None:
                body["checkpoint"] = checkpoint
            return self._call("POST", f"/jobs/{job_id}/predict", json=body)
        files = [("files", (Path(p).name, Path(p).read_bytes())) for p in images]
        data = {"checkpoint": str(checkpoint)} if checkpoint is not None else {}
        return self._call("POST", f"/jobs/{job_id}/predict", files=files, data=data)

    def generate(self, job_id: int, prompt: str = "", *, max_tokens: int = 200,
                 temperature: float = 1.0, top_k: int | None = None, seed: int | None = None,
                 checkpoint: int | None = None) -> dict:
        """Continue `prompt` with an RNN-LM job's network; the same seed gives the same text.
        Answers {"text", "continuation", "tokens", "seed", "unknown", "checkpoint", ...}."""
        body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
                "top_k": top_k, "seed": seed, "checkpoint": checkpoint}
        return self._call("POST", f"/jobs/{job_id}/generate",
                          json={k: v for k, v in body.items() if v is not None})

    def export(self, job_id: int, path: str | Path, *, format: str = "onnx",
               checkpoint: int | None = None) -> Path:
        """Download the job's network as an ONNX or TorchScript file to `path`; returns it."""
        params: dict[str, Any] = {"format": format}
        if checkpoint is not None:
            params["checkpoint"] = checkpoint
        data = self._call("GET", f"/jobs/{job_id}/export", params=params)
        path = Path(path)
        path.write_bytes(data)
        return path

    def compare(self, job_ids: list[int]) -> dict:
        return self._call("GET", "/compare", params={"ids": ",".join(str(i) for i in job_ids)})

    def wait(self, job_id: int, *, timeout: float = 3600, poll: float = 1.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in FINISHED:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
            time.sleep(poll)

    # ---- catalogue and data ----
    def models(self) -> dict:
        return self._call("GET", "/models")

    def datasets(self) -> list[dict]:
        return self._call("GET", "/datasets")

    def upload_dataset(self, name: str, path: str | Path, *, kind: str | None = None,
                       channels: int | None = None, height: int | None = None,
                       width: int | None = None, description: str = "") -> dict:
        """Upload a file, or a folder (sent as a tar made on the fly in a temporary file), as
        the next version of dataset `name`. The file is streamed, never read whole; the
        answer says what the server found (kind, examples, classes, shape, sha256)."""
        path = Path(path)
        form = {"name": name, "kind": kind, "channels": channels, "height": height,
                "width": width, "description": description or None}
        data = {k: str(v) for k, v in form.items() if v is not None}
        with contextlib.ExitStack() as stack:
            if path.is_dir():
                archive = stack.enter_context(tempfile.TemporaryFile())
                with tarfile.open(fileobj=archive, mode="w") as tar:
                    tar.add(path, arcname=path.name)
                archive.seek(0)
                upload = (f"{path.name}.tar", archive, "application/x-tar")
            else:
                upload = (path.name, stack.enter_context(open(path, "rb")),
                          "application/octet-stream")
            # no time limit: a large archive takes a while to send and to prepare
            return self._call("POST", "/datasets", data=data, files={"file": upload},
                              timeout=None)

    def dataset(self, name: str, owner: str | None = None) -> dict:
        """A dataset's versions (an upload) or its description (built-in)."""
        params = {"owner": owner} if owner else {}
        return self._call("GET", f"/datasets/{quote(name, safe='')}", params=params)

    def delete_dataset(self, name: str, version: int, *, force: bool = False) -> None:
        params = {"force": "true"} if force else {}
        self._call("DELETE", f"/datasets/{quote(name, safe='')}/versions/{version}",
                   params=params)

    def health(self) -> dict:
        return self._call("GET", "/healthz")

    # ---- workers ----
    def workers(self) -> list[dict]:
        """Every worker that has not stopped cleanly: state (idle, busy, draining, lost),
        job, hardware, last heartbeat."""
        return self._call("GET", "/workers")["items"]

    def drain_worker(self, name: str) -> dict:
        """Admin only: the worker gives its job back at the next step and takes no new one."""
        return self._call("POST", f"/workers/{quote(name, safe='')}/drain")

    # ---- sweeps ----
    def sweep(self, model: str, dataset: str, space: dict[str, Any], method: str = "random",
              **spec: Any) -> dict:
        """Create a hyperparameter sweep (POST /sweeps); `spec` takes the other fields:
        hyperparameters, objective, max_trials, max_concurrent, early_stopping, seed, name,
        device, priority. Returns the sweep with its first trials launched."""
        return self._call("POST", "/sweeps", json={
            "model": model, "dataset": dataset, "space": space, "method": method, **spec})

    def sweeps(self, *, status: str | None = None, limit: int = 50) -> dict:
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        return self._call("GET", "/sweeps", params=params)

    def sweep_status(self, sweep_id: int) -> dict:
        """The sweep with its counts, best trial and every trial."""
        return self._call("GET", f"/sweeps/{sweep_id}")

    def sweep_importance(self, sweep_id: int) -> dict:
        return self._call("GET", f"/sweeps/{sweep_id}/importance")

    def cancel_sweep(self, sweep_id: int) -> dict:
        return self._call("POST", f"/sweeps/{sweep_id}/cancel")

    def wait_sweep(self, sweep_id: int, *, timeout: float = 24 * 3600, poll: float = 2.0
                   ) -> dict:
        """Poll until the sweep has ended; returns it (TimeoutError after `timeout` s)."""
        deadline = time.monotonic() + timeout
        while True:
            sweep = self.sweep_status(sweep_id)
            if sweep["status"] != "running":
                return sweep
            if time.monotonic() > deadline:
                raise TimeoutError(f"sweep {sweep_id} still running after {timeout} s")
            time.sleep(poll)

    # ---- job logs ----
    def logs(self, job_id: int, after: int | None = None, limit: int | None = None) -> dict:
        """The job's log lines after line id `after` (all from the start when None):
        {"lines": [{"id", "time", "level", "source", "attempt", "message"}], "next_after",
        "job_status"}; pass next_after as `after` to read only what came since."""
        params: dict[str, Any] = {}
        if after is not None:
            params["after"] = after
        if limit is not None:
            params["limit"] = limit
        return self._call("GET", f"/jobs/{job_id}/logs", params=params)

    # ---- webhooks ----
    def add_webhook(self, url: str, events: list[str], *, secret: str | None = None) -> dict:
        """Register a webhook for your jobs' and sweeps' `events`; the answer holds its
        signing `secret` (given or generated), shown this once."""
        body: dict[str, Any] = {"url": url, "events": events}
        if secret is not None:
            body["secret"] = secret
        return self._call("POST", "/webhooks", json=body)

    def webhooks(self) -> list[dict]:
        return self._call("GET", "/webhooks")

    def delete_webhook(self, webhook_id: int) -> None:
        self._call("DELETE", f"/webhooks/{webhook_id}")

    def webhook_deliveries(self, webhook_id: int, *, limit: int = 50) -> list[dict]:
        """The webhook's recent deliveries, newest first: status, attempts, last answer."""
        return self._call("GET", f"/webhooks/{webhook_id}/deliveries", params={"limit": limit})

    # ---- data lifecycle ----
    def delete_job(self, job_id: int) -> dict:
        """Delete a finished job with everything it left: {"id", "deleted", "seconds"}.
        ApiError 409 for a queued or running job (cancel it first), a fork's parent or a
        running sweep's trial; 404 for one you may not see."""
        return self._call("DELETE", f"/jobs/{job_id}")

    def delete_jobs(self, *, status: list[str] | None = None, model: str | None = None,
                    older_than_days: float | None = None, sweep_id: int | None = None,
                    owner: str | None = None, dry_run: bool = False) -> dict:
        """Delete finished jobs matching every filter given (at least one):
        {"matched", "deleted", "skipped": [{"id", "reason"}], "ids", "dry_run"}."""
        body: dict[str, Any] = {"dry_run": dry_run}
        for key, value in (("status", status), ("model", model), ("sweep_id", sweep_id),
                           ("older_than_days", older_than_days), ("owner", owner)):
            if value is not None:
                body[key] = value
        return self._call("POST", "/jobs/delete", json=body)

    def usage(self, owner: str | None = None) -> dict:
        """What each user stores: {"users": [{"owner", "jobs", "metric_points",
        "checkpoint_bytes", "dataset_bytes", "log_lines", ...}], "database"}."""
        params = {"owner": owner} if owner else {}
        return self._call("GET", "/usage", params=params)

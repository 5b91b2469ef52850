"""No code from data: what a user or an attacker writes is never executed or used as a path.

- A checkpoint row whose bytes are a pickle that runs a command (CVE-2025-32434's shape) is
  refused by torch.load(weights_only=True): the worker skips it and trains from scratch.
- Dataset names that look like paths reach no file: the API refuses them with 4xx, and the
  loaders only know built-in names under the data directory.
(Celery's JSON-only broker is tested with a real worker in tests/e2e/test_security.py.)
"""

from __future__ import annotations

import io
import os
import pickle
import shlex
import struct
from pathlib import Path

import pytest
import torch

from models.data import load_image_dataset, load_text_dataset
from models.train import load_checkpoint
from core.settings import Settings
from worker.runner import JobRunner

TINY_MLP = {"epochs": 2, "hidden_sizes": [16, 16], "steps_per_epoch": 3, "seed": 3}
TRAVERSALS = ["../mnist", "../../etc/passwd", "/etc/passwd", "mnist/../../x", "..", ".",
              "..\\..\\windows", "%2e%2e%2fetc", "mnist\x00", "~/data"]


class RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def evil_checkpoint(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": "trainyard-checkpoint-1", "model_state": RunsCommand(marker)}, buffer)
    return buffer.getvalue()


def test_the_payload_is_live_when_unpickled(tmp_path):
    """The check below could not fail if the payload were inert: it is not."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(RunsCommand(marker)))
    assert marker.exists()


def test_a_malicious_checkpoint_is_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(evil_checkpoint(marker))
    assert not marker.exists()


def test_the_worker_skips_a_malicious_checkpoint_and_trains_from_scratch(store, tmp_path):
    marker = tmp_path / "ran"
    job = store.create_job(model="mlp", dataset="digits", hyperparameters=TINY_MLP, device="cpu")
    store.add_checkpoint(job.id, 1, 3, evil_checkpoint(marker), {})  # sha256 matches its bytes
    settings = Settings(home=tmp_path, metrics_flush_seconds=0.05, cancel_check_seconds=0.0)
    assert JobRunner(store, settings, worker_name="w").run(job.id) == "succeeded"
    assert not marker.exists()
    assert store.list_attempts(job.id)[0]["resumed_from_epoch"] is None


@pytest.mark.parametrize("name", TRAVERSALS)
def test_path_like_dataset_names_are_refused_by_the_api(client, name):
    job = client.post("/jobs", json={"model": "mlp", "dataset": name})
    assert job.status_code == 422, job.text
    assert "unknown dataset" in job.text or "dataset" in job.text
    lm = client.post("/jobs", json={"model": "rnn_lm", "dataset": name})
    assert lm.status_code == 422, lm.text
    upload = client.post("/datasets", data={"name": name},
                         files={"file": ("../../x.txt", b"word " * 200, "text/plain")})
    assert upload.status_code == 422, upload.text


def _write_idx(folder: Path) -> None:
    """A valid tiny MNIST (IDX) set, so that reaching it would load."""
    folder.mkdir(parents=True)
    n = 20
    (folder / "train-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 0x803, n, 8, 8) + bytes(range(64)) * n)
    (folder / "train-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n)))


@pytest.mark.parametrize("name", ["../outside", "../outside/../outside", str(Path("/"))])
def test_loaders_know_only_builtin_names(tmp_path, name):
    data_dir = tmp_path / "data"
    _write_idx(tmp_path / "outside")  # a loadable set one level above the data directory
    _write_idx(data_dir / "mnist")
    assert load_image_dataset("mnist", data_dir).num_classes == 10  # the real one loads
    with pytest.raises(ValueError, match="unknown"):
        load_image_dataset(name, data_dir)
    with pytest.raises(ValueError, match="unknown"):
        load_text_dataset(name, tokenizer="char", seed=0, max_vocab=100, data_dir=data_dir)


def test_the_code_never_evaluates_or_unpickles_anything():
    """A guard for later changes: no eval/exec, no pickle/marshal/shelve, no yaml.load, and
    torch.load only with weights_only=True, anywhere in the service's packages."""
    import ast

    root = Path(__file__).resolve().parents[2]
    found, torch_loads = [], 0
    for package in ("api", "worker", "models", "db", "trainyard"):
        for path in (root / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.Import | ast.ImportFrom):
                    names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                    if any(n.split(".")[0] in ("pickle", "marshal", "shelve", "dill") for n in names):
                        found.append(f"{where} imports {names}")
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                if isinstance(func, ast.Name) and func.id in ("eval", "exec", "compile"):
                    found.append(f"{where} calls {func.id}")
                if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                    dotted = f"{func.value.id}.{func.attr}"
                    if dotted == "yaml.load":
                        found.append(f"{where} calls yaml.load")
                    if dotted == "torch.load":
                        torch_loads += 1
                        safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                                   and k.value.value is True for k in node.keywords)
                        if not safe:
                            found.append(f"{where} calls torch.load without weights_only=True")
    assert found == []
    assert torch_loads >= 1  # the checkpoint loader was seen: the check looks at real code

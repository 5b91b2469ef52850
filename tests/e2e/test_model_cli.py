"""`trainyard predict | generate | export` and the Client's methods against `trainyard up` (real
API, worker and broker processes on SQLite): jobs train, then their networks answer from a
shell, and the exported ONNX file runs in onnxruntime without Trainyard."""

from __future__ import annotations

import io
import json

import numpy as np
import onnxruntime
import pytest
from PIL import Image

from models.data import load_image_dataset
from trainyard.client import Client

pytestmark = pytest.mark.e2e

CNN_HP = {"epochs": 2, "channels": [8, 16], "steps_per_epoch": 20, "seed": 4}
LM_HP = {"epochs": 1, "steps_per_epoch": 5, "hidden_size": 32, "embedding_dim": 16,
         "seq_len": 32}


def test_predict_generate_and_export_from_a_shell(embedded_service, tmp_path):
    service = embedded_service
    with Client(service.url) as client:
        cnn = client.submit("cnn", "digits", CNN_HP, device="cpu")
        lm = client.submit("rnn_lm", "pydocs", LM_HP, device="cpu")
        assert client.wait(cnn["id"], timeout=240)["status"] == "succeeded"
        assert client.wait(lm["id"], timeout=240)["status"] == "succeeded"

        digits = load_image_dataset("digits", seed=CNN_HP["seed"])
        paths = []
        for i in range(3):
            path = tmp_path / f"digit{i}.png"
            big = np.kron(digits.x_val[i, 0].numpy(), np.ones((4, 4)))  # 32 x 32
            Image.fromarray(np.round(big * 255).astype(np.uint8)).save(path)
            paths.append(str(path))
        shown = service.cli("predict", str(cnn["id"]), *paths, "--json")
        assert shown.returncode == 0, shown.stderr
        answer = json.loads(shown.stdout)
        assert len(answer["predictions"]) == 3
        table = service.cli("predict", str(cnn["id"]), *paths)
        assert table.returncode == 0 and "digit2.png" in table.stdout and "epoch 2" in table.stdout
        by_client = client.predict(cnn["id"], images=paths)
        assert [p["label"] for p in by_client["predictions"]] == \
            [p["label"] for p in answer["predictions"]]

        onnx_path = tmp_path / "cnn.onnx"
        exported = service.cli("export", str(cnn["id"]), "--format", "onnx", "-o", str(onnx_path))
        assert exported.returncode == 0, exported.stderr
        session = onnxruntime.InferenceSession(str(onnx_path))
        arrays = [np.asarray(Image.open(p), dtype=np.float32) / 255 for p in paths]
        x = np.stack([a.reshape(8, 4, 8, 4).mean(axis=(1, 3))[None] for a in arrays])
        [probs] = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})
        assert np.abs(probs - np.array([p["probabilities"] for p in answer["predictions"]])
                      ).max() < 1e-4

        first = service.cli("generate", str(lm["id"]), "Once upon", "--seed", "3",
                            "--max-tokens", "40")
        again = service.cli("generate", str(lm["id"]), "Once upon", "--seed", "3",
                            "--max-tokens", "40")
        assert first.returncode == 0, first.stderr
        assert first.stdout == again.stdout and first.stdout.startswith("Once upon")
        assert "seed 3" in first.stderr
        assert client.generate(lm["id"], "Once upon", max_tokens=40, seed=3)["text"] + "\n" \
            == first.stdout

        wrong = service.cli("generate", str(cnn["id"]), "hello")
        assert wrong.returncode == 2 and "generate is for rnn_lm" in wrong.stderr
        refused = service.cli("predict", str(cnn["id"]), str(tmp_path / "missing.png"))
        assert refused.returncode == 2 and "no such file" in refused.stderr
        buf = io.BytesIO(b"not an image")
        (tmp_path / "bad.png").write_bytes(buf.getvalue())
        bad = service.cli("predict", str(cnn["id"]), str(tmp_path / "bad.png"))
        assert bad.returncode == 2 and "bad.png" in bad.stderr and "PNG or JPEG" in bad.stderr

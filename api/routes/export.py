"""/jobs/{id}/export: a trained network as a file that runs without Trainyard (README "Use a
trained model"). Built by models/export.py through the inference service (off the event loop,
bounded, timed) and kept in its cache, so downloading it again is immediate."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from api.deps import JobDep, StoreDep
from api.errors import NOT_FOUND, answer
from api.services.inference import inference_of, load_model, run_inference
from db.store import JobRecord

router = APIRouter(prefix="/jobs", tags=["use a trained model"])

ExportFormat = Literal["onnx", "torchscript"]  # models.export.FORMATS (imported with torch)

_FILE = {
    200: {
        "content": {"application/octet-stream": {}},
        "description": "The model file. ONNX: input `images` (B, C, H, W) float32 in [0, 1] -> "
        "`probabilities` (B, classes) for mlp and cnn; `tokens` (B, T) int64 -> `logits` "
        "(B, T, vocabulary) for rnn_lm. TorchScript: the same, through torch.jit.load. The "
        "file's metadata (ONNX metadata_props, TorchScript extra files) names the job, the "
        "checkpoint, the shapes and a language model's vocabulary (`trainyard.vocab`).",
    },
}


def _export(request: Request, store: Any, job: JobRecord, fmt: str,
            checkpoint: int | None) -> tuple[bytes, str, str]:
    """(file bytes, sha256, file name)."""
    from models.export import FORMATS, export_model

    loaded = load_model(request.app, store, job, checkpoint)
    record = loaded.record

    def build() -> tuple[tuple[bytes, str], int]:
        data = export_model(loaded.model, loaded.ckpt, fmt, job_id=job.id,
                            checkpoint_id=record.id)
        return (data, hashlib.sha256(data).hexdigest()), len(data)

    data, digest = inference_of(request.app).cache.get_or_load(
        ("export", fmt, record.id, record.sha256), build)
    return data, digest, f"trainyard-job{job.id}-ckpt{record.id}{FORMATS[fmt]}"


@router.get(
    "/{job_id}/export",
    response_class=Response,
    responses=_FILE | NOT_FOUND | answer(409, "The job has no checkpoint yet.")
    | answer(503, "The export did not finish within TRAINYARD_INFERENCE_TIMEOUT_SECONDS."),
    summary="Download a trained network as an ONNX or TorchScript file",
)
async def export_network(
    job: JobDep,
    request: Request,
    store: StoreDep,
    fmt: Annotated[ExportFormat, Query(
        alias="format",
        description="onnx (onnxruntime, any language) or torchscript (torch.jit.load).")
    ] = "onnx",
    checkpoint: Annotated[int | None, Query(
        ge=1, le=2**31 - 1,
        description="A checkpoint id of this job (default: its best by the headline metric).")
    ] = None,
) -> Response:
    """The file runs without Trainyard: mlp and cnn files answer what POST
    /jobs/{id}/predict answers (softmax probabilities), rnn_lm files the next-token logits at
    every position. An ONNX export takes a few seconds the first time; the file is then
    cached."""
    data, digest, filename = await run_inference(request, _export, request, store, job,
                                                 fmt, checkpoint)
    return Response(
        content=data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Checksum-SHA256": digest,
        },
    )

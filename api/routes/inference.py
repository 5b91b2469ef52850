"""/jobs/{id}/predict and /jobs/{id}/generate: use a trained network (README "Use a trained
model"). The work runs through api/services/inference.py: off the event loop, bounded, timed."""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from pydantic import ValidationError

from api.deps import JobDep, SettingsDep, StoreDep
from api.errors import NOT_FOUND, UNPARSABLE_BODY, answer, invalid
from api.schemas.inference import (
    GenerateOut,
    GenerateRequest,
    PredictOut,
    PredictRequest,
)
from api.services.images import ImageError, Preparation, prepare_image
from api.services.inference import (
    CLASSIFIERS,
    LANGUAGE_MODELS,
    deadline,
    load_model,
    require_model,
    run_inference,
)
from db.store import JobRecord
from models.data import LIGHT_ON_DARK_DATASETS

router = APIRouter(prefix="/jobs", tags=["use a trained model"])

MODEL_USE_ERRORS = {
    **NOT_FOUND,
    **UNPARSABLE_BODY,
    **answer(409, "The job has no checkpoint yet, or its checkpoint does not load."),
    **answer(413, "The request is larger than TRAINYARD_MAX_PREDICT_BYTES."),
    **answer(503, "The model did not answer within TRAINYARD_INFERENCE_TIMEOUT_SECONDS."),
}

_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": PredictRequest.model_json_schema()},
            "multipart/form-data": {"schema": {
                "type": "object",
                "required": ["files"],
                "properties": {
                    "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                              "description": "PNG or JPEG images of any size."},
                    "checkpoint": {"type": "integer", "minimum": 1},
                },
            }},
        },
    }
}


async def _predict_body(request: Request, settings: Any
                        ) -> tuple[list | list[tuple[str, bytes]], int | None, bool]:
    """(JSON inputs, or [(file name, bytes)]), the checkpoint asked for, whether files."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form(max_files=settings.max_predict_batch, max_fields=8,
                                  max_part_size=settings.max_predict_bytes)
        files = [f for f in form.getlist("files") if not isinstance(f, str)]
        if not files:
            raise invalid(("body", "files"), "send one or more PNG or JPEG files as `files`")
        raw = form.get("checkpoint")
        checkpoint = None
        if isinstance(raw, str) and raw.strip():
            if not raw.strip().isdigit() or not 1 <= int(raw) <= 2**31 - 1:
                raise invalid(("body", "checkpoint"), "must be a checkpoint id (an integer >= 1)")
            checkpoint = int(raw)
        return [(f.filename or f"file {i}", await f.read()) for i, f in enumerate(files)], \
            checkpoint, True
    if kind not in ("application/json", ""):
        raise HTTPException(415, "send JSON ({\"inputs\": [...]}) or multipart/form-data "
                                 "image files (files=@digit.png)")
    try:
        body = PredictRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise invalid(("body", *exc.errors()[0]["loc"]), exc.errors()[0]["msg"]) from None
    return body.inputs, body.checkpoint, False


def _predict(request: Request, store: Any, job: JobRecord, inputs: list, checkpoint: int | None,
             files: bool) -> PredictOut:
    import torch

    from models.inference import (
        class_probabilities,
        classifier_inputs,
        image_shape,
        predictions,
    )

    settings = request.app.state.settings
    loaded = load_model(request.app, store, job, checkpoint)
    shape = image_shape(loaded.ckpt)
    if files:
        how = Preparation(*shape, light_on_dark=loaded.ckpt["dataset"] in LIGHT_ON_DARK_DATASETS,
                          max_pixels=settings.max_image_pixels)
        arrays = []
        for i, (name, data) in enumerate(inputs):
            try:
                arrays.append(prepare_image(data, how, f"files.{i}"))
            except ImageError as exc:
                raise ImageError(exc.field, f"{name!r} {exc.message}") from None
        x = torch.from_numpy(np.stack(arrays))
    else:
        x = classifier_inputs(inputs, shape, settings.max_predict_batch)
    probabilities = class_probabilities(loaded.model, x)
    return PredictOut(checkpoint=loaded.record.id, epoch=loaded.record.epoch,
                      predictions=predictions(probabilities))


@router.post(
    "/{job_id}/predict",
    response_model=PredictOut,
    responses={**MODEL_USE_ERRORS,
               **answer(415, "The body is neither JSON nor multipart/form-data.")},
    openapi_extra=_PREDICT_BODY,
    summary="Classify images with a trained MLP or CNN",
)
async def predict(job: JobDep, request: Request, store: StoreDep,
                  settings: SettingsDep) -> PredictOut:
    """Send either JSON `{"inputs": [image, ...]}` (arrays in the model's input shape, values in
    [0, 1]) or multipart image files (`files`, PNG or JPEG of any size: converted to the
    model's channels and size the way its dataset was prepared)."""
    require_model(job, CLASSIFIERS, "predict")
    inputs, checkpoint, files = await _predict_body(request, settings)
    if files and len(inputs) > settings.max_predict_batch:
        raise invalid(("body", "files"), f"{len(inputs)} files; at most "
                      f"{settings.max_predict_batch} per request")
    return await run_inference(request, _predict, request, store, job, inputs, checkpoint,
                               files)


def _generate(request: Request, store: Any, job: JobRecord, body: GenerateRequest,
              seed: int) -> GenerateOut:
    from models.inference import generate_text

    loaded = load_model(request.app, store, job, body.checkpoint)
    ckpt = loaded.ckpt
    out = generate_text(loaded.model, ckpt["vocab"], ckpt["tokenizer"], body.prompt,
                        body.max_tokens, body.temperature, body.top_k, seed,
                        deadline=deadline(request.app))
    return GenerateOut(checkpoint=loaded.record.id, epoch=loaded.record.epoch, seed=seed,
                       tokenizer=ckpt["tokenizer"], **out)


@router.post(
    "/{job_id}/generate",
    response_model=GenerateOut,
    responses=MODEL_USE_ERRORS,
    summary="Continue a prompt with a trained RNN language model",
)
async def generate(body: GenerateRequest, job: JobDep, request: Request,
                   store: StoreDep) -> GenerateOut:
    """The same prompt, seed and checkpoint give the same text."""
    require_model(job, LANGUAGE_MODELS, "generate")
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
    return await run_inference(request, _generate, request, store, job, body, seed)

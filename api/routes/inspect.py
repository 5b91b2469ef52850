"""/jobs/{id}/inspect/...: look inside a trained network (README "Look inside a model"):
a CNN's filters and feature maps, an MLP's first-layer units, a classifier's most confident
mistakes, a language model's embeddings, nearest tokens and next-token distribution.

Thin: the computations are models/inspection.py's; the network, the validation images, the
thread pool and the time limit are api/services/inference.py's, as for predict.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from api.deps import JobDep, StoreDep
from api.errors import NOT_FOUND, answer, invalid
from api.schemas.common import MAX_ID
from api.schemas.inspect import (
    EmbeddingsOut,
    FeatureMapsOut,
    FiltersOut,
    MistakesOut,
    NeighboursOut,
    NextTokenOut,
    UnitsOut,
)
from api.services.inference import (
    CLASSIFIERS,
    LANGUAGE_MODELS,
    deadline,
    inference_of,
    load_model,
    require_model,
    run_inference,
    validation_images,
)
from db.store import JobRecord

router = APIRouter(prefix="/jobs", tags=["look inside a model"])

CNN = ("cnn",)
MLP = ("mlp",)
MAX_TSNE_POINTS = 500  # t-SNE takes seconds at this size; PCA takes milliseconds at 2,000
MAX_PROMPT_CHARS = 2_000

ERRORS = (
    NOT_FOUND
    | answer(409, "The job has no checkpoint yet.")
    | answer(422, "A parameter is out of range, or the job's model has no such view.")
    | answer(503, "The model did not answer within TRAINYARD_INFERENCE_TIMEOUT_SECONDS.")
)

CheckpointQuery = Annotated[int | None, Query(
    ge=1, le=MAX_ID, description="A checkpoint id of this job; default: its best by the "
    "headline metric (the newest when none has it).")]


def _answer(loaded: Any, **fields: Any) -> dict[str, Any]:
    return {"checkpoint": loaded.record.id, "epoch": loaded.record.epoch, **fields}


def _filters(request: Request, store: Any, job: JobRecord, limit: int,
             checkpoint: int | None) -> dict:
    from models.inspection import first_conv_filters

    loaded = load_model(request.app, store, job, checkpoint)
    return _answer(loaded, **first_conv_filters(loaded.model, limit))


def _feature_maps(request: Request, store: Any, job: JobRecord, index: int,
                  checkpoint: int | None) -> dict:
    from models.inference import InputError
    from models.inspection import feature_maps

    loaded = load_model(request.app, store, job, checkpoint)
    data = validation_images(request.app, job)
    size = int(data.y_val.shape[0])
    if index >= size:
        raise InputError("query.index", f"must be between 0 and {size - 1}: the validation "
                         f"set has {size:,} images")
    shown = feature_maps(loaded.model, data.x_val[index])
    return _answer(loaded, index=index, label=int(data.y_val[index]), validation_size=size,
                   **shown)


def _units(request: Request, store: Any, job: JobRecord, limit: int,
           checkpoint: int | None) -> dict:
    from models.inference import image_shape
    from models.inspection import first_layer_units

    loaded = load_model(request.app, store, job, checkpoint)
    return _answer(loaded, **first_layer_units(loaded.model, image_shape(loaded.ckpt), limit))


def _mistakes(request: Request, store: Any, job: JobRecord, limit: int,
              checkpoint: int | None) -> dict:
    from models.inference import image_shape
    from models.inspection import confident_mistakes, validation_predictions

    loaded = load_model(request.app, store, job, checkpoint)
    data = validation_images(request.app, job)
    until = deadline(request.app)

    def predict():
        found = validation_predictions(loaded.model, data.x_val, data.y_val, deadline=until)
        return found, found.nbytes

    # One pass over the validation set per checkpoint: another limit, or a second look, reads
    # the kept answers (a few bytes per image) instead of running the network again.
    record = loaded.record
    found = inference_of(request.app).cache.get_or_load(
        ("validation predictions", record.id, record.sha256), predict)
    return _answer(loaded, shape=list(image_shape(loaded.ckpt)),
                   **confident_mistakes(found, data.x_val, data.y_val, limit))


def _embeddings(request: Request, store: Any, job: JobRecord, method: str, limit: int,
                checkpoint: int | None) -> dict:
    from models.inspection import embedding_points

    loaded = load_model(request.app, store, job, checkpoint)
    return _answer(loaded, **embedding_points(loaded.model, loaded.ckpt["vocab"], limit,
                                              method))


def _neighbours(request: Request, store: Any, job: JobRecord, token: str, k: int,
                checkpoint: int | None) -> dict:
    from models.inspection import nearest_tokens

    loaded = load_model(request.app, store, job, checkpoint)
    ckpt = loaded.ckpt
    return _answer(loaded, **nearest_tokens(loaded.model, ckpt["vocab"], ckpt["tokenizer"],
                                            token, k))


def _next_token(request: Request, store: Any, job: JobRecord, prompt: str, top: int,
                checkpoint: int | None) -> dict:
    from models.inspection import next_tokens

    loaded = load_model(request.app, store, job, checkpoint)
    ckpt = loaded.ckpt
    return _answer(loaded, prompt=prompt, **next_tokens(loaded.model, ckpt["vocab"],
                                                        ckpt["tokenizer"], prompt, top))


@router.get("/{job_id}/inspect/filters", response_model=FiltersOut, responses=ERRORS,
            summary="A CNN's first-layer filters")
async def inspect_filters(
    job: JobDep, request: Request, store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=512, description="Filters (output channels) to "
                                "show, the first ones.")] = 64,
    checkpoint: CheckpointQuery = None,
) -> Any:
    """The weights of the first convolution (blocks.0.conv), one k x k kernel per input and
    output channel: after training, edge and blob detectors."""
    require_model(job, CNN, "filters")
    return await run_inference(request, _filters, request, store, job, limit, checkpoint)


@router.get("/{job_id}/inspect/feature-maps", response_model=FeatureMapsOut,
            responses=ERRORS, summary="A validation image through each CNN block")
async def inspect_feature_maps(
    job: JobDep, request: Request, store: StoreDep,
    index: Annotated[int, Query(ge=0, le=MAX_ID,
                                description="Which validation image (0-based).")] = 0,
    checkpoint: CheckpointQuery = None,
) -> Any:
    """Each conv block's output (after its activation and pooling) for one validation image:
    the first 32 channels of each block, average-pooled if a side is over 64 pixels."""
    require_model(job, CNN, "feature-maps")
    return await run_inference(request, _feature_maps, request, store, job, index, checkpoint)


@router.get("/{job_id}/inspect/units", response_model=UnitsOut, responses=ERRORS,
            summary="An MLP's first-layer units as images")
async def inspect_units(
    job: JobDep, request: Request, store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=256, description="Units to show (the first ones); "
                                "at most 262,144 numbers are sent.")] = 64,
    checkpoint: CheckpointQuery = None,
) -> Any:
    """Each first-hidden-layer unit's incoming weights, reshaped to the input image."""
    require_model(job, MLP, "units")
    return await run_inference(request, _units, request, store, job, limit, checkpoint)


@router.get("/{job_id}/inspect/mistakes", response_model=MistakesOut, responses=ERRORS,
            summary="A classifier's most confident mistakes")
async def inspect_mistakes(
    job: JobDep, request: Request, store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Mistakes to show.")] = 16,
    checkpoint: CheckpointQuery = None,
) -> Any:
    """The validation images the network gets wrong, the most confidently wrong first."""
    require_model(job, CLASSIFIERS, "mistakes")
    return await run_inference(request, _mistakes, request, store, job, limit, checkpoint)


@router.get("/{job_id}/inspect/embeddings", response_model=EmbeddingsOut, responses=ERRORS,
            summary="A language model's token embeddings in 2-D")
async def inspect_embeddings(
    job: JobDep, request: Request, store: StoreDep,
    method: Annotated[Literal["pca", "tsne"], Query(
        description="pca (fast, linear) or tsne (slower, keeps neighbourhoods).")] = "pca",
    limit: Annotated[int, Query(ge=2, le=2000, description="Tokens to place: ids 1..limit "
                                "(at most 500 with tsne).")] = 300,
    checkpoint: CheckpointQuery = None,
) -> Any:
    """The embedding table projected to two dimensions, for the first `limit` tokens after
    <unk> (at word level, the commonest words)."""
    require_model(job, LANGUAGE_MODELS, "embeddings")
    if method == "tsne" and limit > MAX_TSNE_POINTS:
        raise invalid(("query", "limit"), f"must be at most {MAX_TSNE_POINTS} with "
                      "method=tsne (it takes seconds per few hundred tokens); use method=pca "
                      "for up to 2000")
    return await run_inference(request, _embeddings, request, store, job, method, limit,
                               checkpoint)


@router.get("/{job_id}/inspect/neighbours", response_model=NeighboursOut, responses=ERRORS,
            summary="A token's nearest tokens by embedding")
async def inspect_neighbours(
    job: JobDep, request: Request, store: StoreDep,
    token: Annotated[str, Query(min_length=1, max_length=200,
                                description="A token of the vocabulary (a character at char "
                                "level, a lower-case word at word level).")],
    k: Annotated[int, Query(ge=1, le=100, description="Neighbours to list.")] = 10,
    checkpoint: CheckpointQuery = None,
) -> Any:
    """The tokens whose embeddings have the highest cosine similarity to `token`'s."""
    require_model(job, LANGUAGE_MODELS, "neighbours")
    return await run_inference(request, _neighbours, request, store, job, token, k,
                               checkpoint)


@router.get("/{job_id}/inspect/next-token", response_model=NextTokenOut, responses=ERRORS,
            summary="A language model's next-token distribution")
async def inspect_next_token(
    job: JobDep, request: Request, store: StoreDep,
    prompt: Annotated[str, Query(max_length=MAX_PROMPT_CHARS,
                                 description="The text so far (may be empty).")] = "",
    top: Annotated[int, Query(ge=1, le=100, description="Tokens to list.")] = 20,
    checkpoint: CheckpointQuery = None,
) -> Any:
    """The likeliest tokens to follow `prompt`, with their probabilities."""
    require_model(job, LANGUAGE_MODELS, "next-token")
    return await run_inference(request, _next_token, request, store, job, prompt, top,
                               checkpoint)

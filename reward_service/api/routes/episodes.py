"""Episodes: K sampled masks of one image, validated, persisted, then scored by the run's scorer."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from reward_service import metrics
from reward_service.api.deps import Learner, ServicesDep
from reward_service.codec import MaskError, decode_mask
from reward_service.datasets import ImageIdError, ServedDataset, UnknownImage
from reward_service.schemas import EpisodeAccepted, EpisodeCreate, EpisodePublic, RunPublic
from reward_service.scorers.human import task_groups

router = APIRouter(prefix="/episodes", tags=["episodes"])


def decode_samples(dataset: ServedDataset, body: EpisodeCreate, run: RunPublic, max_pixels: int) -> np.ndarray:
    """The (K, h, w) uint8 masks, or an HTTPException naming what is wrong. CPU work: call in a thread."""
    try:
        dataset.require(body.image_id)
    except ImageIdError as exc:
        raise HTTPException(400, detail=f"{exc}.") from exc
    except UnknownImage as exc:
        raise HTTPException(404, detail=f"{exc}.") from exc
    try:
        shape = dataset.mask_shape(body.image_id, run.image_size, body.grid)
    except ValueError as exc:
        raise HTTPException(422, detail=f"{exc}.") from exc
    if shape[0] * shape[1] * len(body.samples) > max_pixels:
        raise HTTPException(413, detail=f"{len(body.samples)} masks of {shape[0]}x{shape[1]} exceed the "
                                        f"limit of {max_pixels} pixels per episode.")
    try:
        masks = np.stack([decode_mask(m, shape, f"samples[{i}]") for i, m in enumerate(body.samples)])
    except MaskError as exc:
        raise HTTPException(422, detail=f"{exc}.") from exc
    top = masks.reshape(len(masks), -1).max(1)
    if (top >= run.num_classes).any():
        i = int(np.argmax(top >= run.num_classes))
        raise HTTPException(422, detail=f"samples[{i}]: class value {int(top[i])} is out of range for "
                                        f"{run.num_classes} classes (0..{run.num_classes - 1}).")
    return masks


async def episode_body(request: Request) -> EpisodeCreate:
    """The body parsed straight from bytes by pydantic: a 512x512 raw mask parses in 0.1 ms this way,
    against 0.9 ms through `json.loads` first (FastAPI's default for a model parameter)."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() not in ("application/json", ""):
        raise HTTPException(415, detail=f"Content-Type must be application/json, not {content_type!r}.")
    try:
        return EpisodeCreate.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/EpisodeCreate"}}}}}


@router.post("", response_model=EpisodeAccepted, status_code=202, openapi_extra=_BODY)
async def create_episode(body: Annotated[EpisodeCreate, Depends(episode_body)], services: ServicesDep,
                         _: Learner) -> EpisodeAccepted:
    """Validate and persist an episode; 202 means it is in Redis and will be scored."""
    settings, store = services.settings, services.store
    run = await store.get_run(body.run_id)
    if run is None:
        raise HTTPException(404, detail=f"Run {body.run_id!r} is not registered (POST /v1/runs first).")
    if body.level != run.level:
        raise HTTPException(422, detail=f"Episode level {body.level!r} does not match run level {run.level!r}.")
    if body.level == "pixel" and body.scale and body.grid_mode == "pool":
        raise HTTPException(422, detail="Pixel level needs grid_mode 'grid' or scale 0: a pooled cell is not a pixel.")
    if len(body.samples) > settings.max_samples:
        raise HTTPException(422, detail=f"{len(body.samples)} samples exceed the limit of {settings.max_samples}.")
    if run.scorer == "human":
        try:
            task_groups(run.task_kind, len(body.samples))
        except ValueError as exc:
            raise HTTPException(422, detail=f"{exc}.") from exc
    masks = await run_in_threadpool(decode_samples, services.dataset, body, run, settings.max_mask_pixels)
    episode_id = await store.add_episode(run, body.image_id, body.grid, body.policy_version, masks.tobytes(),
                                         masks.shape)
    metrics.EPISODES.labels(run.scorer).inc()
    return EpisodeAccepted(episode_id=episode_id, status="queued", results_stream=run.results_stream)


@router.get("/{episode_id}", response_model=EpisodePublic)
async def read_episode(episode_id: str, services: ServicesDep, _: Learner) -> EpisodePublic:
    """An episode's status: queued, scoring, waiting_for_rater, scored, or failed with its reason."""
    episode = await services.store.get_episode(episode_id)
    if episode is None:
        raise HTTPException(404, detail=f"Episode {episode_id!r} is unknown (or expired after it was scored).")
    return episode

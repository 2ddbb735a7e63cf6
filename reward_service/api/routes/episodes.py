"""Episodes: K sampled masks of one image, validated, persisted, then scored by the run's scorer."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from reward_service import metrics
from reward_service.api.deps import (
    OFFLOAD_BYTES,
    Learner,
    ServicesDep,
    episode_limit,
    json_body,
    json_body_openapi,
    parse_json,
    spend,
)
from reward_service.api.errors import AUTH, JSON_BODY, errors
from reward_service.core.config import Settings
from reward_service.datasets import ImageIdError, ServedDataset, UnknownImage
from reward_service.scorers.human import task_groups
from reward_service.services import Services
from reward_service.store import IdempotencyConflict, Idempotent, RunBusy
from rss_core import keys, wire
from rss_core.codec import MaskError, decode_mask
from rss_core.schemas import (
    EpisodeAccepted,
    EpisodeBatchAccepted,
    EpisodeBatchCreate,
    EpisodeBatchHeader,
    EpisodeCreate,
    EpisodeHeader,
    EpisodePublic,
    RunPublic,
)

router = APIRouter(prefix="/episodes", tags=["episodes"])


def check_episode(body: EpisodeCreate | EpisodeHeader, run: RunPublic | None, settings: Settings,
                  where: str = "") -> RunPublic:
    """What can be checked without decoding: the run, the level, the sample count."""
    if run is None:
        raise HTTPException(404, detail=f"{where}Run {body.run_id!r} is not registered (POST /v1/runs first).")
    if body.level != run.level:
        raise HTTPException(422, detail=f"{where}Episode level {body.level!r} does not match run level {run.level!r}.")
    if body.level == "pixel" and body.scale and body.grid_mode == "pool":
        raise HTTPException(422, detail=f"{where}Pixel level needs grid_mode 'grid' or scale 0: a pooled cell is "
                                        "not a pixel.")
    if body.view is not None and run.scorer != "gt":
        raise HTTPException(422, detail=f"{where}view: only the gt scorer scores episodes sampled on a view for now "
                                        f"(run {run.run_id!r} is scored by {run.scorer!r}): send whole images.")
    if body.view is not None and body.view.resize[0] * body.view.resize[1] > settings.max_mask_pixels:
        raise HTTPException(413, detail=f"{where}view: resize {body.view.resize[0]}x{body.view.resize[1]} exceeds "
                                        f"the limit of {settings.max_mask_pixels} pixels (RSS_MAX_MASK_PIXELS).")
    if body.count > settings.max_samples:
        raise HTTPException(422, detail=f"{where}{body.count} samples exceed the limit of "
                                        f"{settings.max_samples}.")
    if run.scorer == "human":
        try:
            task_groups(run.task_kind, body.count)
        except ValueError as exc:
            raise HTTPException(422, detail=f"{where}{exc}.") from exc
        if run.task_kind == "point" and body.points is None:
            raise HTTPException(422, detail=f"{where}Run {run.run_id!r} asks raters point questions: the episode "
                                            "needs `points`, the (y, x) cells to ask about.")
    return run


def require_image(dataset: ServedDataset, image_id: str, where: str = "") -> None:
    """That the dataset serves ``image_id``, or an HTTPException: 400 for a malformed id, 404 for an unknown one
    (``where`` prefixes the detail)."""
    try:
        dataset.require(image_id)
    except ImageIdError as exc:
        raise HTTPException(400, detail=f"{where}{exc}.") from exc
    except UnknownImage as exc:
        raise HTTPException(404, detail=f"{where}{exc}.") from exc


def decode_samples(dataset: ServedDataset, body: EpisodeCreate | EpisodeHeader, run: RunPublic, max_pixels: int,
                   where: str = "", request: tuple[int, int] | None = None,
                   masks: np.ndarray | None = None) -> np.ndarray:
    """The (K, h, w) uint8 masks, or an HTTPException naming what is wrong (``request``: the mask pixels the
    request may still decode, and its limit). v1 decodes ``body.samples``; v2 passes the episode's ``masks``,
    as the body carried them, and they must have the shape the dataset says. CPU work: call in a thread."""
    require_image(dataset, body.image_id, where)
    try:
        shape = dataset.mask_shape(body.image_id, run.image_size, body.grid, body.view)
    except ValueError as exc:
        raise HTTPException(422, detail=f"{where}{exc}.") from exc
    outside = [p for p in body.points or () if p[0] >= shape[0] or p[1] >= shape[1]]
    if outside:
        raise HTTPException(422, detail=f"{where}points: cell {list(outside[0])} is outside the {shape[0]}x{shape[1]} "
                                        "mask.")
    if shape[0] * shape[1] * body.count > max_pixels:
        raise HTTPException(413, detail=f"{where}{body.count} masks of {shape[0]}x{shape[1]} exceed the "
                                        f"limit of {max_pixels} pixels per episode.")
    if request is not None and shape[0] * shape[1] * body.count > request[0]:
        raise HTTPException(413, detail=f"{where}the request's masks exceed the limit of {request[1]} pixels per "
                                        "request (RSS_MAX_REQUEST_PIXELS): send fewer episodes per batch.")
    if masks is None:
        try:
            masks = np.stack([decode_mask(m, shape, f"{where}samples[{i}]") for i, m in enumerate(body.samples)])
        except MaskError as exc:
            raise HTTPException(422, detail=f"{exc}.") from exc
    elif masks.shape[1:] != shape:
        raise HTTPException(422, detail=f"{where}mask_shape {list(masks.shape[1:])} does not match the "
                                        f"{shape[0]}x{shape[1]} masks of image {body.image_id!r} at scale "
                                        f"{body.scale}.")
    top = masks.reshape(len(masks), -1).max(1)
    if (top >= run.num_classes).any():
        i = int(np.argmax(top >= run.num_classes))
        raise HTTPException(422, detail=f"{where}samples[{i}]: class value {int(top[i])} is out of range for "
                                        f"{run.num_classes} classes (0..{run.num_classes - 1}).")
    return masks


POST_ERRORS = errors(*AUTH, *JSON_BODY, 400, 404, 429)
BATCH_ERRORS = errors(*AUTH, *JSON_BODY, 400, 404, 409, 429)


async def accept(services: Services, bodies: list[EpisodeCreate] | list[EpisodeHeader], batch: bool,
                 idem: Idempotent | None = None, arrays: list[np.ndarray] | None = None,
                 wire: int = 1, learner: str | None = None) -> list[EpisodeAccepted] | str:
    """Check and decode every episode, then persist all of them in one transaction (or none).

    With ``idem``, the answer is stored under the key in that transaction; if a request with the same key
    committed first, nothing is written and its answer (JSON) is returned instead."""
    settings, store = services.settings, services.store
    run_ids = sorted({b.run_id for b in bodies})
    runs = dict(zip(run_ids, await store.get_runs(run_ids), strict=True))
    where = [f"episodes[{i}]: " if batch else "" for i in range(len(bodies))]
    checked = [check_episode(b, runs[b.run_id], settings, w) for b, w in zip(bodies, where, strict=True)]

    def decode_all() -> list[tuple[bytes, tuple[int, ...]]]:  # CPU work, the copies to bytes included
        decoded, left = [], settings.max_request_pixels
        for i, (b, run, w) in enumerate(zip(bodies, checked, where, strict=True)):
            decoded.append(decode_samples(services.dataset, b, run, settings.max_mask_pixels, w,
                                          (left, settings.max_request_pixels), arrays[i] if arrays else None))
            left -= decoded[-1].size
        return [(m.tobytes(), m.shape) for m in decoded]

    masks = await run_in_threadpool(decode_all)

    def answers(ids: list[str]) -> list[EpisodeAccepted]:
        return [EpisodeAccepted(episode_id=i, status="queued", results_stream=run.results_stream)
                for i, run in zip(ids, checked, strict=True)]

    try:
        ids = await store.add_episodes([(run, b.image_id, b.grid, b.policy_version, data, shape,
                                         [list(p) for p in b.points] if b.points is not None else None, b.view)
                                        for b, run, (data, shape) in zip(bodies, checked, masks, strict=True)], idem,
                                       lambda ids: EpisodeBatchAccepted(episodes=answers(ids)).model_dump_json(), wire,
                                       learner)
    except RunBusy as exc:  # backpressure, not an error of the request: the learner retries 429 after Retry-After
        raise HTTPException(429, detail=f"{exc}.", headers={"Retry-After": "1"}) from exc
    if isinstance(ids, str):
        return ids
    for run in checked:
        metrics.EPISODES.labels(run.scorer).inc()
    return answers(ids)


def replay(answer: str) -> Response:
    """The answer first given to an Idempotency-Key, again."""
    return Response(answer, status_code=202, media_type="application/json", headers={"Idempotent-Replayed": "true"})


@router.post("", response_model=EpisodeAccepted, status_code=202, responses=POST_ERRORS,
             openapi_extra=json_body_openapi(EpisodeCreate))
async def create_episode(learner: Learner, body: Annotated[EpisodeCreate, Depends(json_body(EpisodeCreate))],
                         services: ServicesDep) -> EpisodeAccepted:
    """Validate and persist an episode; 202 means it is in Redis and will be scored."""
    await spend(services, episode_limit(services.settings), learner)
    return (await accept(services, [body], batch=False, learner=learner))[0]


IDEMPOTENCY_KEY = Header(
    None, alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[!-~]+$",
    description="Any printable ASCII text (up to 200 characters) naming this batch, the same on every retry of "
                "it: a batch sent again with a key already accepted is not stored twice, and gets the first "
                "answer (the same episode ids) again; the key with another body is a 409. Keys last "
                "RSS_EPISODE_TTL_S, per learner token.")


async def accept_batch(learner: str, services: Services, idempotency_key: str | None, digest: Callable[[], str],
                       count: int, accept_all: Callable[[Idempotent | None], Awaitable[list[EpisodeAccepted] | str]]):
    """A batch of ``count`` episodes, v1 or v2: its Idempotency-Key, its size and rate limits, then ``accept_all``."""
    idem = None
    if idempotency_key is not None:
        idem = Idempotent(keys.idempotency(learner, idempotency_key), await run_in_threadpool(digest))
        try:
            answer = await services.store.replayed(idem)
        except IdempotencyConflict as exc:
            raise HTTPException(409, detail=f"{exc}: send a new key for a new batch.") from exc
        if answer is not None:  # a retry whose first answer was lost: nothing new is written or spent
            return replay(answer)
    if count > services.settings.max_batch:
        raise HTTPException(422, detail=f"{count} episodes exceed the limit of "
                                        f"{services.settings.max_batch} per batch.")
    await spend(services, episode_limit(services.settings), learner, cost=count)
    try:
        accepted = await accept_all(idem)
    except IdempotencyConflict as exc:  # ... and with another body
        raise HTTPException(409, detail=f"{exc}: send a new key for a new batch.") from exc
    if isinstance(accepted, str):  # a request with the same key committed while this one was checked
        return replay(accepted)
    return EpisodeBatchAccepted(episodes=accepted)


@router.post("/batch", response_model=EpisodeBatchAccepted, status_code=202, responses=BATCH_ERRORS,
             openapi_extra=json_body_openapi(EpisodeBatchCreate))
async def create_episode_batch(learner: Learner,
                               body: Annotated[EpisodeBatchCreate, Depends(json_body(EpisodeBatchCreate))],
                               services: ServicesDep, idempotency_key: str | None = IDEMPOTENCY_KEY):
    """Validate and persist several episodes (a learner's step) in one transaction: all or none."""
    return await accept_batch(
        learner, services, idempotency_key, lambda: hashlib.sha256(body.model_dump_json().encode()).hexdigest(),
        len(body.episodes), lambda idem: accept(services, body.episodes, batch=True, idem=idem, learner=learner))


v2_router = APIRouter(prefix="/episodes", tags=["episodes"])

V2_BODY = {"requestBody": {"required": True, "description": (
    "`b'RSS2'`, the header's length (uint32, little-endian), the header (`EpisodeBatchHeader` JSON), then each "
    "episode's K masks as K*h*w uint8 bytes, row-major, in header order (`rss_core.wire`)."),
    "content": {wire.MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}}}


async def binary_body(request: Request) -> bytes:
    """The raw body of a v2 request; 415 unless it says it is ``application/octet-stream``."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != wire.MEDIA_TYPE:
        raise HTTPException(415, detail=f"Content-Type must be {wire.MEDIA_TYPE} (a v2 binary batch), not "
                                        f"{request.headers.get('content-type')!r}; JSON batches go to "
                                        "POST /v1/episodes/batch.")
    return await request.body()


def parse_v2(body: bytes) -> tuple[EpisodeBatchHeader, list[np.ndarray]]:
    """The header and each episode's masks (views of the body); 422 naming what does not fit."""
    try:
        head, data = wire.split_batch(body)
        header = parse_json(EpisodeBatchHeader, head)
        return header, wire.masks_of(header, data)
    except wire.WireError as exc:
        raise HTTPException(422, detail=f"{exc}.") from exc


@v2_router.post("/batch", response_model=EpisodeBatchAccepted, status_code=202, responses=errors(
    *AUTH, 400, 404, 409, 413, 415, 422, 429), openapi_extra=V2_BODY)
async def create_episode_batch_v2(learner: Learner, body: Annotated[bytes, Depends(binary_body)],
                                  services: ServicesDep, idempotency_key: str | None = IDEMPOTENCY_KEY):
    """v2: several episodes in one binary body, masks as raw bytes (no base64, no JSON per pixel); all or none.
    Their results are one entry per episode (`EpisodeResult`) in the run's stream."""
    header, arrays = await run_in_threadpool(parse_v2, body) if len(body) > OFFLOAD_BYTES else parse_v2(body)
    return await accept_batch(
        learner, services, idempotency_key, lambda: hashlib.sha256(body).hexdigest(), len(header.episodes),
        lambda idem: accept(services, header.episodes, batch=True, idem=idem, arrays=arrays, wire=2,
                            learner=learner))


@router.get("/{episode_id}", response_model=EpisodePublic, responses=errors(*AUTH, 404, 422))
async def read_episode(episode_id: str, services: ServicesDep, _: Learner) -> EpisodePublic:
    """An episode's status: queued, scoring, waiting_for_rater, scored, or failed with its reason."""
    episode = await services.store.get_episode(episode_id)
    if episode is None:
        raise HTTPException(404, detail=f"Episode {episode_id!r} is unknown (or expired after it was scored).")
    return episode

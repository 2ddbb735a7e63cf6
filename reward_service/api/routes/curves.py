"""A run's learning curve and gallery, which its learner posts after each evaluation, and the overview of a run
that the operator page (/ui/runs) shows."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from starlette.concurrency import run_in_threadpool

from reward_service.api.deps import Learner, ServicesDep, json_body, json_body_openapi
from reward_service.api.errors import AUTH, JSON_BODY, errors
from reward_service.api.routes.episodes import require_image
from reward_service.api.routes.ops import median_seconds, service_stats
from reward_service.datasets import ServedDataset
from reward_service.services import Services
from reward_service.store import CURVE_POINTS
from rss_core import codec, keys
from rss_core.codec import MaskError
from rss_core.schemas import (
    GalleryItemPublic,
    MetricsPoint,
    RunCurve,
    RunGallery,
    RunMetricsAccepted,
    RunMetricsCreate,
    RunOverview,
    RunPublic,
)

router = APIRouter(prefix="/runs", tags=["runs"])


async def registered(services: Services, run_id: str) -> RunPublic:
    run = await services.store.get_run(run_id)
    if run is None:
        raise HTTPException(404, detail=f"Run {run_id!r} is not registered.")
    return run


def checked_gallery(dataset: ServedDataset, run: RunPublic, body: RunMetricsCreate, at: float) -> RunGallery:
    """The posted gallery with each mask decoded, checked against the run's classes and stored as PNG (what the
    page decodes); an HTTPException naming the item otherwise. CPU work: call in a thread."""
    assert body.gallery is not None
    items = []
    for i, item in enumerate(body.gallery):
        where = f"gallery[{i}]"
        require_image(dataset, item.image_id, f"{where}: ")
        masks = {}
        for name in ("argmax", "sampled"):
            try:
                mask = codec.decode_mask(getattr(item, name), item.shape, f"{where}.{name}")
            except MaskError as exc:
                raise HTTPException(422, detail=f"{exc}.") from exc
            if int(mask.max()) >= run.num_classes:
                raise HTTPException(422, detail=f"{where}.{name}: class value {int(mask.max())} is out of range for "
                                                f"{run.num_classes} classes (0..{run.num_classes - 1}).")
            masks[name] = codec.png_mask(mask)
        items.append(GalleryItemPublic(image_id=item.image_id, image_url=f"/v1/images/{item.image_id}", **masks))
    return RunGallery(step=body.step, at=at, items=items)


@router.post("/{run_id}/metrics", response_model=RunMetricsAccepted,
             responses=errors(*AUTH, *JSON_BODY, 404), openapi_extra=json_body_openapi(RunMetricsCreate))
async def create_metrics(run_id: str, _: Learner, services: ServicesDep,
                         body: Annotated[RunMetricsCreate, Depends(json_body(RunMetricsCreate))]) -> RunMetricsAccepted:
    """Add one evaluation to the run's learning curve (a step posted again replaces its point) and, with
    `gallery`, replace the run's gallery."""
    run = await registered(services, run_id)
    if body.per_class_iou is not None and len(body.per_class_iou) != run.num_classes:
        raise HTTPException(422, detail=f"per_class_iou: {len(body.per_class_iou)} values for the run's "
                                        f"{run.num_classes} classes.")
    at = time.time()
    gallery = (await run_in_threadpool(checked_gallery, services.dataset, run, body, at)
               if body.gallery is not None else None)
    point = MetricsPoint(step=body.step, at=at, metrics=body.metrics, per_class_iou=body.per_class_iou)
    replaced, points = await services.store.put_metrics(run_id, point, gallery)
    return RunMetricsAccepted(step=body.step, replaced=replaced, points=points)


@router.get("/{run_id}/metrics", response_model=RunCurve, responses=errors(*AUTH, 404, 422))
async def read_metrics(run_id: str, _: Learner, services: ServicesDep) -> RunCurve:
    """The run's learning curve: every evaluation its learner posted (the last CURVE_POINTS steps), by step."""
    await registered(services, run_id)
    return RunCurve(run_id=run_id, max_points=CURVE_POINTS, points=await services.store.curve(run_id))


@router.get("/{run_id}/overview", response_model=RunOverview, responses=errors(*AUTH, 404, 422))
async def read_overview(run_id: str, _: Learner, services: ServicesDep) -> RunOverview:
    """What the operator page shows of a run: its queue depths, the raters' throughput, honeypot agreement and
    seconds per answer, the end of its curve and its latest gallery, beside the service-wide statistics."""
    store = services.store
    run = await registered(services, run_id)
    unread, unacked = await store.group_depth(keys.results(run_id), keys.RESULTS_GROUP)
    pending = int(await store.r.get(keys.pending_pixels(run_id)) or 0)
    stats = await service_stats(services)
    now_minute = 0
    for name in services.settings.rater_tokens:
        now_minute += (await store.minute_counts(f"ratings:{name}", 1))[0]
    honeypots = sum(int(r.get("honeypots") or 0) for r in stats.raters.values())
    agreed = sum(int(r.get("honeypots_agreed") or 0) for r in stats.raters.values())
    points, last_step = await store.curve_end(run_id)
    seconds = await median_seconds(store.r, f"kind:{run.task_kind}") if run.scorer == "human" else None
    return RunOverview(
        run=run, pending_pixels=pending, results_unread=unread, results_unacked=unacked,
        ratings_last_minute=now_minute,
        ratings_per_minute_5m=sum(float(r.get("per_minute_5m") or 0.0) for r in stats.raters.values()),
        honeypots=honeypots, honeypots_agreed=agreed, agreement=agreed / honeypots if honeypots else None,
        median_rater_seconds=seconds, curve_points=points, last_step=last_step, gallery=await store.gallery(run_id),
        stats=stats)


"""Rating tasks: raters lease the next task, answer it or skip it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from reward_service import metrics
from reward_service.api.deps import PollingRater, Rater, RatingRater, ServicesDep, json_body, json_body_openapi
from reward_service.api.errors import AUTH, JSON_BODY, errors
from reward_service.scorers.human import TaskError
from rss_core import keys
from rss_core.schemas import LeaseRef, QueueDepth, RatingAccepted, RatingCreate, TaskPublic

router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.get("/next", response_model=TaskPublic, responses={204: {"description": "No task is waiting."},
                                                         **errors(*AUTH, 422, 429)})
async def read_next_task(services: ServicesDep, rater: PollingRater,
                         wait_s: float = Query(0, ge=0, le=30, description="Wait up to this long for a task.")):
    """Lease the next task for this rater; it returns to the queue if not answered in time."""
    task = await services.human.lease(rater, wait_s)
    return task if task is not None else Response(status_code=204)


@router.get("/queue", response_model=QueueDepth, responses=errors(*AUTH))
async def read_queue(services: ServicesDep, _: Rater) -> QueueDepth:
    """How many rating slots wait for a rater, and how many are leased."""
    waiting, leased = await services.store.group_depth(keys.TASKS, keys.TASKS_GROUP)
    return QueueDepth(waiting=waiting, leased=leased)


ANSWER_ERRORS = errors(*AUTH, *JSON_BODY, 404, 409, 410, 429)


@router.post("/{task_id}/rating", response_model=RatingAccepted, responses=ANSWER_ERRORS,
             openapi_extra=json_body_openapi(RatingCreate))
async def create_rating(rater: RatingRater, task_id: str,
                        body: Annotated[RatingCreate, Depends(json_body(RatingCreate))],
                        services: ServicesDep) -> RatingAccepted:
    """Answer a leased task: a score, a preference, or a per-pixel map, by the task's kind."""
    try:
        done, needed = await services.human.rate(rater, task_id, body)
    except TaskError as exc:
        raise HTTPException(exc.status, detail=exc.detail) from exc
    metrics.RATINGS.labels("rating").inc()
    return RatingAccepted(task_id=task_id, ratings_done=done, ratings_needed=needed, complete=done >= needed)


@router.post("/{task_id}/skip", status_code=204, responses=ANSWER_ERRORS, openapi_extra=json_body_openapi(LeaseRef))
async def create_skip(rater: RatingRater, task_id: str, body: Annotated[LeaseRef, Depends(json_body(LeaseRef))],
                      services: ServicesDep) -> Response:
    """Give a leased task back; it is not offered to this rater again."""
    try:
        await services.human.skip(rater, task_id, body.lease_id)
    except TaskError as exc:
        raise HTTPException(exc.status, detail=exc.detail) from exc
    metrics.RATINGS.labels("skip").inc()
    return Response(status_code=204)

"""Rating tasks: raters lease the next task, answer it or skip it."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials

from reward_service import metrics
from reward_service.api.deps import (
    Credentials,
    PollingRater,
    Rater,
    RatingRater,
    ServicesDep,
    is_json,
    json_body,
    json_body_openapi,
    parse_json,
    rating_limit,
    require_rater,
    spend,
)
from reward_service.api.errors import AUTH, JSON_BODY, errors
from reward_service.scorers.human import TaskError
from rss_core import keys
from rss_core.schemas import LeaseRef, LeaseRelease, QueueDepth, RatingAccepted, RatingCreate, TaskPublic

router = APIRouter(prefix="/tasks", tags=["tasks"])


@contextmanager
def task_errors() -> Iterator[None]:
    """A `TaskError` of the human scorer as the HTTP error it names."""
    try:
        yield
    except TaskError as exc:
        raise HTTPException(exc.status, detail=exc.detail) from exc


@router.get("/next", response_model=TaskPublic, responses={204: {"description": "No task is waiting."},
                                                         **errors(*AUTH, 422, 429)})
async def read_next_task(request: Request, services: ServicesDep, rater: PollingRater,
                         wait_s: float = Query(0, ge=0, le=30, description="Wait up to this long for a task.")):
    """Lease the next task for this rater; it returns to the queue if not answered in time."""
    task = await services.human.lease(rater, wait_s)
    if task is not None and await request.is_disconnected():
        # the client left during the long poll (a closed tab, a sign-out): nobody will see this lease, so it
        # goes back at once rather than after RSS_LEASE_S
        with suppress(TaskError):
            await services.human.release(rater, task.task_id, task.lease_id)
        return Response(status_code=204)
    return task if task is not None else Response(status_code=204)


@router.get("/queue", response_model=QueueDepth, responses=errors(*AUTH))
async def read_queue(services: ServicesDep, rater: Rater) -> QueueDepth:
    """How many rating slots wait for a rater, and how many are leased; how many tasks this rater may lease
    now, and how many they skipped that will be offered to them again."""
    waiting, leased = await services.store.group_depth(keys.TASKS, keys.TASKS_GROUP)
    available, later = await services.human.queue_for(rater)
    return QueueDepth(waiting=waiting, leased=leased, available=available, skipped_later=later)


ANSWER_ERRORS = errors(*AUTH, *JSON_BODY, 404, 409, 410, 429)


@router.post("/{task_id}/rating", response_model=RatingAccepted, responses=ANSWER_ERRORS,
             openapi_extra=json_body_openapi(RatingCreate))
async def create_rating(rater: RatingRater, task_id: str,
                        body: Annotated[RatingCreate, Depends(json_body(RatingCreate))],
                        services: ServicesDep) -> RatingAccepted:
    """Answer a leased task: a score, a preference, or a per-pixel map, by the task's kind."""
    with task_errors():
        done, needed, amend_until = await services.human.rate(rater, task_id, body)
    metrics.RATINGS.labels("rating").inc()
    return RatingAccepted(task_id=task_id, ratings_done=done, ratings_needed=needed, complete=done >= needed,
                          amend_until=amend_until)


@router.put("/{task_id}/rating", status_code=204, responses=ANSWER_ERRORS,
            openapi_extra=json_body_openapi(RatingCreate))
async def amend_rating(rater: RatingRater, task_id: str,
                       body: Annotated[RatingCreate, Depends(json_body(RatingCreate))],
                       services: ServicesDep) -> Response:
    """Replace this rater's answer to the task (same lease, a whole new answer), once, within RSS_AMEND_S of
    it and before the task is finalized (409 after): the results carry only the amended answer."""
    with task_errors():
        await services.human.amend(rater, task_id, body)
    metrics.RATINGS.labels("amend").inc()
    return Response(status_code=204)


def _body_token(raw: bytes) -> str | None:
    """The ``token`` of a JSON object body, if it has one (read before the body is validated)."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    token = value.get("token") if isinstance(value, dict) else None
    return token if isinstance(token, str) else None


def _release_rater(services, credentials: HTTPAuthorizationCredentials | None, token: str | None) -> str:
    """The rater of the Authorization header, else of the body's token (sendBeacon cannot set headers)."""
    if credentials is not None or token is None:
        return require_rater(services, credentials)
    found = None
    for name, known in services.settings.rater_tokens.items():  # compare every token: no early exit to time
        if secrets.compare_digest(token.encode(), known.encode()):
            found = name
    if found is None:
        raise HTTPException(401, detail="Unknown rater token in the body.")
    return found


@router.post("/{task_id}/release", status_code=204, responses=errors(*AUTH, *JSON_BODY, 404, 409, 410, 429),
             openapi_extra=json_body_openapi(LeaseRelease))
async def release_lease(request: Request, task_id: str, services: ServicesDep, credentials: Credentials) -> Response:
    """Give a leased task back unanswered: it waits again at once, for any rater (this one too), and counts as
    no skip. The UI calls it on sign-out, for a prefetched task it will not show, and from
    `navigator.sendBeacon` when the page closes: a beacon cannot set an Authorization header, so the body may
    carry the rater's token instead (`text/plain` accepted as JSON, what a beacon sends). The lease id is a
    128-bit random capability only its rater was given, and the token must be that rater's."""
    content_type = request.headers.get("content-type")
    readable = is_json(content_type) or (content_type or "").split(";")[0].strip().lower() == "text/plain"
    raw = await request.body()
    if credentials is not None or _body_token(raw if readable else b"") is None:
        require_rater(services, credentials)  # credentials first, like every route: no token at all is a 401
    if not readable:
        raise HTTPException(415, detail=f"Content-Type must be application/json or text/plain, not {content_type!r}.")
    body = parse_json(LeaseRelease, raw)
    rater = _release_rater(services, credentials, body.token)
    await spend(services, rating_limit(services.settings), rater)
    with task_errors():
        await services.human.release(rater, task_id, body.lease_id)
    metrics.RATINGS.labels("release").inc()
    return Response(status_code=204)


@router.post("/{task_id}/skip", status_code=204, responses=ANSWER_ERRORS, openapi_extra=json_body_openapi(LeaseRef))
async def create_skip(rater: RatingRater, task_id: str, body: Annotated[LeaseRef, Depends(json_body(LeaseRef))],
                      services: ServicesDep) -> Response:
    """Give a leased task back; it is not offered to this rater again."""
    with task_errors():
        await services.human.skip(rater, task_id, body.lease_id)
    metrics.RATINGS.labels("skip").inc()
    return Response(status_code=204)

"""Dependencies of the routes: the shared services, the two token roles, JSON bodies and rate limits."""

from __future__ import annotations

import secrets
from email.message import Message
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reward_service.core.config import Settings
from reward_service.ratelimit import Limit, RateLimited, retry_after_header, token_id
from reward_service.services import Services

_bearer = HTTPBearer(auto_error=False, description="A learner or rater token from the service's settings.")


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def _role(services: Services, credentials: HTTPAuthorizationCredentials | None) -> tuple[str, str]:
    """("learner", digest of the token) or ("rater", name) for a known token; 401 otherwise."""
    if credentials is None:
        raise _unauthorized("Missing bearer token (Authorization: Bearer <token>).")
    token = credentials.credentials.encode()
    found = None
    for known in services.settings.learner_tokens:  # compare every token: no early exit to time
        if secrets.compare_digest(token, known.encode()):
            found = ("learner", f"learner:{token_id(known)}")
    for name, known in services.settings.rater_tokens.items():
        if secrets.compare_digest(token, known.encode()):
            found = ("rater", name)
    if found is None:
        raise _unauthorized("Unknown bearer token.")
    return found


def require_learner(services: ServicesDep, credentials: Credentials) -> str:
    """The learner token's id (a digest: rate limits are per token)."""
    role, who = _role(services, credentials)
    if role != "learner":
        raise HTTPException(403, detail="This endpoint needs a learner token.")
    return who


def require_rater(services: ServicesDep, credentials: Credentials) -> str:
    role, name = _role(services, credentials)
    if role != "rater":
        raise HTTPException(403, detail="This endpoint needs a rater token.")
    return name


def require_any(services: ServicesDep, credentials: Credentials) -> str:
    return _role(services, credentials)[1]


Learner = Annotated[str, Depends(require_learner)]
Rater = Annotated[str, Depends(require_rater)]
AnyToken = Annotated[str, Depends(require_any)]


def is_json(content_type: str | None) -> bool:
    """What FastAPI parses as JSON: no Content-Type, application/json, or application/*+json."""
    if not content_type:
        return True
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def require_json(request: Request) -> None:
    """415 for a body that is not JSON; without it FastAPI answers a form or text body with a 422 about the
    body's fields, which hides the real mistake."""
    content_type = request.headers.get("content-type")
    if not is_json(content_type):
        raise HTTPException(415, detail=f"Content-Type must be application/json, not {content_type!r}.")


JsonBody = Annotated[None, Depends(require_json)]


def episode_limit(settings: Settings) -> Limit:
    rate, burst = settings.rate_limit_episodes_per_s, settings.rate_limit_episodes_burst
    return Limit("episodes", rate, burst, f"{rate:g} episodes/s per learner token, burst {burst} "
                                          "(RSS_RATE_LIMIT_EPISODES_PER_S, RSS_RATE_LIMIT_EPISODES_BURST)")


def rating_limit(settings: Settings) -> Limit:
    rate, burst = settings.rate_limit_ratings_per_min, settings.rate_limit_ratings_burst
    return Limit("ratings", rate / 60, burst, f"{rate:g} ratings/min per rater, burst {burst} "
                                              "(RSS_RATE_LIMIT_RATINGS_PER_MIN, RSS_RATE_LIMIT_RATINGS_BURST)")


async def spend(services: Services, limit: Limit, who: str, cost: int = 1) -> None:
    """Take ``cost`` from ``who``'s bucket of ``limit``, or answer 429 with Retry-After."""
    try:
        await services.limits.take(limit, who, cost)
    except RateLimited as exc:
        raise HTTPException(429, detail=str(exc),
                            headers={"Retry-After": retry_after_header(exc.retry_after_s)}) from exc


async def require_rater_within_limit(services: ServicesDep, rater: Rater, _json: JsonBody) -> str:
    """A rater token sending JSON whose bucket of ratings (answers and skips) is not empty."""
    await spend(services, rating_limit(services.settings), rater)
    return rater


RatingRater = Annotated[str, Depends(require_rater_within_limit)]

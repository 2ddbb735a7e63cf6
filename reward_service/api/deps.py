"""Dependencies of the routes: the shared services, the two token roles, JSON bodies and rate limits."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from email.message import Message
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json
from starlette.concurrency import run_in_threadpool

from reward_service.core.config import Settings
from reward_service.ratelimit import Limit, RateLimited, retry_after_header, token_id
from reward_service.services import Services

OFFLOAD_BYTES = 256 * 1024  # bodies larger than this are parsed in a thread (~1 ms of parsing)
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


def require_role(services: ServicesDep, credentials: Credentials) -> tuple[str, str]:
    """("learner", token id) or ("rater", name)."""
    return _role(services, credentials)


Learner = Annotated[str, Depends(require_learner)]
Role = Annotated[tuple[str, str], Depends(require_role)]
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

Model = TypeVar("Model", bound=BaseModel)


def parse_json(model: type[Model], body: bytes) -> Model:
    """``model`` from a request body, or a RequestValidationError (a 422) naming the field and what is wrong.

    The one parser of every JSON body. It reads the bytes straight into the model (pydantic's JSON parser: a
    512x512 raw mask parses in 0.1 ms, against 0.9 ms through `json.loads` first, FastAPI's way) and takes
    JSON, not what Python's `json` module takes besides: a lone surrogate (`"\\udfff"`, not UTF-8 text), a
    number over 4300 digits, or nesting deeper than 200 are invalid JSON; NaN and Infinity are invalid JSON
    wherever they are, even in a field the model does not know. A number the schema declares must be finite
    and, if an integer, fit an int64 (`rss_core.schemas`), so 1e999 and 10**400 are refused in every field
    that could store them; fields the model does not know are ignored, whatever number they hold."""
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(_body_errors(exc)) from None
    if b"NaN" in body or b"Infinity" in body:  # rare outside strings, and cheap to look for (memchr)
        try:
            from_json(body, allow_inf_nan=False)
        except ValueError as exc:
            raise RequestValidationError([{
                "type": "json_invalid", "loc": ("body",),
                "msg": f"Invalid JSON: NaN and Infinity are not JSON numbers ({exc})"}]) from None
    return parsed


def _body_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors located in the body, as FastAPI locates its own (the UI reads ``loc[1:]``)."""
    errors = exc.errors(include_url=False, include_context=False)
    for error in errors:
        error["loc"] = ("body", *error["loc"])
        if isinstance(error.get("input"), bytes):  # invalid JSON comes back as the whole body
            del error["input"]
        if error["type"] == "json_invalid" and ("surrogate" in error["msg"] or "hex escape" in error["msg"]):
            error["msg"] += " (a \\uD800-\\uDFFF escape is half of a surrogate pair: alone, it is not text)"
    return errors


def json_body(model: type[Model]) -> Callable[[Request], Awaitable[Model]]:
    """A dependency parsing ``model`` from the body (`parse_json`); 415 for a body that is not JSON.

    Reading the body here, below the size limit's middleware, lets a body over the limit end as a 413 (and a
    client that hangs up mid-body as one log line) rather than FastAPI's 400 'error parsing the body'. Declare
    the body in the OpenAPI with ``openapi_extra=json_body_openapi(model)``."""

    async def parse(request: Request) -> Model:
        require_json(request)
        body = await request.body()
        if len(body) > OFFLOAD_BYTES:  # parsing megabytes is CPU work: off the event loop other requests share
            return await run_in_threadpool(parse_json, model, body)
        return parse_json(model, body)

    return parse


def json_body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI requestBody of a route whose body `json_body` parses (`add_contract_schemas` lists the
    model's schema)."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


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


def poll_limit(settings: Settings) -> Limit:
    rate, burst = settings.rate_limit_polls_per_min, settings.rate_limit_polls_burst
    return Limit("polls", rate / 60, burst, f"{rate:g} polls of /v1/tasks/next per minute per rater, burst {burst} "
                                            "(RSS_RATE_LIMIT_POLLS_PER_MIN, RSS_RATE_LIMIT_POLLS_BURST)")


def address_limit(settings: Settings) -> Limit:
    rate, burst = settings.rate_limit_address_per_s, settings.rate_limit_address_burst
    return Limit("address", rate, burst, f"{rate:g} requests/s per client address, burst {burst} "
                                         "(RSS_RATE_LIMIT_ADDRESS_PER_S, RSS_RATE_LIMIT_ADDRESS_BURST)")


def client_address(request: Request, trusted: list[str]) -> str:
    """The client's address: the peer's, or, when the peer is a trusted proxy (RSS_TRUSTED_PROXIES), the last
    address in X-Forwarded-For that is not one. Without trusted proxies the header is ignored: anyone can
    send it."""
    peer = request.client.host if request.client else "unknown"
    if not trusted:
        return peer
    networks = [ipaddress.ip_network(p, strict=False) for p in trusted]

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in networks)

    if not is_trusted(peer):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getlist("x-forwarded-for")).split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage where an address goes: the proxy's own bucket
    return peer


async def limit_address(request: Request, services: ServicesDep) -> None:
    """Every /v1 request but health and readiness spends from its client address's bucket."""
    await spend(services, address_limit(services.settings),
                client_address(request, services.settings.trusted_proxies).replace(":", "_"))


async def require_rater_within_poll_limit(services: ServicesDep, rater: Rater) -> str:
    await spend(services, poll_limit(services.settings), rater)
    return rater


PollingRater = Annotated[str, Depends(require_rater_within_poll_limit)]


async def require_rater_within_limit(services: ServicesDep, rater: Rater, _json: JsonBody) -> str:
    """A rater token sending JSON whose bucket of ratings (answers and skips) is not empty."""
    await spend(services, rating_limit(services.settings), rater)
    return rater


RatingRater = Annotated[str, Depends(require_rater_within_limit)]

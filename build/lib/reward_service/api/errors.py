"""The error answers each route declares in the OpenAPI, so clients (and the fuzz test) know every status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from rss_core.schemas import ErrorPublic, ValidationErrorPublic

log = logging.getLogger(__name__)

_WHAT = {
    400: "Malformed: an image id that is not a dataset-relative name, or a body that is not UTF-8 JSON text.",
    401: "Missing or unknown bearer token.",
    403: "The token's role may not use this endpoint (or the lease is another rater's).",
    404: "Not found (unknown run, episode, image, task or lease).",
    409: "Conflicts with the current state (run registered differently, lease already answered).",
    410: "The lease expired; the task went back to the queue.",
    413: "The body (or the episode's pixels) exceeds a limit.",
    415: "The body is not JSON.",
    422: "The body or a parameter is invalid; the detail names the field.",
    429: "A per-token rate limit is exceeded; retry after Retry-After seconds.",
    503: "Redis is unreachable or still loading (a restart): nothing was written; retry after Retry-After seconds.",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds until the request would be accepted.",
                          "schema": {"type": "integer", "minimum": 1}}},
    503: {"Retry-After": {"description": "Seconds to wait before trying again.",
                          "schema": {"type": "integer", "minimum": 1}}},
}

AUTH = (401, 403)
JSON_BODY = (400, 413, 415, 422)  # 400: FastAPI's answer to a body that is not UTF-8


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can answer ``codes``: each with its model, meaning and headers.

    Every such route reads or writes Redis, so each may also answer 503 (`redis_unavailable`)."""
    return {code: {"model": ValidationErrorPublic | ErrorPublic if code == 422 else ErrorPublic,
                   "description": _WHAT[code], **({"headers": _HEADERS[code]} if code in _HEADERS else {})}
            for code in sorted({*codes, 503})}


async def redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A Redis connection lost, refused, timed out or still loading its append-only file: a 503 the client
    retries (the learner does), never a 500 with a traceback. A transaction that failed this way wrote
    nothing; one whose reply was lost may have, so a retry can create a second copy (counted orphaned)."""
    log.warning("%s %s: redis unavailable: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "Redis is unavailable (restarting?); nothing was accepted. Retry shortly."},
                        status_code=503, headers={"Retry-After": "1"})

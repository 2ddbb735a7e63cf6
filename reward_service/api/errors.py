"""The error answers each route declares in the OpenAPI, so clients (and the fuzz test) know every status, and
the handlers that render every refusal as strict JSON whatever the request held."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from starlette.exceptions import HTTPException

from rss_core.schemas import ErrorPublic, ValidationErrorPublic

log = logging.getLogger(__name__)

_WHAT = {
    400: "Malformed: an image id that is not a dataset-relative name, or a body that is not UTF-8 JSON text.",
    401: "Missing or unknown bearer token.",
    403: "The token's role may not use this endpoint (or the lease is another rater's).",
    404: "Not found (unknown run, episode, image, task or lease).",
    409: "Conflicts with the current state (run registered differently, lease already answered, an Idempotency-Key "
         "sent with another body).",
    410: "The lease expired; the task went back to the queue.",
    413: "The body (or the episode's pixels) exceeds a limit.",
    415: "The body is not JSON.",
    422: "The body or a parameter is invalid, or names an image the dataset cannot read; the detail says which.",
    429: "A rate limit (per token, per rater, or per client address) is exceeded; retry after Retry-After seconds.",
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
JSON_BODY = (400, 413, 415, 422)  # 400: a malformed id in the body (the episodes'), kept declared on every body


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can answer ``codes``: each with its model, meaning and headers.

    Every such route reads or writes Redis, so each may also answer 503 (`redis_unavailable`), and spends from
    its client address's rate limit, so each may answer 429 (`limit_address`)."""
    return {code: {"model": ValidationErrorPublic | ErrorPublic if code == 422 else ErrorPublic,
                   "description": _WHAT[code], **({"headers": _HEADERS[code]} if code in _HEADERS else {})}
            for code in sorted({*codes, 429, 503})}


async def redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A Redis connection lost, refused, timed out or still loading its append-only file: a 503 the client
    retries (the learner does), never a 500 with a traceback. A transaction that failed this way wrote
    nothing; one whose reply was lost may have, so a retry can create a second copy (counted orphaned)."""
    log.warning("%s %s: redis unavailable: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "Redis is unavailable (restarting?); nothing was accepted. Retry shortly."},
                        status_code=503, headers={"Retry-After": "1"})


# --- rendering refusals ------------------------------------------------------------------------------------
# A validation error echoes the value at fault (`input`), and the value can be what made the request bad: NaN
# or 1e999 (not JSON: json.dumps(allow_nan=False) raises), a lone surrogate (not UTF-8), a huge or deep body.
# Each refusal is rendered from parts that are known to be strict JSON; an echo that is not, or is long, is left
# out: the field's path and the message say what is wrong.

MAX_ECHO = 200  # characters of an offending value echoed back in a 422


def _text(value: object) -> str:
    """``value`` as text that encodes to UTF-8 (a lone surrogate becomes its escape, `\\udfff`)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def _strict(value: object) -> str | None:
    """``value`` as strict JSON text (finite numbers, valid UTF-8), or None; None too for a long string or
    a big container (too long to echo anyway: not worth rendering)."""
    if isinstance(value, str | bytes | list | tuple | dict) and len(value) > MAX_ECHO:
        return None
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return None
    return text


def _field_error(error: dict) -> dict:
    safe = {"type": _text(error.get("type", "invalid")),
            "loc": [part if isinstance(part, int) else _text(part) for part in error.get("loc", ())],
            "msg": _text(error.get("msg", ""))}
    for key in ("input", "ctx"):
        if key in error:
            value = error[key]
            if key == "ctx":  # a validator's exception: its message
                value = {k: v if isinstance(v, int | str) or (isinstance(v, float) and math.isfinite(v)) else
                         _text(v) for k, v in dict(value).items()}
            text = _strict(value)
            if text is not None and len(text) <= MAX_ECHO:
                safe[key] = value
    return safe


def render_errors(errors: list | tuple) -> list[dict]:
    """FastAPI / pydantic error entries that are strict JSON: loc, msg, type, and the input when it renders."""
    return [_field_error(error) if isinstance(error, dict) else {"loc": [], "msg": _text(error), "type": "invalid"}
            for error in errors]


async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with one entry per field at fault, rendered safely (the handler FastAPI's own would fail on NaN)."""
    return JSONResponse({"detail": render_errors(exc.errors())}, status_code=422)


async def http_error(request: Request, exc: HTTPException) -> Response:
    """FastAPI's HTTPException answer, with a detail that is strict JSON whatever it quotes."""
    headers = getattr(exc, "headers", None)
    if not is_body_allowed_for_status_code(exc.status_code):
        return Response(status_code=exc.status_code, headers=headers)
    detail = exc.detail if _strict(exc.detail) is not None else _text(exc.detail)
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)


def plain_json(status: int, detail: str, *, close: bool = False) -> tuple[dict, dict]:
    """The ASGI messages of a JSON ``{"detail": ...}`` answer written below FastAPI (middleware); ``close``
    adds `Connection: close`, so a keep-alive client opens a new connection for its next request instead
    of sending it on one the server is about to drop."""
    body = json.dumps({"detail": _text(detail)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body})

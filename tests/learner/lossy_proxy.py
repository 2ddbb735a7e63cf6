"""A reverse proxy in front of `rss serve` that loses answers: it forwards every request, and answers the first
``RSS_PROXY_LOSE`` (1) batches of episodes (v1 or v2) with a 502 after the service accepted them, as a proxy whose
upstream connection broke after the commit does. ``GET /health`` is its own; ``GET /lost`` counts the
answers it lost; ``RSS_PROXY_TARGET`` is the service's URL."""

from __future__ import annotations

import os

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TARGET = os.environ.get("RSS_PROXY_TARGET", "http://127.0.0.1:8000")
LOSE = int(os.environ.get("RSS_PROXY_LOSE", "1"))
lost: list[dict] = []


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def read_lost(request: Request) -> Response:
    return JSONResponse(lost)


async def forward(request: Request) -> Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
    async with httpx.AsyncClient(base_url=TARGET, timeout=60) as upstream:
        answer = await upstream.request(request.method, request.url.path, params=request.query_params,
                                        content=await request.body(), headers=headers)
    if request.url.path.endswith("/episodes/batch") and answer.status_code == 202 and len(lost) < LOSE:
        lost.append({"key": request.headers.get("idempotency-key"), "answer": answer.json()})
        return JSONResponse({"detail": "upstream connection lost"}, status_code=502)
    return Response(answer.content, status_code=answer.status_code,
                    headers={k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "retry-after")})


app = Starlette(routes=[Route("/health", health), Route("/lost", read_lost),
                        Route("/{path:path}", forward, methods=["GET", "POST"])])

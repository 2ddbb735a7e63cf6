"""The FastAPI app: lifespan (Redis, dataset, scorers, worker), middleware, routes, /metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import torch
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from prometheus_client import make_asgi_app
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from reward_service import metrics
from reward_service.api.errors import http_error, plain_json, redis_unavailable, validation_failed
from reward_service.api.main import api_router, api_router_v2
from reward_service.core.config import Settings, get_settings
from reward_service.datasets import ServedDataset
from reward_service.ratelimit import RateLimiter
from reward_service.scorers.http import HttpScorer
from reward_service.scorers.human import HumanTasks
from reward_service.services import Services
from reward_service.store import Store, claim_database, connect, connect_blocking, ensure_group
from reward_service.worker import Worker
from rss_core import keys
from rss_core.schemas import (
    EpisodeBatchCreate,
    EpisodeBatchHeader,
    EpisodeCreate,
    EpisodeResult,
    ExternalScoreRequest,
    ExternalScoreResponse,
    LeaseRef,
    RatingCreate,
    Result,
    RunCreate,
    RunMetricsCreate,
)

log = logging.getLogger(__name__)
# A link to the checkout's annotator_ui/, or the copy an installed (not editable) package carries
UI_DIR = (Path(__file__).resolve().parent / "annotator_ui").resolve()


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = app.state.settings
    torch.set_num_threads(settings.torch_threads)
    dataset = await asyncio.to_thread(ServedDataset, settings)
    fingerprint = await asyncio.to_thread(dataset.dataset.fingerprint)  # hashes a folder's labels: once, here
    log.info("serving dataset %s (%d images, %d classes, fingerprint %s)", dataset.name, len(dataset.ids),
             dataset.num_classes, fingerprint)
    r = await connect(settings.redis_url, settings)
    blocking = await connect_blocking(settings)
    await claim_database(r, settings)
    store = Store(r, settings)
    for stream, group in ((keys.JOBS, keys.JOBS_GROUP), (keys.TASKS, keys.TASKS_GROUP)):
        await ensure_group(r, stream, group)
    human = HumanTasks(store, blocking, dataset)
    app.state.services = Services(settings, store, dataset, human, RateLimiter(r))
    # Scoring normally runs in `rss worker` processes; RSS_WORKER=true also scores in this one.
    http = HttpScorer(settings) if settings.worker else None
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(store, blocking, dataset, http, human).run(stop)) if http else None
    try:
        yield
    finally:
        stop.set()
        if task is not None:
            try:
                await asyncio.wait_for(task, settings.worker_block_ms / 1000 + 5)
            except asyncio.TimeoutError:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        if http is not None:
            await http.aclose()
        await blocking.aclose()
        await r.aclose()


def route_template(scope: dict) -> str:
    """The matched route's path template (`/v1/episodes/{episode_id}`): bounded metric labels."""
    context = scope.get("fastapi", {}).get("effective_route_context")  # FastAPI >= 0.16x: included routers
    path = getattr(context, "path", None) or getattr(scope.get("route"), "path", None)
    return path or "unmatched"


class BodyTooLarge(Exception):
    pass


class LimitAndMeasure:
    """Pure ASGI middleware: refuse bodies over the limit (413), time and count every request, and answer
    what nothing else did: a client that hung up mid-body is one log line, an unexpected exception a JSON
    500 with `Connection: close` (the exception goes no further, so the server does not reset the
    connection under a keep-alive client)."""

    def __init__(self, app, max_body_bytes: int) -> None:
        self.app, self.limit = app, max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status, received = time.perf_counter(), [0], [0]
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._reject(send, 413, f"Request body exceeds the limit of {self.limit} bytes.")
            return

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > self.limit:
                    raise BodyTooLarge
            return message

        async def recording_send(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, limited_receive, recording_send)
        except BodyTooLarge:
            if not status[0]:
                await self._reject(send, 413, f"Request body exceeds the limit of {self.limit} bytes.")
                status[0] = 413
        except ClientDisconnect:  # routine (a killed learner, a closed laptop): no traceback
            log.warning("%s %s: the client disconnected before its body was received (%d of %s bytes); nothing "
                        "was accepted", scope["method"], scope["path"], received[0],
                        length.decode() if length else "?")
        except Exception:
            if status[0]:
                raise  # the answer is half sent: only the server can end the connection
            log.exception("%s %s: unexpected error; answered 500", scope["method"], scope["path"])
            for message in plain_json(500, "Internal error; the service logged it.", close=True):
                await send(message)
            status[0] = 500
        finally:
            metrics.REQUEST_SECONDS.labels(scope["method"], route_template(scope), str(status[0])).observe(
                time.perf_counter() - started)
            if 400 <= status[0] < 500:
                metrics.REJECTED.labels(str(status[0])).inc()

    @staticmethod
    async def _reject(send, status: int, detail: str) -> None:
        """Refuse a body before reading all of it: the rest is still on the connection, so close it."""
        for message in plain_json(status, detail, close=True):
            await send(message)


def add_contract_schemas(app: FastAPI) -> None:
    """Put the models no route parameter declares (bodies are parsed from bytes by `json_body`, results
    entries, the external scorer's contract) in the OpenAPI schemas."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (RunCreate, EpisodeCreate, EpisodeBatchCreate, EpisodeBatchHeader, RatingCreate, LeaseRef,
                          Result, EpisodeResult, ExternalScoreRequest, ExternalScoreResponse, RunMetricsCreate):
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(definition.pop("$defs", {}))
                components[model.__name__] = definition
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service app; ``settings`` default to the environment (`RSS_*`)."""
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = FastAPI(
        title="RSS reward service", version=f"{keys.SCHEMA_VERSION}",
        description="Scores segmentation masks sampled by an RSS learner: from ground truth, human raters or an "
                    "external endpoint. Results go to a Redis stream per run.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    # A Redis outage (restart, failover) answers 503 + Retry-After, which clients retry, not a 500.
    for exc in (RedisConnectionError, RedisTimeoutError, ReadOnlyError):
        app.add_exception_handler(exc, redis_unavailable)
    # Refusals render as strict JSON whatever the request held (FastAPI's own handlers fail on NaN, surrogates).
    app.add_exception_handler(RequestValidationError, validation_failed)
    app.add_exception_handler(HTTPException, http_error)
    app.include_router(api_router)
    app.include_router(api_router_v2)
    app.mount("/metrics", make_asgi_app())
    ui_dir = settings.ui_dir or UI_DIR
    if ui_dir.is_dir():
        app.mount("/ui", StaticFiles(directory=ui_dir, html=True), name="ui")
    else:
        log.warning("annotator UI not served: %s is not a folder (RSS_UI_DIR)", ui_dir)
    app.add_middleware(LimitAndMeasure, max_body_bytes=settings.max_body_bytes)
    add_contract_schemas(app)
    return app

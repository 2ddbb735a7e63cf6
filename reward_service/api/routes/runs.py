"""Runs: a learner registers its scoring configuration before posting episodes."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response
from starlette.concurrency import run_in_threadpool

from reward_service.api.deps import AnyToken, Learner, ServicesDep, json_body, json_body_openapi
from reward_service.api.errors import AUTH, JSON_BODY, errors
from reward_service.scorers.http import endpoint_refusal
from reward_service.services import Services
from reward_service.store import DatabaseClaimed, RunConflict, claim_database
from rss_core import keys
from rss_core.schemas import RunCreate, RunList, RunPublic

router = APIRouter(prefix="/runs", tags=["runs"])


async def reclaim(services: Services) -> None:
    """Claim the database again (a Redis restarted without persistence forgot the claim): 503 when another
    deployment serving other data claimed it meanwhile."""
    try:
        await claim_database(services.store.r, services.settings)
    except DatabaseClaimed as exc:
        raise HTTPException(503, detail=f"{exc}.") from exc


@router.post("", response_model=RunPublic, status_code=201,
             responses={200: {"description": "Already registered with this configuration."},
                        **errors(*AUTH, *JSON_BODY, 409, 503)}, openapi_extra=json_body_openapi(RunCreate))
async def create_run(_: Learner, body: Annotated[RunCreate, Depends(json_body(RunCreate))], services: ServicesDep,
                     response: Response) -> RunPublic:
    """Register a run (idempotent for the same configuration) and create its results stream."""
    dataset = services.dataset
    if body.dataset != dataset.name:
        raise HTTPException(422, detail=f"Dataset {body.dataset!r} is not served here; this service serves "
                                        f"{dataset.name!r}.")
    await reclaim(services)
    if body.dataset_fingerprint is not None:
        ours = dataset.dataset.fingerprint()  # its label hash was computed at start-up (main.lifespan)
        if body.dataset_fingerprint != ours:
            described = dataset.dataset.describe()
            raise HTTPException(409, detail=f"The learner's data (fingerprint {body.dataset_fingerprint}) is not the "
                                            f"data this service scores against: {described}. Start both with the "
                                            "same dataset settings (dataset, split, seed, size, labels).")
    raters = len(services.settings.rater_tokens)
    if body.scorer == "human" and body.ratings_per_task > raters:
        # a rater rates a task once: with fewer raters than ratings per task, no task would ever complete
        raise HTTPException(422, detail=f"ratings_per_task {body.ratings_per_task} needs as many raters, and this "
                                        f"service has {raters} (RSS_RATER_TOKENS): ask for at most {raters}.")
    if body.scorer == "http":
        run_allow = await services.store.run_endpoint_allow(body.run_id)  # the operator's, for this run only
        refusal = await run_in_threadpool(endpoint_refusal, body.endpoint or "", services.settings,
                                          run_allow)  # resolves
        if refusal is not None:
            allow = [*services.settings.http_endpoint_allow, *run_allow]
            raise HTTPException(422, detail=f"Endpoint {body.endpoint[:200]!r} {refusal} ({', '.join(allow)}); "
                                            "ask the operator to list its scheme://host:port, or to start it with "
                                            f"`rss scorer up --run {body.run_id}`.")
    run = RunPublic(**body.model_dump(), num_classes=dataset.num_classes, class_names=dataset.class_names,
                    results_stream=keys.results(body.run_id), created_at=time.time())
    try:
        run, created = await services.store.create_run(run)
    except RunConflict as exc:
        raise HTTPException(409, detail=f"{exc}.") from exc
    response.status_code = 201 if created else 200
    return run


@router.get("", response_model=RunList, responses=errors(*AUTH))
async def read_runs(_: Learner, services: ServicesDep) -> RunList:
    """The registered runs, by id (the first 1000): what the operator page lists."""
    ids = (await services.store.run_ids())[:1000]
    return RunList(runs=[run for run in await services.store.get_runs(ids) if run is not None])


@router.get("/{run_id}", response_model=RunPublic, responses=errors(*AUTH, 404, 422))
async def read_run(run_id: str, services: ServicesDep, _: AnyToken) -> RunPublic:
    """A registered run's configuration."""
    run = await services.store.get_run(run_id)
    if run is None:
        raise HTTPException(404, detail=f"Run {run_id!r} is not registered.")
    return run

"""Operations: liveness, readiness (Redis and scorer), and queue statistics."""

from __future__ import annotations

import statistics
import time
from contextlib import suppress

from fastapi import APIRouter, Depends, Response
from redis.exceptions import RedisError

from reward_service.api.deps import Role, ServicesDep, limit_address
from reward_service.api.errors import AUTH, errors
from reward_service.services import Services
from reward_service.store import DatabaseClaimed, _s, claim_database
from rss_core import keys
from rss_core.schemas import Health, RaterStats, Ready, Stats, TaskKind

TASK_KINDS: tuple[str, ...] = TaskKind.__args__  # type: ignore[attr-defined]


async def median_seconds(r, scope: str) -> float | None:
    """The median of the latest `rater_seconds` kept for ``scope`` (`kind:<kind>`, `rater:<name>`)."""
    values = [float(v) for v in await r.lrange(keys.rater_seconds(scope), 0, -1)]
    return statistics.median(values) if values else None

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health)
async def read_health() -> Health:
    """The process is up."""
    return Health()


@router.get("/ready", response_model=Ready, responses={503: {"model": Ready}})
async def read_ready(services: ServicesDep, response: Response) -> Ready:
    """Redis answers and a scoring worker polled in the last seconds: send work here."""
    try:
        redis_ok = bool(await services.store.r.ping())
    except (RedisError, OSError):
        redis_ok = False
    claimed = None
    if redis_ok:
        try:
            await claim_database(services.store.r, services.settings)
        except DatabaseClaimed as exc:
            claimed = str(exc)
        except (RedisError, OSError):
            redis_ok = False
    stale = 3 * services.settings.worker_block_ms / 1000 + 10
    try:
        scorer_ok = bool(await services.store.r.zcount(keys.WORKERS, time.time() - stale, "+inf"))
    except (RedisError, OSError):
        scorer_ok = False
    detail = "; ".join(filter(None, [
        None if redis_ok else "redis is not reachable",
        None if scorer_ok else "no scoring worker has polled recently (is `rss worker` running?)",
        claimed,
    ])) or None
    ready = redis_ok and scorer_ok and claimed is None
    response.status_code = 200 if ready else 503
    counts: dict[str, int] = {}
    if redis_ok:
        with suppress(RedisError, OSError):
            for state in (await services.store.circuits(stale)).values():
                counts[state] = counts.get(state, 0) + 1
    return Ready(ready=ready, redis=redis_ok, scorer=scorer_ok, dataset=services.dataset.name,
                 dataset_fingerprint=services.dataset.dataset.fingerprint(), detail=detail, circuits=counts)


@router.get("/stats", response_model=Stats | RaterStats, responses=errors(*AUTH, 429),
            dependencies=[Depends(limit_address)])
async def read_stats(services: ServicesDep, role: Role) -> Stats | RaterStats:
    """Queue depths, pending leases, results per minute and each rater's throughput and honeypot agreement
    (a learner token); a rater token sees only that rater's own counters."""
    store = services.store
    kind, who = role
    if kind == "rater":
        counts = {_s(k): float(v) for k, v in (await store.r.hgetall(keys.rater_stats(who))).items()}
        per_minute = await store.minute_counts(f"ratings:{who}", 6)
        return RaterStats(rater=who, rated=counts.get("rated", 0.0), skipped=counts.get("skipped", 0.0),
                          per_minute_5m=sum(per_minute[1:]) / 5)
    return await service_stats(services)


async def service_stats(services: Services) -> Stats:
    """What GET /v1/stats shows a learner token (and the operator page beside a run's own figures)."""
    store = services.store
    jobs_waiting, jobs_pending = await store.group_depth(keys.JOBS, keys.JOBS_GROUP)
    tasks_waiting, leases = await store.group_depth(keys.TASKS, keys.TASKS_GROUP)
    results = await store.minute_counts("results", 6)
    raters = {}
    for name in services.settings.rater_tokens:
        counts = {_s(k): float(v) for k, v in (await store.r.hgetall(keys.rater_stats(name))).items()}
        per_minute = await store.minute_counts(f"ratings:{name}", 6)
        honeypots, agreed = counts.get("honeypots", 0.0), counts.get("honeypots_agreed", 0.0)
        raters[name] = {"rated": counts.get("rated", 0.0), "skipped": counts.get("skipped", 0.0),
                        "per_minute_5m": sum(per_minute[1:]) / 5, "honeypots": honeypots,
                        "honeypots_agreed": agreed, "agreement": agreed / honeypots if honeypots else None,
                        "median_rater_seconds": await median_seconds(store.r, f"rater:{name}")}
    return Stats(
        jobs_waiting=jobs_waiting, jobs_pending=jobs_pending, tasks_waiting=tasks_waiting, leases_pending=leases,
        dead_letters=int(await store.r.xlen(keys.DEAD_LETTER)), results_last_minute=results[0],
        results_per_minute_5m=sum(results[1:]) / 5, raters=raters,
        median_rater_seconds={kind: await median_seconds(store.r, f"kind:{kind}") for kind in TASK_KINDS},
        circuits=await store.circuits(3 * services.settings.worker_block_ms / 1000 + 10),
    )

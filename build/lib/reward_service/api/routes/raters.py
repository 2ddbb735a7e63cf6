"""The signed-in rater: who the token belongs to (the annotator UI shows the name)."""

from __future__ import annotations

from fastapi import APIRouter

from reward_service.api.deps import Rater, ServicesDep
from reward_service.api.errors import AUTH, errors
from reward_service.store import _s
from rss_core import keys
from rss_core.schemas import RaterPublic

router = APIRouter(tags=["raters"])


@router.get("/me", response_model=RaterPublic, responses=errors(*AUTH))
async def read_me(services: ServicesDep, rater: Rater) -> RaterPublic:
    """The rater this token belongs to, with their lifetime counters."""
    counts = {_s(k): int(v) for k, v in (await services.store.r.hgetall(keys.rater_stats(rater))).items()}
    return RaterPublic(name=rater, rated=counts.get("rated", 0), skipped=counts.get("skipped", 0))

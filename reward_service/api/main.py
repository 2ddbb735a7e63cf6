"""All routes of the API, under /v1 and /v2 (the binary episode batch); every one but health and readiness is
limited per client address."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from reward_service.api.deps import limit_address
from reward_service.api.routes import curves, episodes, images, ops, raters, runs, tasks

api_router = APIRouter(prefix="/v1")
api_router.include_router(ops.router)  # /stats spends from the address bucket itself
for module in (runs, curves, episodes, tasks, images, raters):
    api_router.include_router(module.router, dependencies=[Depends(limit_address)])

# v2: what changed in the wire contract (a binary episode batch); everything else stays under /v1.
api_router_v2 = APIRouter(prefix="/v2")
api_router_v2.include_router(episodes.v2_router, dependencies=[Depends(limit_address)])

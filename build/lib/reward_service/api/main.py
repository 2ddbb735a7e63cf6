"""All routes of the API, under /v1."""

from __future__ import annotations

from fastapi import APIRouter

from reward_service.api.routes import episodes, images, ops, raters, runs, tasks

api_router = APIRouter(prefix="/v1")
for module in (ops, runs, episodes, tasks, images, raters):
    api_router.include_router(module.router)

"""The objects a running service shares between its routes and its worker (built in the lifespan)."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from reward_service.core.config import Settings
from reward_service.datasets import ServedDataset
from reward_service.scorers.http import HttpScorer
from reward_service.scorers.human import HumanTasks
from reward_service.store import Store
from reward_service.worker import Worker


@dataclass
class Services:
    settings: Settings
    store: Store
    blocking: aioredis.Redis
    dataset: ServedDataset
    http: HttpScorer
    human: HumanTasks
    worker: Worker | None

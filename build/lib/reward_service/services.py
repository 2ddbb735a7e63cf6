"""The objects a running service's routes share (built in the lifespan)."""

from __future__ import annotations

from dataclasses import dataclass

from reward_service.core.config import Settings
from reward_service.datasets import ServedDataset
from reward_service.ratelimit import RateLimiter
from reward_service.scorers.human import HumanTasks
from reward_service.store import Store


@dataclass
class Services:
    settings: Settings
    store: Store
    dataset: ServedDataset
    human: HumanTasks
    limits: RateLimiter

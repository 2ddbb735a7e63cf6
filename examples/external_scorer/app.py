"""An external scorer for the reward service's `http` scorer: ground-truth rewards on the built-in `shapes` data.

Copy it and put your own scoring in `score_request` (or your own labels in `load_label`). Run it
from the repository root with ``uvicorn examples.external_scorer.app:app --port 9000`` and register
runs with ``"scorer": "http", "endpoint": "http://127.0.0.1:9000/score"``. The service must serve
the same data: EXAMPLE_SCORER_SHAPES_SIZE and EXAMPLE_SCORER_SEED here equal RSS_SHAPES_SIZE and
RSS_SEED there, else the labels differ and so do the rewards.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from fastapi import FastAPI, HTTPException

from rss_core import scoring
from rss_core.codec import MaskError, decode_mask, encode_array
from rss_core.data import DatasetError, SegDataset, build_dataset
from rss_core.grid import as_action_grid
from rss_core.keys import SCHEMA_VERSION
from rss_core.labels import label_at_grid, learner_label
from rss_core.schemas import ExternalScoreRequest, ExternalScoreResponse, Health


class RequestError(ValueError):
    """A request this scorer cannot answer; it becomes a 422 with the message."""


# Which scorer answered (a model's name and version, a prompt's hash...): the service carries it into each
# result entry, so a run's rewards say what produced them. EXAMPLE_SCORER_VERSION overrides it (the
# Dockerfile sets it from its SCORER_VERSION build argument).
SCORER_VERSION = "example-gt-1"


@dataclass(frozen=True)
class ExampleSettings:
    shapes_size: int = 64
    shapes_length: int | None = None
    seed: int = 0
    version: str = SCORER_VERSION


@lru_cache
def get_settings() -> ExampleSettings:
    """EXAMPLE_SCORER_SHAPES_SIZE (64), EXAMPLE_SCORER_SEED (0), EXAMPLE_SCORER_SHAPES_LENGTH (the split's default),
    EXAMPLE_SCORER_VERSION (SCORER_VERSION)."""
    length = os.environ.get("EXAMPLE_SCORER_SHAPES_LENGTH")
    return ExampleSettings(
        shapes_size=int(os.environ.get("EXAMPLE_SCORER_SHAPES_SIZE", "64")),
        shapes_length=int(length) if length else None,
        seed=int(os.environ.get("EXAMPLE_SCORER_SEED", "0")),
        version=os.environ.get("EXAMPLE_SCORER_VERSION") or SCORER_VERSION,
    )


@lru_cache
def get_dataset(split: str) -> SegDataset:
    """One split of `shapes`, built on first use (an unknown split raises and is not cached)."""
    s = get_settings()
    return build_dataset("shapes", split, shapes_size=s.shapes_size, shapes_length=s.shapes_length, seed=s.seed)


def load_label(request: ExternalScoreRequest) -> tuple[torch.Tensor, int]:
    """The (H, W) int64 label of the request's image at its ``image_size``, and the class count."""
    if request.dataset != "shapes":
        raise RequestError(f"this scorer serves dataset 'shapes', not {request.dataset!r}")
    dataset = get_dataset(request.image_id.partition("/")[0])  # ids are "{split}/{index:06d}"
    return learner_label(dataset, request.image_id, request.image_size), dataset.num_classes


def score_labels(request: ExternalScoreRequest, label: torch.Tensor, num_classes: int) -> ExternalScoreResponse:
    """Score the request's samples against ``label`` (H, W), 255 = ignore, on the request's action grid."""
    if request.metric not in scoring.METRICS:
        raise RequestError(f"unknown metric {request.metric!r} (choose from {', '.join(scoring.METRICS)})")
    grid = as_action_grid(request.grid)
    pooled = grid.mode == "pool" and grid.scale > 0
    if request.level == "pixel" and pooled:
        raise RequestError("pixel level needs grid mode or scale 0: a pooled cell has no per-pixel reward")
    target = label_at_grid(label, grid)  # grid mode: the label at the lattice; else the full label
    shape = (grid.scale, grid.scale) if pooled else tuple(target.shape)
    actions = torch.stack([
        torch.from_numpy(decode_mask(mask, shape, f"sample {i}").astype(np.int64))
        for i, mask in enumerate(request.samples)
    ])
    if int(actions.max()) >= num_classes:
        raise RequestError(f"sample values must be class indices in [0, {num_classes})")
    rewards, _ = scoring.score_masks(actions, target, grid, request.level, num_classes, request.metric)
    version = get_settings().version
    if request.level == "image":
        return ExternalScoreResponse(rewards=rewards.tolist(), scorer_version=version)
    return ExternalScoreResponse(reward_maps=[encode_array(m.numpy().astype(np.float32)) for m in rewards],
                                 scorer_version=version)


def score_request(request: ExternalScoreRequest) -> ExternalScoreResponse:
    """The whole contract: one reward (image level) or one map (pixel level) per sample, in sample order."""
    if request.schema_version != SCHEMA_VERSION:
        raise RequestError(f"schema_version {request.schema_version} is not supported (this scorer speaks "
                           f"{SCHEMA_VERSION})")
    label, num_classes = load_label(request)
    return score_labels(request, label, num_classes)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    # Build the split the service scores (train) before answering: built on the first request, it
    # made that request slower than a service's endpoint timeout on a loaded machine.
    get_dataset("train")
    yield


app = FastAPI(title="RSS example external scorer", version="1", lifespan=lifespan)


@app.get("/health")
def read_health() -> Health:
    """Liveness: the process answers."""
    return Health()


@app.post("/score")
def score_episode(request: ExternalScoreRequest) -> ExternalScoreResponse:
    """Score one episode's sampled masks against the shapes ground truth."""
    try:
        return score_request(request)
    except (RequestError, MaskError, DatasetError) as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None

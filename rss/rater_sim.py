"""`rss rater-sim`: a simulated rater that answers human-rating tasks from ground truth.

It signs in with a rater token and goes through the same HTTP endpoints as the annotator UI
(`GET /v1/tasks/next`, `POST /v1/tasks/{id}/rating`), so tests and benchmarks can run the
human path end to end with no person. Its answers come from the ground truth of the same
dataset the service serves (built here with the same settings), with configurable noise: a
wrong preference with probability `--flip`, Gaussian jitter on scores, and a delay per answer.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import httpx
import numpy as np
import torch
import tyro

from rss import raters
from rss_core import codec, scoring
from rss_core.data import IGNORE_INDEX, build_dataset
from rss_core.grid import ActionGrid, as_action_grid, masks_for_scoring
from rss_core.labels import label_at_grid, learner_label
from rss_core.schemas import MAX_RATER_SECONDS, RunPublic, TaskPublic

log = logging.getLogger(__name__)
TOKEN_ENV = "RSS_RATER_TOKEN"


@dataclass
class RaterSimArgs:
    """A simulated rater that answers human-rating tasks from ground truth (its token in $RSS_RATER_TOKEN)."""

    service_url: str = "http://127.0.0.1:8000"
    """the reward service's base URL"""
    split: str = "train"
    """the split the service serves (RSS_SPLIT)"""
    data_root: str | None = None
    """the dataset's folder (RSS_DATA_ROOT), not for shapes or scenes"""
    shapes_size: int = 64
    """shapes: RSS_SHAPES_SIZE of the service"""
    scenes_size: int = 128
    """scenes: RSS_SCENES_SIZE of the service"""
    seed: int = 0
    """the dataset seed (RSS_SEED), also this rater's noise seed"""
    flip: float = 0.0
    """probability of a wrong preference"""
    jitter: float = 0.0
    """std of Gaussian noise on scores"""
    brush_width: int = 1
    """pixel tasks: brush strokes this wide (odd): thinner wrong regions are missed (1: every wrong pixel)"""
    brush_spill: int = 0
    """pixel tasks: strokes spill this many pixels past a wrong region's edge"""
    point_error: float = 0.0
    """point tasks: probability that a yes/no answer is wrong"""
    latency_s: float = 0.0
    """seconds 'thinking' before each answer (sent as its rater_seconds)"""
    max_tasks: int = 1_000_000
    """stop after this many answers"""
    idle_s: float = 30.0
    """stop after this long without a task"""

    def validate(self) -> None:
        """Reject impossible values up front, naming the flag."""
        if self.latency_s < 0:
            raise ValueError("--latency-s must be >= 0")
        self.imperfection()  # checks --flip, --jitter, --brush-width, --brush-spill

    def imperfection(self) -> raters.Imperfection:
        return raters.Imperfection(self.flip, self.jitter, self.brush_width, self.brush_spill, self.point_error)


class RaterSim:
    def __init__(self, args: RaterSimArgs, token: str) -> None:
        self.args = args
        self.rng = np.random.default_rng(args.seed)
        self.http = httpx.Client(base_url=args.service_url.rstrip("/"), timeout=30.0,
                                 headers={"Authorization": f"Bearer {token}"})
        self.datasets: dict[str, object] = {}
        self.runs: dict[str, RunPublic] = {}
        self.answered = 0

    def run_config(self, run_id: str) -> RunPublic:
        if run_id not in self.runs:
            response = self.http.get(f"/v1/runs/{run_id}")
            response.raise_for_status()
            self.runs[run_id] = RunPublic.model_validate_json(response.content)
        return self.runs[run_id]

    def target(self, task: TaskPublic, run: RunPublic) -> tuple[np.ndarray, ActionGrid]:
        """The label the task's masks are judged against, exactly as the `gt` scorer reads it."""
        split = self.args.split
        if split not in self.datasets:
            self.datasets[split] = build_dataset(
                run.dataset, split, root=self.args.data_root, shapes_size=self.args.shapes_size,
                scenes_size=self.args.scenes_size, seed=self.args.seed)
        grid = as_action_grid(task.grid)
        return label_at_grid(learner_label(self.datasets[split], task.image_id, run.image_size), grid).numpy(), grid

    def answer(self, task: TaskPublic) -> dict:
        run = self.run_config(task.run_id)
        target, grid = self.target(task, run)
        shape = (task.grid.scale,) * 2 if task.grid.scale and task.grid.mode == "pool" else target.shape
        masks = np.stack([codec.decode_mask(s.mask, shape) for s in task.samples])
        noise = self.args.imperfection()  # the answer code `rss bench feedback` uses too (rss.raters)
        if task.kind == "point":  # the points are cells of the mask, which lies on the label's grid
            assert task.points is not None
            asked = [(p.y, p.x) for p in task.points]
            right = torch.tensor([int(masks[0][y, x]) == int(target[y, x]) for y, x in asked])
            yes = raters.verify(right, noise, torch.Generator().manual_seed(int(self.rng.integers(2**31))))
            return {"verdicts": ["unsure" if target[y, x] == IGNORE_INDEX else ("yes" if v else "no")
                                 for (y, x), v in zip(asked, yes.tolist(), strict=True)]}
        if task.kind == "pixel":
            full = masks_for_scoring(torch.from_numpy(masks).long(), grid, target.shape)[0]
            label = torch.from_numpy(target.astype(np.int64))
            pixels = raters.brush(full == label, label != IGNORE_INDEX, noise).numpy()
            return {"pixels": codec.png_mask(pixels).model_dump()}
        rewards = scoring.score_masks(masks, target, grid, "image", run.num_classes, run.metric)[0].tolist()
        if task.kind == "score":
            return {"score": raters.score(rewards[0], noise, self.rng)}
        if task.kind == "best":
            return {"best": raters.choose_best(rewards, noise, self.rng)}
        return {"preference": raters.prefer(rewards[0], rewards[1], noise, self.rng)}

    def post_rating(self, task_id: str, body: dict) -> httpx.Response:
        """POST an answer, waiting out the service's per-rater rate limit (429, Retry-After) as a person would."""
        while True:
            response = self.http.post(f"/v1/tasks/{task_id}/rating", json=body)
            if response.status_code != 429:
                return response
            wait = float(response.headers.get("retry-after", "1"))
            log.info("rate limited by the service: waiting %g s", wait)
            time.sleep(wait)

    def loop(self) -> int:
        """Answer tasks until --max-tasks, or --idle-s without one; returns the number answered."""
        idle_since = time.monotonic()
        while self.answered < self.args.max_tasks and time.monotonic() - idle_since < self.args.idle_s:
            response = self.http.get("/v1/tasks/next", params={"wait_s": min(5.0, self.args.idle_s)})
            if response.status_code == 204:
                continue
            response.raise_for_status()
            task = TaskPublic.model_validate_json(response.content)
            if self.args.latency_s:
                time.sleep(self.args.latency_s)
            body = {"lease_id": task.lease_id, **self.answer(task)}
            if self.args.latency_s:  # the simulated person's time on the task, as the UI measures a real one's
                body["rater_seconds"] = min(self.args.latency_s, MAX_RATER_SECONDS)
            rated = self.post_rating(task.task_id, body)
            if rated.status_code == 410:  # our lease ran out while "thinking": the task went to someone else
                log.warning("lease on %s expired before the answer", task.task_id)
                continue
            rated.raise_for_status()
            self.answered += 1
            idle_since = time.monotonic()
        return self.answered


def main(argv: list[str]) -> int:
    args = tyro.cli(RaterSimArgs, args=argv, prog="rss rater-sim", description=__doc__.split("\n\n")[0])
    args.validate()
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise ValueError(f"rss rater-sim needs a rater token in ${TOKEN_ENV}")
    answered = RaterSim(args, token).loop()
    print(f"answered {answered} tasks")  # noqa: T201
    return 0

"""The annotator UI tests' service (its own Redis database) and the steps a rater takes in the page."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rss.procs import RedisProcess, ServiceProcess
from tests.helpers.service import DATABASES, RATERS, service_env, start_service

UI_DB = DATABASES["ui"]  # the UI tests' service claims its own database
SHOTS = os.environ.get("RSS_UI_SCREENSHOTS")  # a folder: the tests save the docs' screenshots there


def shoot(page, name: str) -> None:
    """With RSS_UI_SCREENSHOTS set, the page as shown now in ``<folder>/<name>.png`` (docs/ui/ holds the docs')."""
    if SHOTS:
        from PIL import Image

        path = Path(SHOTS) / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path))
        # small enough to commit; an octree palette keeps rare colours (the legend's swatches, the point
        # ring) exact, where median cut (PIL's default) folded them into their neighbours
        Image.open(path).convert("RGB").quantize(128, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)


def ui_service(redis_server: RedisProcess, **settings: object) -> ServiceProcess:
    env = service_env(redis_server, redis_url=redis_server.db_url(UI_DB), worker_block_ms=100, **settings)
    return start_service(env)


def sign_in(page, url: str, name: str = "alice") -> None:
    page.goto(f"{url}/ui/")
    page.fill("#token", RATERS[name])
    page.press("#token", "Enter")
    page.wait_for_function(f"document.querySelector('#rater-name').textContent === {name!r}")


def wait_task(page, kind: str | None = None, other_than: str | None = None, timeout: float = 30_000) -> str:
    """Wait until a task (of ``kind``; not ``other_than``) is drawn and takes answers (the UI ignores answers in
    a task's first ANSWER_GUARD_MS on screen); returns its task id."""
    condition = ("document.body.dataset.state === 'task' && "
                 "document.body.dataset.accepting === document.body.dataset.taskId")
    if kind:
        condition += f" && document.body.dataset.kind === {kind!r}"
    if other_than:
        condition += f" && document.body.dataset.taskId !== {other_than!r}"
    page.wait_for_function(condition, timeout=timeout)
    return page.evaluate("document.body.dataset.taskId")


# In the page, once the next two frames are drawn: the canvas's RGBA at each point (client css px).
CANVAS_AT_JS = """
async (points) => {
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  const canvas = document.querySelector('#canvas');
  const box = canvas.getBoundingClientRect();
  const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  const sx = canvas.width / box.width, sy = canvas.height / box.height;
  return points.map(([x, y]) => {
    const i = 4 * (Math.floor((y - box.top) * sy) * canvas.width + Math.floor((x - box.left) * sx));
    return Array.from(data.subarray(i, i + 4));
  });
}
"""


def canvas_at(page, points: list[tuple[float, float]]) -> np.ndarray:
    """The canvas's RGBA (n, 4) at ``points`` (client css px) as drawn now, the pointer off the canvas
    (no brush outline)."""
    page.mouse.move(1, 1)
    return np.array(page.evaluate(CANVAS_AT_JS, [list(p) for p in points]), np.float64).reshape(-1, 4)

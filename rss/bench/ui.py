"""`rss bench ui`: the annotator UI in headless Chromium against its own `rss serve` and Redis.

Two numbers, against the UI issue's targets:

1. **submit -> next task drawn** (p95 under 100 ms): a rater answers ``--tasks`` image-level
   tasks (masks of ``--size`` x ``--size``) by keyboard, waiting ``--think-s`` on each as a
   person would (the UI prefetches the next task meanwhile). The UI times each answer itself,
   from the Enter key's handler to the first animation frame after the next task is drawn
   (the POST of the answer included): its `rss:submit-to-next` performance measures, read here
   with the `rss:lease` and `rss:prepare` measures of each prefetch.
2. **one overlay redraw at 1024 x 1024** (under 16 ms, one frame): a 1024 x 1024 noisy mask
   goes through the UI's own decode path once (PNG -> class indices -> palette ImageBitmap, in
   the task's palette as its legend shows it), then the scene (1024 x 1024 image + overlay) is
   redrawn ``--frames`` times by the UI's own `Viewer`, on a canvas the size of the task's, with
   a new pan and opacity each time; each redraw is timed up to a 1-pixel read-back, which forces
   the canvas to finish rasterising. The median is reported; the one-time decode separately.

The page has no global app object: the bench reads performance entries and the DOM, and imports
the UI's modules, as any script on the page could.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rss.bench.args import ServedBenchArgs, parse
from rss.bench.service import BenchError, launched, out
from rss.procs import exit_on_sigterm, start_redis, start_service

log = logging.getLogger(__name__)

SUBMIT_TARGET_MS = 100.0
OVERLAY_TARGET_MS = 16.0
OVERLAY_SIZE = 1024
CHROMIUM = "/usr/bin/chromium"
# Debian's chromium in a container: no sandbox, no GPU, nothing phoning home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@dataclass
class UiBenchArgs(ServedBenchArgs):
    """The annotator UI in headless Chromium against its own `rss serve` and Redis."""

    size: int = 1024
    """mask and image side of the tasks"""
    tasks: int = 40
    """image-level tasks answered"""
    think_s: float = 2.0
    """seconds the rater looks at each task"""
    frames: int = 60
    """timed redraws of the 1024 overlay"""
    chromium: str = CHROMIUM
    """the browser binary"""

    def validate(self) -> None:
        if self.tasks < 2 or self.frames < 1:
            raise ValueError("--tasks must be at least 2 and --frames at least 1")
        super().validate()
        if self.think_s < 0:
            raise ValueError("--think-s must be non-negative")


# In the page: decode a noisy 1024 x 1024 mask the way a task's masks are decoded, then time redraws.
_OVERLAY_JS = """
async ({ size, frames }) => {
  const { decodeIndexPng, encodeGrayPng } = await import('/ui/src/png.js');
  const { maskBitmap, Viewer } = await import('/ui/src/canvas.js');
  const palette = [...document.querySelectorAll('#legend .swatch')].map(
    (s) => getComputedStyle(s).backgroundColor.match(/[0-9]+/g).slice(0, 3).map(Number));
  // a Viewer of the bench's own on a canvas over the task's, of its size
  const box = document.querySelector('#canvas').getBoundingClientRect();
  const canvas = document.createElement('canvas');
  Object.assign(canvas.style, { position: 'fixed', left: `${box.left}px`, top: `${box.top}px`,
    width: `${box.width}px`, height: `${box.height}px` });
  document.body.append(canvas);
  const viewer = new Viewer(canvas);
  let seed = 1;
  const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296;
  const classes = new Uint8Array(size * size).map(() => Math.floor(rand() * palette.length));
  const rgba = new ImageData(size, size);
  rgba.data.forEach((_, i) => { rgba.data[i] = i % 4 === 3 ? 255 : Math.floor(rand() * 256); });
  const png = await encodeGrayPng(size, size, classes);
  const started = performance.now();
  const mask = await decodeIndexPng(png);
  const overlay = await maskBitmap(mask, palette);
  const decodeMs = performance.now() - started;
  const image = await createImageBitmap(rgba);
  viewer.setScene({ image, overlays: [overlay], rect: { x: 0, y: 0, w: size, h: size }, paint: null, labels: null });
  const times = [];
  for (let i = 0; i < frames; i++) {
    viewer.view.x += 3;
    viewer.opacity = 0.3 + (i % 5) * 0.1;
    const t = performance.now();
    viewer.draw();
    viewer.ctx.getImageData(0, 0, 1, 1);  // wait for the raster, not just the recorded commands
    times.push(performance.now() - t);
  }
  canvas.remove();
  return { decodeMs, times, classes: palette.length, same: mask.data.every((v, i) => v === classes[i]) };
}
"""


# The UI's own timings (annotator_ui/src/main.js): performance measures, each {duration, detail}.
MEASURES_JS = """
() => Object.fromEntries(['rss:submit-to-next', 'rss:lease', 'rss:prepare', 'rss:answer-to-frame'].map((name) => [name,
  performance.getEntriesByName(name, 'measure').map((m) => ({ duration: m.duration, detail: m.detail }))]))
"""


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q))


def post_episodes(url: str, token: str, run_id: str, count: int, size: int, seed: int) -> None:
    """``count`` image-level episodes of one noisy mask each (what an untrained policy samples)."""
    import httpx

    rng = np.random.default_rng(seed)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        response = http.post("/v1/runs", json={"run_id": run_id, "dataset": "shapes", "level": "image",
                                               "scorer": "human"})
        if response.status_code != 201:
            raise BenchError(f"POST /v1/runs answered {response.status_code}: {response.text[:300]}")
        for n in range(count):
            mask = rng.integers(0, 4, (size, size), dtype=np.uint8)
            body = {"run_id": run_id, "image_id": f"train/{n % 16:06d}", "level": "image", "policy_version": 0,
                    "samples": [{"format": "raw", "shape": [size, size],
                                 "data": base64.b64encode(mask.tobytes()).decode()}]}
            response = http.post("/v1/episodes", json=body)
            if response.status_code != 202:
                raise BenchError(f"POST /v1/episodes answered {response.status_code}: {response.text[:300]}")


def drive(url: str, rater_token: str, args: UiBenchArgs) -> dict:
    """Sign in, answer ``args.tasks`` tasks by keyboard, then time the 1024 overlay; the page's numbers."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BenchError("playwright is not installed (pip install '.[dev]'; never `playwright install`: "
                         "the bench uses Debian's chromium)") from exc
    if not Path(args.chromium).exists():
        raise BenchError(f"{args.chromium} not found (apt-get install chromium, or --chromium PATH)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/ui/")
            page.fill("#token", rater_token)
            page.press("#token", "Enter")
            previous = None
            for n in range(args.tasks):
                # a task takes answers once it has been on screen ANSWER_GUARD_MS (annotator_ui/src/main.js)
                condition = ("document.body.dataset.state === 'task' && "
                             "document.body.dataset.accepting === document.body.dataset.taskId")
                if previous:
                    condition += f" && document.body.dataset.taskId !== {previous!r}"
                page.wait_for_function(condition, timeout=60_000)
                previous = page.evaluate("document.body.dataset.taskId")
                time.sleep(args.think_s)  # the rater looks at the mask; the UI prefetches meanwhile
                page.keyboard.press(str(n % 10))
                page.keyboard.press("Enter")
            page.wait_for_function(f"performance.getEntriesByName('rss:answer-to-frame').length >= {args.tasks - 1}",
                                   timeout=60_000)
            measures = page.evaluate(MEASURES_JS)
            page.wait_for_function("document.body.dataset.state === 'task'", timeout=60_000)
            overlay = page.evaluate(_OVERLAY_JS, {"size": OVERLAY_SIZE, "frames": args.frames})
            messages = page.locator(".message.error").all_inner_texts()
        except PlaywrightError as exc:
            raise BenchError(f"the browser run failed: {exc}") from exc
        finally:
            browser.close()
    if errors or messages:
        raise BenchError(f"the UI reported errors: {errors + messages}")
    if not overlay["same"]:
        raise BenchError("the 1024 x 1024 mask did not decode to the classes it was encoded from")
    if overlay["classes"] < 2:
        raise BenchError(f"the task's legend showed {overlay['classes']} classes (the overlay needs a palette)")
    submits = measures["rss:submit-to-next"]
    frames: dict[str, list[float]] = {}
    for m in measures["rss:answer-to-frame"]:
        frames.setdefault(m["detail"]["kind"], []).append(m["duration"])
    return {"timings": [m["duration"] for m in submits], "prefetched": [m["detail"]["prefetched"] for m in submits],
            "frames": frames,
            "fetches": [{"leaseMs": lease["duration"], "prepareMs": prepare["duration"]}
                        for lease, prepare in zip(measures["rss:lease"], measures["rss:prepare"], strict=True)],
            **overlay}


def run(args: UiBenchArgs) -> dict:
    learner_token, rater_token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="rss-bench-ui-") as folder:
        redis_proc = launched(start_redis, Path(folder), log=Path(folder) / "redis-server.log")
        try:
            env = {"RSS_REDIS_URL": f"redis://127.0.0.1:{redis_proc.port}/0", "RSS_LEARNER_TOKENS": json.dumps(
                [learner_token]), "RSS_RATER_TOKENS": json.dumps({"bench": rater_token}),
                "RSS_SHAPES_SIZE": str(args.size), "RSS_LEASE_S": "600", "RSS_LOG_LEVEL": "warning",
                "RSS_WORKER_BLOCK_MS": "100", "OMP_NUM_THREADS": "1"}
            service = launched(start_service, env, log=Path(folder) / "rss-serve.log")
            try:
                url = f"http://127.0.0.1:{service.port}"
                post_episodes(url, learner_token, f"bench-ui-{secrets.token_hex(3)}", args.tasks + 1, args.size,
                              args.seed)
                page = drive(url, rater_token, args)
            finally:
                service.stop()
        finally:
            redis_proc.stop()
    timings = page["timings"]
    ready = [t for t, was_ready in zip(timings, page["prefetched"], strict=True) if was_ready]
    return {
        "prefetched_share": len(ready) / len(timings),
        "submit_to_next_prefetched_p95_ms": percentile(ready, 95) if ready else None,
        "submit_to_next_p95_ms": percentile(timings, 95), "submit_to_next_p50_ms": percentile(timings, 50),
        "overlay_1024_ms": percentile(page["times"], 50), "overlay_1024_max_ms": max(page["times"]),
        "overlay_1024_decode_ms": float(page["decodeMs"]), "tasks": args.tasks, "size": args.size,
        "think_s": args.think_s, "frames": args.frames,
        "lease_p50_ms": percentile([f["leaseMs"] for f in page["fetches"]], 50),
        "lease_p95_ms": percentile([f["leaseMs"] for f in page["fetches"]], 95),
        "prepare_p50_ms": percentile([f["prepareMs"] for f in page["fetches"]], 50),
        "prepare_p95_ms": percentile([f["prepareMs"] for f in page["fetches"]], 95),
        "submit_to_next_ms": [round(t, 1) for t in timings],
        # the answer's key press to the second frame after the next task is drawn, per task kind (this bench
        # answers score tasks only)
        "answer_to_frame_p95_ms": {kind: percentile(v, 95) for kind, v in page["frames"].items()},
        "answer_to_frame_p50_ms": {kind: percentile(v, 50) for kind, v in page["frames"].items()},
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def format_report(r: dict) -> str:
    def verdict(value: float, target: float) -> str:
        return "met" if value < target else "MISSED"

    return "\n".join([
        "| measure | value | target | |",
        "| --- | --- | --- | --- |",
        f"| submit -> next task drawn, p95 ({r['tasks']} tasks of {r['size']}x{r['size']}, think {r['think_s']:g} s) "
        f"| {r['submit_to_next_p95_ms']:.1f} ms (p50 {r['submit_to_next_p50_ms']:.1f}) | < {SUBMIT_TARGET_MS:g} ms "
        f"| {verdict(r['submit_to_next_p95_ms'], SUBMIT_TARGET_MS)} |",
        f"| ... answers whose next task was prefetched in time ({100 * r['prefetched_share']:.0f}%), p95 "
        f"| {_ms(r['submit_to_next_prefetched_p95_ms'])} | - | |",
        *(f"| answer key -> second frame after the next {kind} task is drawn, p95 | {p95:.1f} ms (p50 "
          f"{r['answer_to_frame_p50_ms'][kind]:.1f}) | < {SUBMIT_TARGET_MS:g} ms | {verdict(p95, SUBMIT_TARGET_MS)} |"
          for kind, p95 in r["answer_to_frame_p95_ms"].items()),
        f"| redraw of a 1024x1024 image + overlay, median of {r['frames']} | {r['overlay_1024_ms']:.2f} ms "
        f"(max {r['overlay_1024_max_ms']:.2f}) | < {OVERLAY_TARGET_MS:g} ms "
        f"| {verdict(r['overlay_1024_ms'], OVERLAY_TARGET_MS)} |",
        f"| decoding the 1024x1024 mask once (PNG -> palette bitmap, during prefetch) "
        f"| {r['overlay_1024_decode_ms']:.1f} ms | - | |",
        f"| prefetch: lease request p50 / p95 | {r['lease_p50_ms']:.0f} / {r['lease_p95_ms']:.0f} ms | - | |",
        f"| prefetch: image + masks decoded p50 / p95 | {r['prepare_p50_ms']:.0f} / {r['prepare_p95_ms']:.0f} ms "
        "| - | |",
    ])


def main(argv: list[str]) -> int:
    args = parse(UiBenchArgs, argv, "rss bench ui", __doc__.split("\n\n")[0])
    previous = exit_on_sigterm()  # SIGTERM unwinds, so redis-server and rss serve are stopped
    try:
        report = run(args)
    except BenchError as exc:
        print(f"rss bench ui: FAILED: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    out(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        out(f"json: {args.json}")
    return 0

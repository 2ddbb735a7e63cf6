"""The annotator UI in a real browser against a real `rss serve` and Redis: every task kind is
answered the way a rater would, and each answer is checked where the learner reads it.

The page has no global app object: the tests see what a rater or `rss bench ui` sees (the DOM,
the canvas's pixels, performance entries, the answers where the learner reads them)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from rss.bench.ui import MEASURES_JS
from rss_core import codec
from tests.helpers import REPO
from tests.helpers.client import client, read_results, register, wait_status
from tests.helpers.factories import episode, label_of, noisy
from tests.helpers.ui import sign_in, ui_service, wait_task

SHOTS = os.environ.get("RSS_UI_SCREENSHOTS")  # a folder: save a screenshot of each task kind there
PAINT = ((40, 220, 90), (255, 40, 40))  # annotator_ui/src/tasks/pixel.js: correct (1), wrong (2)
PAINT_ALPHA = 0.75  # the paint layer's opacity over the image and mask (annotator_ui/src/canvas.js)

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


@pytest.fixture
def learner(service_url: str, db) -> Iterator[httpx.Client]:
    with client(service_url) as c:
        yield c


def post(learner: httpx.Client, run_id: str, masks: list[np.ndarray], level: str = "image", **extra) -> str:
    """Post one episode and wait until its tasks are queued (so tasks queue in posting order)."""
    response = learner.post("/v1/episodes", json=episode(run_id, [codec.raw_mask(m) for m in masks], level=level,
                                                         **extra))
    assert response.status_code == 202, response.text
    episode_id = response.json()["episode_id"]
    wait_status(learner, episode_id, ("waiting_for_rater",))
    return episode_id


def shoot(page, name: str) -> None:
    if SHOTS:
        from PIL import Image

        path = Path(SHOTS) / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path))
        Image.open(path).convert("RGB").quantize(64).save(path, optimize=True)  # small enough to commit


def mask_to_client(page, mx: float, my: float, size: int = 64, box: dict | None = None) -> tuple[float, float]:
    """Where mask pixel coordinate (mx, my) is on screen: the view starts fitted and centred, and the
    mask covers the (size x size) image. Computed from the canvas box, not from the UI's own code."""
    box = box or page.locator("#canvas").bounding_box()
    scale = min(box["width"], box["height"]) / size
    left = box["x"] + (box["width"] - size * scale) / 2
    top = box["y"] + (box["height"] - size * scale) / 2
    return left + mx * scale, top + my * scale


def stroke(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*mask_to_client(page, *start))
    page.mouse.down()
    page.mouse.move(*mask_to_client(page, *end), steps=12)
    page.mouse.up()


def canvas_at(page, points: list[tuple[float, float]]) -> np.ndarray:
    """The canvas's RGBA (n, 4) at ``points`` (client css px) as drawn now, the pointer off the canvas
    (no brush outline)."""
    page.mouse.move(1, 1)
    return np.array(page.evaluate(CANVAS_AT_JS, [list(p) for p in points]), np.float64).reshape(-1, 4)


def on_screen(page, size: int = 64) -> np.ndarray:
    """The colour (size, size, 3) drawn at the centre of each mask pixel in the fitted view."""
    box = page.locator("#canvas").bounding_box()
    points = [mask_to_client(page, x + 0.5, y + 0.5, size, box) for y in range(size) for x in range(size)]
    return canvas_at(page, points)[:, :3].reshape(size, size, 3)


def painted_marks(page, unpainted: np.ndarray) -> np.ndarray:
    """What the rater sees painted on each mask pixel (0 nothing, 1 correct, 2 wrong): whichever is
    nearest the colour drawn there, the unpainted colour or a paint colour blended over it."""
    blends = [PAINT_ALPHA * np.array(c, np.float64) + (1 - PAINT_ALPHA) * unpainted for c in PAINT]
    return np.abs(np.stack([unpainted, *blends]) - on_screen(page)).sum(-1).argmin(0)


def distance_to_segment(shape: tuple[int, int], a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """Per pixel centre, the distance (in mask pixels) to the segment a-b (x, y)."""
    ys, xs = np.mgrid[: shape[0], : shape[1]] + 0.5
    (ax, ay), (bx, by) = a, b
    t = np.clip(((xs - ax) * (bx - ax) + (ys - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2), 0, 1)
    return np.hypot(xs - (ax + t * (bx - ax)), ys - (ay + t * (by - ay)))


def test_a_rater_answers_every_task_kind_and_the_learner_reads_each_answer(page, service_url, learner, db) -> None:
    register(learner, "ui-score", scorer="human")
    register(learner, "ui-pair", scorer="human", task_kind="pairwise")
    register(learner, "ui-pix", scorer="human", level="pixel")
    label = label_of()
    post(learner, "ui-score", [noisy(label, 1)])
    skipped_episode = post(learner, "ui-score", [noisy(label, 2)])
    post(learner, "ui-pair", [noisy(label, 3), label])
    post(learner, "ui-pix", [noisy(label, 4)], level="pixel")

    sign_in(page, service_url)
    page.wait_for_function("document.querySelector('#queue').textContent.includes('waiting')")

    # image-level, keyboard only: a 7, then Enter
    first = wait_task(page, "score")
    assert page.locator("#legend li").all_inner_texts() == ["background", "ellipse", "rectangle", "triangle"]
    shoot(page, "score")
    page.keyboard.press("7")
    assert page.locator("#score-value").inner_text() == "7"
    page.keyboard.press("Enter")
    (scored,) = read_results(db, "ui-score", 1)
    assert scored["reward"] == pytest.approx(0.7) and scored["rater_ids"] == ["alice"]

    # the second score task: skipped with S; it goes back to the queue for other raters
    second = wait_task(page, "score", other_than=first)
    page.keyboard.press("s")
    page.wait_for_function("document.querySelector('#skipped').textContent === '1'")
    stats = learner.get("/v1/stats").json()
    assert stats["raters"]["alice"]["skipped"] == 1 and stats["tasks_waiting"] >= 1
    assert learner.get(f"/v1/episodes/{skipped_episode}").json()["status"] == "waiting_for_rater"

    # pairwise: side by side, flip with Tab, then B with the right arrow
    wait_task(page, "pairwise", other_than=second)
    shoot(page, "pairwise")
    page.keyboard.press("Tab")
    page.keyboard.press("ArrowRight")
    assert [r["reward"] for r in read_results(db, "ui-pair", 2)] == [0.0, 1.0]

    # pixel level: paint a wrong stroke and a correct one with the mouse, undo and redo the second
    wait_task(page, "pixel")
    unpainted = on_screen(page)
    wrong, correct = ((10.5, 20.5), (40.5, 20.5)), ((20.5, 45.5), (30.5, 45.5))
    stroke(page, *wrong)
    page.keyboard.press("c")
    stroke(page, *correct)
    shoot(page, "pixel")
    marks = lambda: painted_marks(page, unpainted)  # noqa: E731
    painted = marks()
    page.keyboard.press("Control+z")
    assert (marks() == 1).sum() == 0 and (marks() == 2).sum() == (painted == 2).sum()
    page.keyboard.press("Control+Shift+Z")
    np.testing.assert_array_equal(marks(), painted)
    page.keyboard.press("Enter")
    (pixel,) = read_results(db, "ui-pix", 1)
    reward_map = codec.decode_array(codec.ArrayB64(**pixel["reward_map"]))
    # what the learner reads is exactly what the rater painted (2 wrong -> -1, 1 correct -> +1)
    np.testing.assert_array_equal(reward_map, np.select([painted == 2, painted == 1], [-1.0, 1.0], 0.0))
    # and what was painted is where the mouse went: the strokes' centre lines marked, nothing far from them
    near_wrong, near_correct = distance_to_segment((64, 64), *wrong), distance_to_segment((64, 64), *correct)
    assert (reward_map[near_wrong <= 0.5] == -1).all() and (reward_map[near_correct <= 0.5] == 1).all()
    assert (near_wrong[reward_map == -1] <= 2).all() and (near_correct[reward_map == 1] <= 2).all()
    assert (reward_map != 0).sum() == ((near_wrong <= 2) | (near_correct <= 2))[reward_map != 0].sum() > 60

    page.wait_for_function("document.querySelector('#rated').textContent === '3'")
    assert page.locator("#skipped").inner_text() == "1"
    assert float(page.locator("#rate").inner_text()) > 0


def test_help_lists_every_hotkey_from_the_handlers_table(page, service_url, db) -> None:
    sign_in(page, service_url)
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    rows = page.locator("#help .hotkeys tbody tr").count()
    expected = page.evaluate("import('/ui/src/keys.js').then((k) => k.HOTKEYS.length + k.MOUSE.length)")
    assert rows == expected
    text = page.locator("#help").inner_text()
    for key in ("0 – 9", "Enter", "A / ←", "B / →", "Tab", "Ctrl+Z", "Ctrl+Shift+Z", "Space", "[", "]"):
        assert key in text
    page.keyboard.press("Escape")
    assert not page.locator("#help").is_visible()
    table = page.evaluate("import('/ui/src/keys.js').then((k) => k.helpMarkdown())")
    assert table in (REPO / "docs" / "annotator.md").read_text(), \
        "docs/annotator.md's hotkey table differs from annotator_ui/src/keys.js"


def test_a_bad_token_is_refused_with_a_message(page, service_url, db) -> None:
    page.goto(f"{service_url}/ui/")
    page.fill("#token", "not-a-token")
    page.press("#token", "Enter")
    page.locator(".message.error", has_text="does not know that token").wait_for()
    page.fill("#token", "learner-secret")
    page.press("#token", "Enter")
    page.locator(".message.error", has_text="not a rater token").wait_for()
    assert page.evaluate("document.body.dataset.state") == "signed-out"


def test_a_network_error_is_shown_and_the_answer_can_be_sent_again(page, service_url, learner, db) -> None:
    register(learner, "ui-net", scorer="human")
    post(learner, "ui-net", [label_of()])
    sign_in(page, service_url)
    task_id = wait_task(page, "score")
    page.route("**/v1/tasks/*/rating", lambda route: route.abort("internetdisconnected"))
    page.keyboard.press("8")
    page.keyboard.press("Enter")
    error = page.locator(".message.error", has_text="Network error")
    error.wait_for()
    assert "not sent" in error.inner_text()
    assert page.evaluate("document.body.dataset.taskId") == task_id  # still on the same task
    assert learner.get("/v1/stats").json()["raters"]["alice"]["rated"] == 0
    page.unroute("**/v1/tasks/*/rating")
    page.keyboard.press("Enter")
    assert [r["reward"] for r in read_results(db, "ui-net", 1)] == [pytest.approx(0.8)]
    error.wait_for(state="detached")


def test_an_expired_lease_shows_a_message_and_the_next_task(page, redis_server, db) -> None:
    with ui_service(redis_server, lease_s=4) as proc, client(proc.url) as learner:
        register(learner, "ui-exp", scorer="human")
        post(learner, "ui-exp", [label_of()])
        post(learner, "ui-exp", [noisy(label_of(), 5)])
        sign_in(page, proc.url)
        first = wait_task(page, "score")
        page.locator(".message.info", has_text="expired").wait_for(timeout=15_000)
        message = page.locator(".message.info").inner_text()
        assert f"lease on task {first} expired" in message and "went back to the queue" in message
        # the next task is shown with a fresh lease (the expired ones went back to the queue): the bar
        # shows at least 2 s left
        page.wait_for_function(
            "document.body.dataset.state === 'task' && parseInt(document.querySelector('#lease').textContent) > 1",
            timeout=30_000)
        page.keyboard.press("5")
        page.keyboard.press("Enter")
        (result,) = read_results(db, "ui-exp", 1)
        assert result["reward"] == pytest.approx(0.5)


def test_a_lattice_mask_is_painted_in_mask_coordinates_after_a_zoom(page, service_url, learner, db) -> None:
    """A PSR lattice mask (16 x 16, one pixel every 4 from offset (1, 2)) is drawn as 4-pixel cells,
    and the brush marks the lattice pixel under the pointer, also after zooming in at the pointer."""
    register(learner, "ui-grid", scorer="human", level="pixel")
    lattice = label_of()[1::4, 2::4][:16, :16]
    post(learner, "ui-grid", [lattice], level="pixel", scale=16, grid_mode="grid", offset=[1, 2])
    sign_in(page, service_url)
    wait_task(page, "pixel")
    page.keyboard.press("[")  # radius 0: one lattice pixel per stamp
    # lattice pixel (mx, my) covers image pixels [2 + 4 mx, 2 + 4 mx + 4) x [1 + 4 my, ...)
    at = mask_to_client(page, 2 + 4 * 5.5, 1 + 4 * 9.5)
    box = page.locator("#canvas").bounding_box()
    corners = [(box["x"] + dx, box["y"] + dy) for dx in (2, box["width"] - 2) for dy in (2, box["height"] - 2)]
    assert (canvas_at(page, corners)[:, 3] == 0).all()  # fitted: the image leaves the canvas's sides clear
    page.mouse.move(*at)
    page.mouse.wheel(0, -600)  # zoom in around the pointer: the point under it stays put
    # zoomed in (over 1.3 times the fitted scale at this pointer): the image covers the whole canvas
    for _ in range(50):
        if (canvas_at(page, corners)[:, 3] == 255).all():
            break
    else:
        pytest.fail("the wheel did not zoom in: the canvas's corners are still clear")
    page.mouse.move(*at)
    page.mouse.down()
    page.mouse.up()
    page.keyboard.press("Enter")
    (result,) = read_results(db, "ui-grid", 1)
    reward_map = codec.decode_array(codec.ArrayB64(**result["reward_map"]))
    expected = np.zeros((16, 16), np.float32)
    expected[9, 5] = -1
    np.testing.assert_array_equal(reward_map, expected)


def test_no_app_global_and_the_answers_timed_in_performance_entries(page, service_url, learner, db) -> None:
    """Production has no debug object: the app adds nothing to `window`. What `rss bench ui` reads
    are the User Timing entries the app records (annotator_ui/src/main.js)."""
    page.add_init_script("window.__testGlobals = Object.getOwnPropertyNames(window);")
    register(learner, "ui-perf", scorer="human")
    post(learner, "ui-perf", [label_of()])
    post(learner, "ui-perf", [noisy(label_of(), 6)])
    sign_in(page, service_url)
    first = wait_task(page, "score")
    page.keyboard.press("4")
    page.keyboard.press("Enter")
    second = wait_task(page, "score", other_than=first)
    page.wait_for_function("performance.getEntriesByName('rss:submit-to-next').length === 1")

    assert page.evaluate("typeof window.rss") == "undefined"
    added = page.evaluate("Object.getOwnPropertyNames(window).filter((n) => !window.__testGlobals.includes(n))")
    assert added == ["__testGlobals"], f"the app added globals: {added}"

    entries = page.evaluate("""performance.getEntries().filter((e) => e.name.startsWith('rss:')).map((e) =>
        ({ name: e.name, type: e.entryType, start: e.startTime, duration: e.duration, detail: e.detail }))""")
    by_name: dict[str, list[dict]] = {}
    for e in entries:
        by_name.setdefault(e["name"], []).append(e)
    (answer,) = by_name["rss:answer"]
    assert answer["type"] == "mark" and answer["detail"] == {"taskId": first}
    assert [e["detail"]["taskId"] for e in by_name["rss:task-shown"]][:2] == [first, second]
    (timed,) = by_name["rss:submit-to-next"]
    assert timed["type"] == "measure" and timed["start"] == answer["start"] and timed["duration"] > 0
    assert timed["detail"]["taskId"] == second and isinstance(timed["detail"]["prefetched"], bool)
    for name in ("rss:lease", "rss:prepare"):  # each task leased and prepared (the one after them maybe too)
        assert [e["detail"]["taskId"] for e in by_name[name]][:2] == [first, second], name
        assert all(e["type"] == "measure" and e["duration"] >= 0 for e in by_name[name])

    # what the bench reads, the same entries
    measures = page.evaluate(MEASURES_JS)
    assert [m["detail"]["taskId"] for m in measures["rss:submit-to-next"]] == [second]
    assert len(measures["rss:lease"]) == len(measures["rss:prepare"]) >= 2
    (result,) = read_results(db, "ui-perf", 1)
    assert result["reward"] == pytest.approx(0.4)

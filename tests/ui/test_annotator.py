"""The annotator UI in a real browser against a real `rss serve` and Redis: every task kind is
answered the way a rater would, and each answer is checked where the learner reads it.

The page has no global app object: the tests see what a rater or `rss bench ui` sees (the DOM,
the canvas's pixels, performance entries, the answers where the learner reads them)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from rss.bench.ui import MEASURES_JS
from rss_core import codec
from tests.helpers import REPO
from tests.helpers.client import client, read_results, register, wait_status
from tests.helpers.factories import episode, label_of, noisy
from tests.helpers.ui import canvas_at, shoot, sign_in, ui_service, wait_task

PAINT = ((40, 220, 90), (255, 40, 40))  # annotator_ui/src/tasks/pixel.js: correct (1), wrong (2)
PAINT_ALPHA = 0.75  # the paint layer's opacity over the image and mask (annotator_ui/src/canvas.js)
NAMES = ["background", "ellipse", "rectangle", "triangle"]  # shapes' classes, as tasks name them
RING_MARGIN = 8  # css px a point task keeps clear around the fitted image (annotator_ui/src/canvas.js FOCUS_MARGIN)

# In the page, once the next two frames are drawn: every canvas pixel in the focus ring's cyan
# (annotator_ui/src/canvas.js FOCUS_COLOUR, (0, 229, 255), or it blended with the ring's black
# edge), as client css px of the pixel's centre. The image is drawn dim and pale by default and the
# overlay palette (annotator_ui/src/overlay.js) has no cyan, so neither comes near it (a stray match
# would break the ring's bounds in assert_ringed).
CYAN_JS = """
async () => {
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  const canvas = document.querySelector('#canvas');
  const box = canvas.getBoundingClientRect();
  const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  const sx = box.width / canvas.width, sy = box.height / canvas.height;
  const found = [];
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] < 60 && data[i + 2] > 170 && data[i + 1] > 0.8 * data[i + 2] && data[i + 3] === 255) {
      const p = i / 4;
      found.push([box.left + (p % canvas.width + 0.5) * sx, box.top + (Math.floor(p / canvas.width) + 0.5) * sy]);
    }
  }
  return found;
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


def mask_to_client(page, mx: float, my: float, size: int = 64, box: dict | None = None,
                   margin: float = 0) -> tuple[float, float]:
    """Where mask pixel coordinate (mx, my) is on screen: the view starts fitted (``margin`` css px
    clear around it) and centred, and the mask covers the (size x size) image. Computed from the
    canvas box, not from the UI's own code."""
    box = box or page.locator("#canvas").bounding_box()
    scale = (min(box["width"], box["height"]) - 2 * margin) / size
    left = box["x"] + (box["width"] - size * scale) / 2
    top = box["y"] + (box["height"] - size * scale) / 2
    return left + mx * scale, top + my * scale


def stroke(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*mask_to_client(page, *start))
    page.mouse.down()
    page.mouse.move(*mask_to_client(page, *end), steps=12)
    page.mouse.up()


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


def reward_map_of(result: dict) -> np.ndarray:
    return codec.decode_array(codec.ArrayB64(**result["reward_map"]))


def cyan_pixels(page) -> np.ndarray:
    """The client css px (n, 2: x, y) where the canvas shows the point ring's colour, the pointer off it."""
    page.mouse.move(1, 1)
    return np.array(page.evaluate(CYAN_JS), np.float64).reshape(-1, 2)


def question(page) -> tuple[str, str]:
    """The point task's progress line and question, as shown."""
    return page.locator("#point-progress").inner_text(), page.locator("#point-question").inner_text()


def assert_ringed(page, x0: float, y0: float, side: float) -> None:
    """The point ring is drawn around image pixels [x0, x0 + side) x [y0, y0 + side) of the fitted
    view (where those are on screen comes from the canvas box, not the UI's code): centred on them,
    closed, close to them, and covering none of them."""
    box = page.locator("#canvas").bounding_box()
    (left, top), (right, bottom) = (mask_to_client(page, x, y, box=box, margin=RING_MARGIN)
                                    for x, y in ((x0, y0), (x0 + side, y0 + side)))
    cx, cy, size = (left + right) / 2, (top + bottom) / 2, right - left
    ring = cyan_pixels(page)
    assert len(ring) > 4 * size, f"no ring drawn around image pixels ({x0}, {y0}) + {side}"
    xs, ys = ring[:, 0], ring[:, 1]
    assert abs((xs.min() + xs.max()) / 2 - cx) <= 1 and abs((ys.min() + ys.max()) / 2 - cy) <= 1
    assert size + 2 < xs.max() - xs.min() <= size + 20 and size + 2 < ys.max() - ys.min() <= size + 20
    inside = (xs > left - 1) & (xs < right + 1) & (ys > top - 1) & (ys < bottom + 1)
    assert not inside.any(), "the ring covers the pixels asked about"
    row, col = np.abs(ys - cy) < 1, np.abs(xs - cx) < 1  # closed: on each side, level with the centre
    assert (xs[row] < left).any() and (xs[row] > right).any()
    assert (ys[col] < top).any() and (ys[col] > bottom).any()


def test_a_rater_answers_every_task_kind_and_the_learner_reads_each_answer(page, service_url, learner, db) -> None:
    register(learner, "ui-score", scorer="human")
    register(learner, "ui-pair", scorer="human", task_kind="pairwise")
    register(learner, "ui-pix", scorer="human", level="pixel")
    register(learner, "ui-best", scorer="human", task_kind="best")
    register(learner, "ui-point", scorer="human", level="pixel", task_kind="point")
    label = label_of()
    post(learner, "ui-score", [noisy(label, 1)])
    skipped_episode = post(learner, "ui-score", [noisy(label, 2)])
    post(learner, "ui-pair", [noisy(label, 3), label])
    post(learner, "ui-pix", [noisy(label, 4)], level="pixel")
    post(learner, "ui-best", [noisy(label, 5, 0.4), label, noisy(label, 6, 0.1), noisy(label, 7, 0.2)])
    asked = noisy(label, 8, 0.05)
    cells = [(13, 17), (7, 39), (40, 10)]  # (y, x): in the ellipse, the triangle, the background
    post(learner, "ui-point", [asked], level="pixel", points=cells)

    sign_in(page, service_url)
    page.wait_for_function("document.querySelector('#queue').textContent.includes('for you')")

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

    # best of 4: the masks in panes 1..4, the second chosen with its number key
    best_task = wait_task(page, "best")
    assert page.locator("#panel h2").inner_text() == "Which mask is best?"
    shoot(page, "best")
    page.keyboard.press("2")
    assert [r["reward"] for r in read_results(db, "ui-best", 4)] == [0.0, 1.0, 0.0, 0.0]

    # points: yes, no, can't tell, one question at a time
    point_task = wait_task(page, "point", other_than=best_task)
    assert question(page) == ("point 1 of 3", f"Is this {NAMES[asked[cells[0]]]}?")
    page.keyboard.press("y")
    assert question(page) == ("point 2 of 3", f"Is this {NAMES[asked[cells[1]]]}?")
    shoot(page, "point")
    page.keyboard.press("n")
    page.keyboard.press("u")
    (point,) = read_results(db, "ui-point", 1)
    expected = np.full((64, 64), np.nan, np.float32)
    expected[cells[0]], expected[cells[1]] = 1, -1
    np.testing.assert_array_equal(reward_map_of(point), expected)

    page.wait_for_function("document.querySelector('#rated').textContent === '5'")
    assert page.locator("#skipped").inner_text() == "1"
    assert float(page.locator("#rate").inner_text()) > 0
    # every answer timed the same way, the new kinds' too
    entries = "(name) => performance.getEntriesByName(name).map((e) => [e.detail.taskId, e.startTime])"
    answers = page.evaluate(entries, "rss:answer")
    assert [task for task, _ in answers][-2:] == [best_task, point_task] and len(answers) == 5
    timed = page.evaluate(entries, "rss:submit-to-next")
    assert timed[-1] == [point_task, answers[-2][1]]  # from the best-of-N answer to the point task drawn


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
            "document.body.dataset.state === 'task' && parseInt(document.querySelector('#lease').textContent) > 1 "
            "&& document.body.dataset.accepting === document.body.dataset.taskId",
            timeout=30_000)
        page.keyboard.press("5")
        page.keyboard.press("Enter")
        (result,) = read_results(db, "ui-exp", 1)
        assert result["reward"] == pytest.approx(0.5)


def test_a_lattice_mask_is_painted_in_mask_coordinates_after_a_zoom(page, service_url, learner, db) -> None:
    """A PSR lattice mask (16 x 16, one pixel every 4 from offset (1, 2)) is drawn as 4-pixel cells around
    its lattice pixels, and the brush marks the lattice pixel under the pointer, also after zooming in at the
    pointer."""
    register(learner, "ui-grid", scorer="human", level="pixel")
    lattice = label_of()[1::4, 2::4][:16, :16]
    post(learner, "ui-grid", [lattice], level="pixel", scale=16, grid_mode="grid", offset=[1, 2])
    sign_in(page, service_url)
    wait_task(page, "pixel")
    page.keyboard.press("[")  # radius 0: one lattice pixel per stamp
    # lattice pixel (mx, my) is image pixel (2 + 4 mx, 1 + 4 my): the pointer on it
    at = mask_to_client(page, 2 + 4 * 5 + 0.5, 1 + 4 * 9 + 0.5)
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


def test_a_best_of_n_task_shows_each_mask_and_a_number_key_chooses_one(page, service_url, learner, db) -> None:
    """Best of 4: a number past N does nothing, Tab shows the masks one at a time (each its own), and
    a number chooses that mask and submits; the learner reads 1 for it and 0 for the others."""
    register(learner, "ui-best4", scorer="human", task_kind="best")
    label = label_of()
    masks = [noisy(label, 11), noisy(label, 12), label, noisy(label, 13)]
    post(learner, "ui-best4", masks)
    sign_in(page, service_url)
    task_id = wait_task(page, "best")
    buttons = page.locator("#panel button.choice")
    assert [t.split(" is best")[0] for t in buttons.all_inner_texts()] == list("1234")
    page.keyboard.press("5")  # there is no mask 5: nothing is sent
    page.keyboard.press("Tab")  # one at a time: mask 1, filling the canvas
    first = on_screen(page)
    page.keyboard.press("Tab")  # mask 2 in its place
    second = on_screen(page)
    same = masks[0] == masks[1]
    assert same.any() and (~same).any()
    np.testing.assert_array_equal(first[same], second[same])  # the image, and the masks where they agree
    assert (first != second).any(-1)[~same].all()  # where they differ, so does what is drawn
    assert page.evaluate("document.body.dataset.taskId") == task_id
    assert page.locator("#rated").inner_text() == "0"
    page.keyboard.press("3")
    results = read_results(db, "ui-best4", 4)
    assert [r["sample_index"] for r in results] == [0, 1, 2, 3]
    assert [r["reward"] for r in results] == [0.0, 0.0, 1.0, 0.0]
    page.wait_for_function("document.querySelector('#rated').textContent === '1'")


def test_a_point_task_answered_with_y_n_u_and_backspace_gives_rewards_at_exactly_those_cells(
        page, service_url, learner, db) -> None:
    """Four questions: yes (the key held down), no, then Backspace back to the second and yes, can't
    tell, no. The learner reads +1 / -1 at the cells answered yes / no and NaN everywhere else (can't
    tell included)."""
    register(learner, "ui-pts", scorer="human", level="pixel", task_kind="point")
    label = label_of()
    mask = noisy(label, 21, 0.1)
    cells = [(13, 17), (7, 39), (40, 10), (33, 60)]
    post(learner, "ui-pts", [mask], level="pixel", points=cells)
    sign_in(page, service_url)
    wait_task(page, "point")
    asks = [f"Is this {NAMES[mask[c]]}?" for c in cells]
    assert question(page) == ("point 1 of 4", asks[0])
    page.keyboard.down("y")
    page.keyboard.down("y")  # held down: the browser repeats it, and that answers no further point
    page.keyboard.up("y")
    assert question(page) == ("point 2 of 4", asks[1])
    page.keyboard.press("n")
    assert question(page) == ("point 3 of 4", asks[2])
    assert page.locator("#point-answers li").all_inner_texts() == [f"{NAMES[mask[cells[0]]]}: yes",
                                                                   f"{NAMES[mask[cells[1]]]}: no"]
    page.keyboard.press("Backspace")  # changed my mind about the second
    assert question(page) == ("point 2 of 4", asks[1])
    assert page.locator("#point-answers li").count() == 1
    page.keyboard.press("Y")
    page.keyboard.press("u")
    assert question(page) == ("point 4 of 4", asks[3])
    assert page.locator("#rated").inner_text() == "0"  # nothing sent before the last answer
    page.keyboard.press("n")
    (result,) = read_results(db, "ui-pts", 1)
    expected = np.full((64, 64), np.nan, np.float32)
    expected[cells[0]] = expected[cells[1]] = 1
    expected[cells[3]] = -1
    reward_map = reward_map_of(result)
    assert reward_map.dtype == np.float32
    np.testing.assert_array_equal(reward_map, expected)
    page.wait_for_function("document.querySelector('#rated').textContent === '1'")


def test_a_point_on_a_lattice_or_resized_mask_is_ringed_at_the_image_pixels_its_cell_covers(
        page, service_url, learner, db) -> None:
    """A PSR lattice mask (16 x 16, one pixel every 4 from offset (1, 2)), and a full mask of a run
    that resizes labels to 32 x 32: each asked cell is ringed, in the canvas's pixels, around the
    image pixels it stands for (the one lattice pixel the learner acted on, every 4 from the offset;
    2 x 2), and the ring covers none of them."""
    register(learner, "ui-pgrid", scorer="human", level="pixel", task_kind="point")
    register(learner, "ui-p32", scorer="human", level="pixel", task_kind="point", image_size=32)
    lattice = label_of()[1::4, 2::4][:16, :16]
    cells = [(9, 5), (3, 12), (14, 0)]
    post(learner, "ui-pgrid", [lattice], level="pixel", scale=16, grid_mode="grid", offset=[1, 2], points=cells)
    resized = [(20, 7), (31, 31)]
    post(learner, "ui-p32", [label_of(size=32)], level="pixel", points=resized)
    sign_in(page, service_url)
    shown = None
    # per task: the image pixel of mask cell (0, 0)'s corner (y, x), the image pixels from one cell to the
    # next, the side of the image pixels a cell stands for, the cells
    for origin, step, side, asked in (((1, 2), 4, 1, cells), ((0, 0), 2, 2, resized)):
        shown = wait_task(page, "point", other_than=shown)
        for n, (my, mx) in enumerate(asked):
            assert question(page)[0] == f"point {n + 1} of {len(asked)}"
            assert_ringed(page, origin[1] + step * mx, origin[0] + step * my, side)
            page.keyboard.press("y")
    for run_id, shape, asked in (("ui-pgrid", (16, 16), cells), ("ui-p32", (32, 32), resized)):
        (result,) = read_results(db, run_id, 1)
        expected = np.full(shape, np.nan, np.float32)
        for c in asked:
            expected[c] = 1
        np.testing.assert_array_equal(reward_map_of(result), expected)
